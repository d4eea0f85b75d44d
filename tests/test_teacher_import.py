"""Importing OpenPCDet SECOND checkpoints (stereodistill.teacher.import_openpcdet).

The synthetic checkpoints come from a small re-implementation of OpenPCDet's SECOND modules (same module names,
layers and paddings as VoxelBackBone8x / BaseBEVBackbone / AnchorHeadSingle), with random weights and BN
statistics, saved the way OpenPCDet saves them (legacy torch format, numpy scalars in the optimizer state). The
import is checked functionally: the imported teacher's outputs equal the reference network's outputs.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F
import yaml
from spconv.pytorch.conv import SparseConvolution
from torch import Tensor, nn

from stereodistill.errors import InputError
from stereodistill.head.anchors import CELL_CENTRE, RANGE_CORNERS, AnchorGrid
from stereodistill.settings import load_settings, to_dict
from stereodistill.teacher.checkpoint import load_teacher
from stereodistill.teacher.conv_algorithm import use_device_conv_algorithm
from stereodistill.teacher.import_openpcdet import (
    NATIVE,
    SPCONV1,
    SPCONV2,
    SparseLayout,
    import_openpcdet_second,
    openpcdet_key,
    second_yaml_config,
    second_yaml_grid,
    write_imported_teacher,
)
from stereodistill.teacher.model import SecondTeacher
from stereodistill.teacher.settings import TeacherConfig
from stereodistill.teacher.voxelize import Voxelizer

# ------------------------------------------------------------------------------------ OpenPCDet reference modules


def _bn1d(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


def _post_act_block(
    cin: int, cout: int, key: str, stride: int = 1, padding: int | tuple[int, int, int] = 0, subm: bool = True
) -> spconv.SparseSequential:
    if subm:  # OpenPCDet passes no padding to its SubM convs
        conv = spconv.SubMConv3d(cin, cout, 3, bias=False, indice_key=key)
    else:
        conv = spconv.SparseConv3d(cin, cout, 3, stride=stride, padding=padding, bias=False, indice_key=key)
    return spconv.SparseSequential(conv, _bn1d(cout), nn.ReLU())


class RefVoxelBackBone8x(nn.Module):
    def __init__(self, input_channels: int, grid_zyx: tuple[int, int, int]) -> None:
        super().__init__()
        self.sparse_shape = [grid_zyx[0] + 1, grid_zyx[1], grid_zyx[2]]
        self.conv_input = spconv.SparseSequential(
            spconv.SubMConv3d(input_channels, 16, 3, padding=1, bias=False, indice_key="subm1"),
            _bn1d(16),
            nn.ReLU(),
        )
        self.conv1 = spconv.SparseSequential(_post_act_block(16, 16, "subm1"))
        self.conv2 = spconv.SparseSequential(
            _post_act_block(16, 32, "spconv2", 2, 1, subm=False),
            _post_act_block(32, 32, "subm2"),
            _post_act_block(32, 32, "subm2"),
        )
        self.conv3 = spconv.SparseSequential(
            _post_act_block(32, 64, "spconv3", 2, 1, subm=False),
            _post_act_block(64, 64, "subm3"),
            _post_act_block(64, 64, "subm3"),
        )
        self.conv4 = spconv.SparseSequential(
            _post_act_block(64, 64, "spconv4", 2, (0, 1, 1), subm=False),
            _post_act_block(64, 64, "subm4"),
            _post_act_block(64, 64, "subm4"),
        )
        self.conv_out = spconv.SparseSequential(
            spconv.SparseConv3d(
                64, 128, (3, 1, 1), stride=(2, 1, 1), padding=0, bias=False, indice_key="down2"
            ),
            _bn1d(128),
            nn.ReLU(),
        )

    def forward(self, features: Tensor, coords: Tensor, batch_size: int) -> Tensor:
        x = spconv.SparseConvTensor(features, coords.int(), self.sparse_shape, batch_size)
        x = self.conv_out(self.conv4(self.conv3(self.conv2(self.conv1(self.conv_input(x))))))
        dense = x.dense()  # HeightCompression
        n, c, d, h, w = dense.shape
        return dense.view(n, c * d, h, w)


class RefBaseBEVBackbone(nn.Module):
    def __init__(self, input_channels: int = 256) -> None:
        super().__init__()
        self.blocks, self.deblocks = nn.ModuleList(), nn.ModuleList()
        for cin, cout, stride, up in ((input_channels, 128, 1, 1), (128, 256, 2, 2)):
            layers: list[nn.Module] = [
                nn.ZeroPad2d(1),
                nn.Conv2d(cin, cout, 3, stride=stride, padding=0, bias=False),
                nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
                nn.ReLU(),
            ]
            for _ in range(5):
                layers += [
                    nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                    nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
                    nn.ReLU(),
                ]
            self.blocks.append(nn.Sequential(*layers))
            self.deblocks.append(
                nn.Sequential(
                    nn.ConvTranspose2d(cout, 256, up, stride=up, bias=False),
                    nn.BatchNorm2d(256, eps=1e-3, momentum=0.01),
                    nn.ReLU(),
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        ups = []
        for block, deblock in zip(self.blocks, self.deblocks, strict=True):
            x = block(x)
            ups.append(deblock(x))
        return torch.cat(ups, dim=1)


class RefAnchorHeadSingle(nn.Module):
    def __init__(self, anchors_per_cell: int = 6, num_classes: int = 3) -> None:
        super().__init__()
        self.conv_cls = nn.Conv2d(512, anchors_per_cell * num_classes, 1)
        self.conv_box = nn.Conv2d(512, anchors_per_cell * 7, 1)
        self.conv_dir_cls = nn.Conv2d(512, anchors_per_cell * 2, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.conv_cls(x), self.conv_box(x), self.conv_dir_cls(x)


class RefSECONDNet(nn.Module):
    """OpenPCDet's SECONDNet module tree for second.yaml (MeanVFE and HeightCompression have no parameters)."""

    def __init__(self, grid_zyx: tuple[int, int, int] = (40, 1600, 1408)) -> None:
        super().__init__()
        self.register_buffer("global_step", torch.LongTensor(1).zero_())
        self.backbone_3d = RefVoxelBackBone8x(4, grid_zyx)
        self.backbone_2d = RefBaseBEVBackbone()
        self.dense_head = RefAnchorHeadSingle()

    def forward(self, features: Tensor, coords: Tensor, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.dense_head(self.backbone_2d(self.backbone_3d(features, coords, batch_size)))


def _randomise(model: nn.Module, seed: int = 0) -> None:
    """Variance-keeping random weights and BN statistics away from identity, so every tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SparseConvolution):
                cin = module.in_channels
                fan = cin * math.prod(module.kernel_size)
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * math.sqrt(6.0 / fan))
            elif isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                fan = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * math.sqrt(2.0 / fan))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
            elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=g))
                module.bias.copy_(torch.randn(c, generator=g) * 0.1)
                module.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                module.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
                module.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=g)))


def _as_layout(state: dict[str, Tensor], layout: SparseLayout) -> dict[str, Tensor]:
    """A spconv 2.x ``state`` with every 5-d sparse weight re-laid as ``layout``."""
    return {k: layout.from_ours(v) if v.dim() == 5 else v.clone() for k, v in state.items()}


def _save_openpcdet(state: dict[str, Tensor], path: Path, version: str = "pcdet+0.6.0+8cacccec") -> Path:
    """As OpenPCDet's checkpoint_state + save_checkpoint: legacy format, numpy scalars in the optimizer state."""
    optimizer_state = {
        "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3)}},
        "param_groups": [
            {"lr": np.float64(0.0003), "betas": (np.float64(0.95), 0.99), "weight_decay": 0.01, "params": [0]}
        ],
    }
    ckpt = {
        "epoch": 80,
        "it": 74240,
        "model_state": state,
        "optimizer_state": optimizer_state,
        "version": version,
    }
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    return path


@pytest.fixture(scope="module")
def reference() -> RefSECONDNet:
    """The second.yaml network at OpenPCDet's grid (shapes of a real checkpoint), random weights, eval mode."""
    torch.manual_seed(0)
    model = RefSECONDNet()
    _randomise(model)
    use_device_conv_algorithm(model, "cpu")
    return model.eval()


@pytest.fixture(scope="module")
def reference_state(reference: RefSECONDNet) -> dict[str, Tensor]:
    """Its state dict in spconv 2.x layout (what OpenPCDet + spconv 2 writes)."""
    return {k: v.clone() for k, v in reference.state_dict().items()}


@pytest.fixture(scope="module")
def spconv1_checkpoint(reference_state: dict[str, Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OpenPCDet checkpoint as the 2020 SECOND release: spconv 1.x weights [k1, k2, k3, Cin, Cout]."""
    return _save_openpcdet(
        _as_layout(reference_state, SPCONV1), tmp_path_factory.mktemp("ckpt") / "second.pth"
    )


def small_grid(placement: str = RANGE_CORNERS) -> AnchorGrid:
    """second.yaml's anchors on a 6.4 m x 6.4 m range: 16 x 16 cells, voxel grid 41 x 128 x 128."""
    d = second_yaml_grid().to_dict()
    d["point_cloud_range"] = [0.0, -3.2, -3.0, 6.4, 3.2, 1.0]
    d["anchor_placement"] = placement
    return AnchorGrid.from_dict(d)


def _points(n: int, grid: AnchorGrid, seed: int = 0) -> Tensor:
    """Points in blobs (so sparse convs see neighbours) inside ``grid``'s range: (n, 4) x, y, z, intensity."""
    g = torch.Generator().manual_seed(seed)
    x0, y0, z0, x1, y1, z1 = grid.point_cloud_range
    centres = torch.stack(
        [
            x0 + 0.5 + torch.rand(6, generator=g) * (x1 - x0 - 1.0),
            y0 + 0.5 + torch.rand(6, generator=g) * (y1 - y0 - 1.0),
            z0 + 0.8 + torch.rand(6, generator=g) * (z1 - z0 - 1.6),
        ],
        dim=1,
    )
    which = torch.randint(0, 6, (n,), generator=g)
    xyz = centres[which] + torch.randn(n, 3, generator=g) * torch.tensor([0.6, 0.6, 0.4])
    lo, hi = torch.tensor([x0, y0, z0]), torch.tensor([x1, y1, z1]) - 1e-3
    xyz = torch.maximum(torch.minimum(xyz, hi), lo)
    return torch.cat([xyz, torch.rand(n, 1, generator=g)], dim=1)


def _reference_outputs(reference: RefSECONDNet, grid: AnchorGrid, points: list[Tensor]) -> tuple[Tensor, ...]:
    """Run the reference modules on ``grid`` (they are size-agnostic; only the sparse shape is set)."""
    config = second_yaml_config()
    voxelizer = Voxelizer(config.voxel_size, grid.point_cloud_range, 4, 5, 40000)
    reference.backbone_3d.sparse_shape = [voxelizer.spatial_shape[0] + 1, *voxelizer.spatial_shape[1:]]
    voxels = voxelizer(points)
    with torch.no_grad():
        return reference(voxels.features, voxels.coords, voxels.batch_size)


# ------------------------------------------------------------------------------------ functional equivalence


def test_imported_teacher_computes_what_openpcdet_computes(
    reference: RefSECONDNet, spconv1_checkpoint: Path
) -> None:
    grid = small_grid()
    imported = import_openpcdet_second(spconv1_checkpoint, grid, second_yaml_config())
    assert imported.sparse_layout == SPCONV1
    assert imported.ignored_keys == ("global_step",)
    points = [_points(4000, grid, seed=1), _points(2500, grid, seed=2)]
    ref_cls, ref_box, ref_dir = _reference_outputs(reference, grid, points)
    with torch.no_grad():
        out = imported.model(points)
    assert (
        out.cls.shape == (2, 18, 16, 16)
        and out.box.shape == (2, 42, 16, 16)
        and out.dir.shape == (2, 12, 16, 16)
    )
    # The outputs depend on the points (not just on the biases), so a misplaced weight would show.
    assert float(ref_cls.std(dim=(2, 3)).min()) > 0.05
    assert not torch.allclose(ref_cls[0], ref_cls[1], atol=0.05)
    for ours, theirs in zip(out, (ref_cls, ref_box, ref_dir), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


@pytest.mark.parametrize("layout", [SPCONV2, NATIVE], ids=lambda lay: lay.name)
def test_every_layout_imports_to_the_same_weights(
    layout: SparseLayout, reference_state: dict[str, Tensor], spconv1_checkpoint: Path, tmp_path: Path
) -> None:
    path = _save_openpcdet(_as_layout(reference_state, layout), tmp_path / "second.pth")
    imported = import_openpcdet_second(path)
    assert imported.sparse_layout == layout
    expected = import_openpcdet_second(spconv1_checkpoint).model.state_dict()
    for key, value in imported.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_every_tensor_lands_on_its_counterpart(
    reference_state: dict[str, Tensor], spconv1_checkpoint: Path
) -> None:
    imported = import_openpcdet_second(spconv1_checkpoint)
    ours = imported.model.state_dict()
    assert len(ours) == len(reference_state) - 1  # all but global_step
    for key, value in ours.items():
        expected = reference_state[openpcdet_key(key)]
        if key == "bev.up0.0.weight":
            expected = expected.transpose(
                0, 1
            )  # ConvTranspose2d [Cin, Cout, 1, 1] -> Conv2d [Cout, Cin, 1, 1]
        assert torch.equal(value, expected), key
    # Hand-checked names and shapes of a few OpenPCDet second.yaml tensors.
    assert openpcdet_key("sparse.stages.2.0.0.weight") == "backbone_3d.conv4.0.0.weight"
    assert openpcdet_key("bev.block1.15.weight") == "backbone_2d.blocks.1.16.weight"
    assert openpcdet_key("head.conv_dir.bias") == "dense_head.conv_dir_cls.bias"
    assert tuple(ours["sparse.conv_input.0.weight"].shape) == (16, 3, 3, 3, 4)
    assert tuple(ours["sparse.conv_out.0.weight"].shape) == (128, 3, 1, 1, 64)
    assert tuple(ours["bev.block0.0.weight"].shape) == (128, 256, 3, 3)
    assert tuple(ours["bev.up1.0.weight"].shape) == (256, 256, 2, 2)
    assert tuple(ours["head.conv_cls.weight"].shape) == (18, 512, 1, 1)


def test_sparse_convs_equal_dense_conv3d_with_the_openpcdet_weight(
    reference_state: dict[str, Tensor], spconv1_checkpoint: Path
) -> None:
    """With every voxel active, our sparse conv = conv3d (cross-correlation, kernel axes z, y, x) with the
    spconv 1.x weight [kz, ky, kx, Cin, Cout] read as [Cout, Cin, kz, ky, kx]."""
    model = import_openpcdet_second(spconv1_checkpoint).model
    cases = [  # our module, OpenPCDet key, input (D, H, W), stride, padding
        (model.sparse.conv_input[0], "backbone_3d.conv_input.0.weight", (3, 4, 5), 1, 1),
        (model.sparse.stages[2][0][0], "backbone_3d.conv4.0.0.weight", (5, 6, 6), 2, (0, 1, 1)),
        (model.sparse.conv_out[0], "backbone_3d.conv_out.0.weight", (5, 2, 3), (2, 1, 1), 0),
    ]
    g = torch.Generator().manual_seed(3)
    for conv, key, (d, h, w), stride, padding in cases:
        w1 = SPCONV1.from_ours(reference_state[key])  # as stored by spconv 1.x
        cin = w1.shape[3]
        dense = torch.randn(1, cin, d, h, w, generator=g)
        zyx = torch.stack(
            torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij"), -1
        )
        coords = torch.cat([torch.zeros(d * h * w, 1, dtype=torch.int64), zyx.reshape(-1, 3)], 1).int()
        features = dense[0].permute(1, 2, 3, 0).reshape(-1, cin)
        with torch.no_grad():
            out = conv(spconv.SparseConvTensor(features, coords, [d, h, w], 1)).dense()
            expected = F.conv3d(dense, w1.permute(4, 3, 0, 1, 2), stride=stride, padding=padding)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_full_openpcdet_grid_forward_and_round_trip_through_load_teacher(
    spconv1_checkpoint: Path, tmp_path: Path
) -> None:
    imported = import_openpcdet_second(spconv1_checkpoint)
    out_path = write_imported_teacher(imported, tmp_path / "teacher.pt")
    model = load_teacher(out_path, grid=second_yaml_grid())
    assert model.grid.anchor_placement == RANGE_CORNERS
    assert model.sparse.spatial_shape == (41, 1600, 1408)
    assert model.sparse.out_depth == 2 and model.sparse.bev_channels == 256
    assert model.bev.out_channels == 512
    for key, value in imported.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    stored = torch.load(out_path, weights_only=True)
    assert stored["imported_from"]["sha256"] == hashlib.sha256(spconv1_checkpoint.read_bytes()).hexdigest()
    assert stored["imported_from"]["openpcdet_version"] == "pcdet+0.6.0+8cacccec"
    assert stored["imported_from"]["sparse_weight_layout"] == "spconv1"
    assert stored["epoch"] == 80
    points = [_points(300, model.grid, seed=4)]
    started = time.perf_counter()
    with torch.no_grad():
        out = model(points)
    seconds = time.perf_counter() - started
    assert out.cls.shape == (1, 18, 200, 176)
    assert out.box.shape == (1, 42, 200, 176)
    assert out.dir.shape == (1, 12, 200, 176)
    assert torch.isfinite(out.cls).all() and torch.isfinite(out.box).all()
    print(f"full-grid CPU forward: {seconds:.2f} s")


# ------------------------------------------------------------------------------------ anchors


def _openpcdet_anchors(grid: AnchorGrid) -> Tensor:
    """OpenPCDet's AnchorGenerator (align_center False) + AnchorHeadSingle's concatenation, in float32."""
    x0, y0, z0, x1, y1, z1 = grid.point_cloud_range
    per_class = []
    for c in grid.classes:
        xs = torch.arange(x0, x1 + 1e-5, step=(x1 - x0) / (grid.nx - 1), dtype=torch.float32)
        ys = torch.arange(y0, y1 + 1e-5, step=(y1 - y0) / (grid.ny - 1), dtype=torch.float32)
        zs = torch.tensor([c.bottom_z])
        mx, my, mz = torch.meshgrid([xs, ys, zs], indexing="ij")
        a = torch.stack((mx, my, mz), dim=-1)[:, :, :, None, :]  # [x, y, z, 1 size, 3]
        a = torch.cat((a, torch.tensor(c.size).view(1, 1, 1, 1, 3).expand(*a.shape[:3], 1, 3)), dim=-1)
        rot = torch.tensor(grid.rotations).view(1, 1, 1, 1, -1, 1)
        a = a[:, :, :, :, None, :].expand(*a.shape[:4], len(grid.rotations), 6)
        a = torch.cat((a, rot.expand(*a.shape[:5], 1)), dim=-1)  # [x, y, z, size, rot, 7]
        a = a.permute(2, 1, 0, 3, 4, 5).contiguous()
        a[..., 2] += a[..., 5] / 2
        per_class.append(a)
    return torch.cat(per_class, dim=-3).view(-1, 7)


def test_range_corner_anchors_are_openpcdets_align_center_false_anchors() -> None:
    grid = second_yaml_grid()
    assert (grid.nx, grid.ny, grid.anchors_per_cell, grid.num_anchors) == (176, 200, 6, 211200)
    ours = grid.anchors()
    theirs = _openpcdet_anchors(grid)
    assert theirs.shape == ours.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)
    # Hand-computed: first cell x = 0, y = -40; last x = 70.4, y = 40; the second x is one step of 70.4 / 175.
    first_car, last_cyclist = ours[0], ours[-1]
    assert first_car.tolist() == pytest.approx([0.0, -40.0, -1.78 + 0.78, 3.9, 1.6, 1.56, 0.0], abs=1e-6)
    assert last_cyclist.tolist() == pytest.approx([70.4, 40.0, -0.6 + 0.865, 1.76, 0.6, 1.73, 1.57], abs=1e-5)
    assert float(ours[grid.anchor_index(0, 1, 0, 0), 0]) == pytest.approx(70.4 / 175, abs=1e-6)
    # Every anchor stays within half a cell of its cell centre (what the assigner's candidate search assumes).
    corners = grid.anchors(dtype=torch.float64)
    cell_centre = AnchorGrid.from_dict({**grid.to_dict(), "anchor_placement": CELL_CENTRE}).anchors(
        dtype=torch.float64
    )
    assert float((corners[:, :2] - cell_centre[:, :2]).abs().max()) == pytest.approx(0.2, abs=1e-9)


def test_anchor_placement_serialisation_and_comparison() -> None:
    default = small_grid(CELL_CENTRE)
    assert "anchor_placement" not in default.to_dict()  # old dicts and new default dicts stay identical
    corners = small_grid(RANGE_CORNERS)
    assert corners.to_dict()["anchor_placement"] == RANGE_CORNERS
    assert AnchorGrid.from_dict(corners.to_dict()) == corners
    assert corners.diff(default) == "grid.anchor_placement: 'range_corners' != 'cell_centre'"
    with pytest.raises(InputError, match="grid.anchor_placement: expected one of cell_centre, range_corners"):
        AnchorGrid.from_dict({**default.to_dict(), "anchor_placement": "corner"})
    one_cell = {**default.to_dict(), "point_cloud_range": [0.0, -0.2, -3.0, 0.4, 0.2, 1.0]}
    AnchorGrid.from_dict(one_cell)  # fine with cell centres
    with pytest.raises(InputError, match="range_corners needs at least 2 cells"):
        AnchorGrid.from_dict({**one_cell, "anchor_placement": RANGE_CORNERS})


def test_teacher_config_new_fields_are_optional_in_dicts() -> None:
    assert "sparse_extra_z_voxels" not in to_dict(TeacherConfig())
    assert "last_down_z_padding" not in to_dict(TeacherConfig())
    d = to_dict(second_yaml_config())
    assert (d["sparse_extra_z_voxels"], d["last_down_z_padding"]) == (1, 0)
    assert load_settings(TeacherConfig, d, "teacher.model") == second_yaml_config()
    # The project's default teacher is unchanged: z 20 -> 10 -> 5 -> 2 with padding 1, then conv_out -> 1... as
    # before; OpenPCDet's 41 -> 21 -> 11 -> 5 -> 2.
    grid = small_grid(CELL_CENTRE)
    default_model = SecondTeacher(TeacherConfig(voxel_size=(0.1, 0.1, 0.2)), grid)
    assert default_model.sparse.spatial_shape == (20, 64, 64)
    assert default_model.sparse.stages[-1][0][0].padding == [1, 1, 1]
    openpcdet = SecondTeacher(second_yaml_config(), grid)
    assert openpcdet.sparse.spatial_shape == (41, 128, 128)
    assert openpcdet.sparse.stages[-1][0][0].padding == [0, 1, 1]
    assert openpcdet.sparse.out_depth == 2


# ------------------------------------------------------------------------------------ refusals


def _import_state(state: dict[str, Tensor], tmp_path: Path, **kwargs) -> None:
    import_openpcdet_second(_save_openpcdet(state, tmp_path / "bad.pth"), **kwargs)


def test_missing_key_is_refused(reference_state: dict[str, Tensor], tmp_path: Path) -> None:
    state = dict(reference_state)
    del state["backbone_2d.blocks.1.16.weight"]
    with pytest.raises(InputError, match=r"missing from model_state: backbone_2d\.blocks\.1\.16\.weight"):
        _import_state(state, tmp_path)


def test_missing_num_batches_tracked_is_allowed(reference_state: dict[str, Tensor], tmp_path: Path) -> None:
    state = {k: v for k, v in reference_state.items() if not k.endswith("num_batches_tracked")}
    _import_state(state, tmp_path)


def test_extra_key_is_refused(reference_state: dict[str, Tensor], tmp_path: Path) -> None:
    state = {**reference_state, "backbone_2d.blocks.1.19.weight": torch.zeros(256, 256, 3, 3)}
    with pytest.raises(
        InputError, match=r"left over in model_state.*backbone_2d\.blocks\.1\.19\.weight \[256, 256"
    ):
        _import_state(state, tmp_path)


def test_wrong_shape_names_key_and_both_shapes(reference_state: dict[str, Tensor], tmp_path: Path) -> None:
    state = {**reference_state, "backbone_2d.deblocks.1.0.weight": torch.zeros(256, 128, 2, 2)}
    with pytest.raises(
        InputError,
        match=r"backbone_2d\.deblocks\.1\.0\.weight: shape \[256, 128, 2, 2\] in the checkpoint, "
        r"but bev\.up1\.0\.weight needs \[256, 256, 2, 2\]; check teacher\.model\.bev_upsample_channels",
    ):
        _import_state(state, tmp_path)
    state = {**reference_state, "backbone_3d.conv3.1.0.weight": torch.zeros(64, 3, 3, 3, 32)}
    with pytest.raises(
        InputError, match=r"backbone_3d\.conv3\.1\.0\.weight: shape \[64, 3, 3, 3, 32\] fits no"
    ):
        _import_state(state, tmp_path)


def test_mixed_and_forced_layouts(reference_state: dict[str, Tensor], tmp_path: Path) -> None:
    state = _as_layout(reference_state, SPCONV1)
    state["backbone_3d.conv2.0.0.weight"] = reference_state["backbone_3d.conv2.0.0.weight"]  # 2.x layout
    with pytest.raises(InputError, match="mix layouts"):
        _import_state(state, tmp_path)
    with pytest.raises(
        InputError, match=r"backbone_3d\.conv_input\.0\.weight: shape \[3, 3, 3, 4, 16\] is not the "
    ):
        _import_state(_as_layout(reference_state, SPCONV1), tmp_path, sparse_layout="spconv2")


def _export_openpcdet(model: SecondTeacher, layout: SparseLayout) -> dict[str, Tensor]:
    """Our model's state dict under OpenPCDet names and ``layout`` (the inverse of the import)."""
    sparse = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, SparseConvolution)}
    out = {"global_step": torch.zeros(1, dtype=torch.int64)}
    for key, value in model.state_dict().items():
        if key in sparse:
            value = layout.from_ours(value)
        elif key == "bev.up0.0.weight":
            value = value.transpose(0, 1)
        out[openpcdet_key(key)] = value.clone()
    return out


def test_ambiguous_layout_is_refused_unless_chosen(tmp_path: Path) -> None:
    """With Cin == Cout everywhere, spconv 1.x [k, k, k, Cin, Cout] and native [k, k, k, Cout, Cin] look alike."""
    config = TeacherConfig(
        point_features=16,
        voxel_size=(0.05, 0.05, 0.1),
        sparse_channels=(16, 16, 16, 16),
        sparse_out_channels=16,
        bev_channels=(8, 8),
        bev_layers=(1, 1),
        bev_upsample_channels=8,
        sparse_extra_z_voxels=1,
        last_down_z_padding=0,
    )
    grid = small_grid()
    source = SecondTeacher(config, grid)
    _randomise(source, seed=5)
    path = _save_openpcdet(_export_openpcdet(source, SPCONV1), tmp_path / "square.pth")
    with pytest.raises(InputError, match=r"ambiguous .*spconv1 .* and native .*--sparse-layout"):
        import_openpcdet_second(path, grid, config)
    imported = import_openpcdet_second(path, grid, config, sparse_layout="spconv1")
    for key, value in source.state_dict().items():
        assert torch.equal(imported.model.state_dict()[key], value), key


def test_grid_that_does_not_match_the_head_is_refused(spconv1_checkpoint: Path) -> None:
    d = second_yaml_grid().to_dict()
    two_classes = AnchorGrid.from_dict({**d, "classes": d["classes"][:2]}, source="params.yaml")
    with pytest.raises(
        InputError, match=r"^params\.yaml: grid\.classes: .*predicts 3 classes, the grid has 2"
    ):
        import_openpcdet_second(spconv1_checkpoint, two_classes)
    one_rotation = AnchorGrid.from_dict({**d, "rotations": [0.0]}, source="params.yaml")
    with pytest.raises(
        InputError, match=r"grid\.rotations: .*2 anchors per class and cell, the grid 1 rotations"
    ):
        import_openpcdet_second(spconv1_checkpoint, one_rotation)


def test_config_that_is_not_openpcdets_is_refused(spconv1_checkpoint: Path) -> None:
    config = second_yaml_config()
    with pytest.raises(InputError, match=r"teacher\.model\.sparse_extra_z_voxels: must be 1"):
        import_openpcdet_second(
            spconv1_checkpoint, config=TeacherConfig(**{**config.__dict__, "sparse_extra_z_voxels": 0})
        )
    with pytest.raises(InputError, match=r"teacher\.model\.last_down_z_padding: must be 0"):
        import_openpcdet_second(
            spconv1_checkpoint, config=TeacherConfig(**{**config.__dict__, "last_down_z_padding": 1})
        )
    # A 5.6 m z range (57 voxels high: 57 -> 29 -> 15 -> 7 -> 3) leaves 3 x 128 = 384 BEV channels, not 256.
    d = second_yaml_grid().to_dict()
    taller = AnchorGrid.from_dict({**d, "point_cloud_range": [0.0, -40.0, -3.0, 70.4, 40.0, 2.6]})
    with pytest.raises(
        InputError, match=r"backbone_2d\.blocks\.0\.1\.weight: .*needs \[128, 384, 3, 3\]; check BEV input"
    ):
        import_openpcdet_second(spconv1_checkpoint, taller)


def test_files_that_are_not_openpcdet_second_checkpoints(
    reference_state: dict[str, Tensor], spconv1_checkpoint: Path, tmp_path: Path
) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(InputError, match="not a loadable checkpoint"):
        import_openpcdet_second(text)
    with pytest.raises(InputError, match="checkpoint is missing"):
        import_openpcdet_second(tmp_path / "absent.pth")
    ours = write_imported_teacher(import_openpcdet_second(spconv1_checkpoint), tmp_path / "teacher.pt")
    with pytest.raises(InputError, match="StereoDistill 'teacher' checkpoint, not an OpenPCDet one"):
        import_openpcdet_second(ours)
    bare = tmp_path / "bare.pth"
    torch.save(reference_state, bare)
    with pytest.raises(InputError, match="not an OpenPCDet checkpoint: no 'model_state'"):
        import_openpcdet_second(bare)
    pillars = {
        "vfe.pfn_layers.0.linear.weight": torch.zeros(64, 10),
        "backbone_2d.blocks.0.1.weight": torch.zeros(1),
    }
    with pytest.raises(InputError, match=r"not an OpenPCDet SECOND .* \(its modules: backbone_2d, vfe\)"):
        import_openpcdet_second(_save_openpcdet(pillars, tmp_path / "pointpillar.pth"))


class _Payload:
    """Unpickling this calls os.mkdir(target): what a hostile checkpoint could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def test_code_in_the_pickle_is_never_run(reference_state: dict[str, Tensor], tmp_path: Path) -> None:
    sentinel = tmp_path / "was_run"
    path = tmp_path / "hostile.pth"
    torch.save({"model_state": reference_state, "version": _Payload(sentinel)}, path)
    with pytest.raises(InputError, match=r"refusing to load.*\(posix\.mkdir\)"):
        import_openpcdet_second(path)
    assert not sentinel.exists()


# ------------------------------------------------------------------------------------ CLI


def test_cli_imports_and_reports(run_cli, spconv1_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "teacher.pt"
    result = run_cli("teacher", "import-openpcdet", spconv1_checkpoint, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    assert "spconv1 layout [k1, k2, k3, Cin, Cout]" in result.stdout
    assert "dropped: global_step" in result.stdout
    assert (
        "grid: 176 x 200 cells of 0.4 m, classes Car, Pedestrian, Cyclist, anchors at range_corners"
        in result.stdout
    )
    assert "Velodyne frame" in result.stderr
    assert "warning" not in result.stderr
    model = load_teacher(out, grid=second_yaml_grid())
    assert model.config == second_yaml_config()
    help_text = run_cli("teacher", "import-openpcdet", "--help").stdout
    assert "0.27 m" in help_text and "Velodyne" in help_text


def _params_file(path: Path, grid: AnchorGrid, config: TeacherConfig) -> Path:
    path.write_text(yaml.safe_dump({"grid": grid.to_dict(), "teacher": {"model": to_dict(config)}}))
    return path


def test_cli_with_params(run_cli, spconv1_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "teacher.pt"
    params = _params_file(tmp_path / "params.yaml", small_grid(CELL_CENTRE), second_yaml_config())
    result = run_cli("teacher", "import-openpcdet", spconv1_checkpoint, "--out", out, "--params", params)
    assert result.exit_code == 0, result.output
    assert "grid: 16 x 16 cells" in result.stdout
    assert (
        "warning: grid.anchor_placement is cell_centre; second.yaml (align_center False) needs range_corners"
        in (result.stderr)
    )
    load_teacher(out, grid=small_grid(CELL_CENTRE))

    d = second_yaml_grid().to_dict()
    bad = _params_file(
        tmp_path / "bad.yaml", AnchorGrid.from_dict({**d, "classes": d["classes"][:1]}), second_yaml_config()
    )
    result = run_cli(
        "teacher", "import-openpcdet", spconv1_checkpoint, "--out", tmp_path / "x.pt", "--params", bad
    )
    assert result.exit_code == 1
    assert "grid.classes" in result.stderr and "predicts 3 classes, the grid has 1 (Car)" in result.stderr
    assert not (tmp_path / "x.pt").exists()
    # The project's own teacher section is not OpenPCDet's network: refused, naming the field.
    own = _params_file(tmp_path / "own.yaml", second_yaml_grid(), TeacherConfig(voxel_size=(0.05, 0.05, 0.1)))
    result = run_cli(
        "teacher", "import-openpcdet", spconv1_checkpoint, "--out", tmp_path / "y.pt", "--params", own
    )
    assert result.exit_code == 1 and "teacher.model.sparse_channels" in result.stderr

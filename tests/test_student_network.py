"""Stereo student network: config, shapes, plane sweep, depth target/loss, lifting geometry, gradients."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from grids import small_grid
from student_fixtures import tiny_student

from stereodistill.errors import InputError
from stereodistill.geometry.calibration import Calibration
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import load_params, read_params_yaml
from stereodistill.settings import load_settings, to_dict
from stereodistill.student.cost_volume import build_cost_volume, plane_disparities
from stereodistill.student.depth import depth_loss, depth_target_map, soft_argmin_depth, two_hot_targets
from stereodistill.student.lifting import VoxelLifter, plane_depths, voxel_centres
from stereodistill.student.model import StereoStudent, calibration_tensors
from stereodistill.student.settings import StudentConfig

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
KITTI_PARAMS = PARAMS.parent / "docs" / "presets" / "params.kitti.yaml"

# Planes 2 m apart over [2, 18] m (the hand values below), and two norm groups.
TINY = tiny_student(depth_min=2.0, depth_max=18.0, norm_groups=2)


def rig(
    focal: float = 60.0, width: int = 64, height: int = 32, baseline: float = 0.5, tz: float = 0.0
) -> Calibration:
    """A rectified pair: camera 2 at rect x = -0.06, camera 3 ``baseline`` to its right; identity R0_rect."""
    K = np.array([[focal, 0.0, (width - 1) / 2 + 1.3], [0.0, focal, (height - 1) / 2 - 0.7], [0.0, 0.0, 1.0]])

    def P(tx: float, tz_: float = tz) -> np.ndarray:
        return K @ np.hstack([np.eye(3), np.array([[tx], [0.0], [tz_]])])

    return Calibration(
        P0=P(0.0, 0.0),
        P1=P(-0.54, 0.0),
        P2=P(0.06),
        P3=P(0.06 - baseline),
        R0_rect=np.eye(3),
        Tr_velo_to_cam=np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]]),
    )


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------- config
def test_config_round_trip_and_errors() -> None:
    def load(**values) -> StudentConfig:
        return load_settings(StudentConfig, values, "student.model")

    assert load(**to_dict(TINY)) == TINY
    assert TINY.feature_stride == 4
    assert torch.allclose(plane_depths(TINY), torch.tensor([3.0, 5, 7, 9, 11, 13, 15, 17]))
    with pytest.raises(InputError, match="student.model.gwc_groups"):
        load(stereo_channels=16, gwc_groups=5)
    with pytest.raises(InputError, match="student.model.voxel_z"):
        load(voxel_z=7, z_pool=2)
    with pytest.raises(InputError, match="student.model.bev_channels"):
        load(bev_channels=30, norm_groups=4)
    with pytest.raises(InputError, match="student.model.wings"):
        load(wings=2)
    with pytest.raises(
        InputError, match=r"student.model.box_tower_negative_slope: must be in \[0, 1\), got -0.1"
    ):
        load(box_tower_negative_slope=-0.1)


def test_kitti_preset_is_liga_scale() -> None:
    kitti = load_params(KITTI_PARAMS).student.model
    assert kitti.feature_stride == 4
    assert kitti.cost_volume_channels == 64
    planes = plane_depths(kitti)
    assert torch.allclose(planes, 2.4 + 0.8 * torch.arange(72, dtype=torch.float32), atol=1e-5)


# ----------------------------------------------------------------------------------------------- shapes
def test_default_config_shapes_on_default_grid() -> None:
    grid = AnchorGrid.from_params(read_params_yaml(PARAMS.read_text())["grid"], PARAMS)
    config = StudentConfig()
    torch.manual_seed(0)
    model = StereoStudent(config, grid)
    P2, baseline = calibration_tensors([rig(width=40, height=18), rig(focal=55.0, width=40, height=18)])
    with torch.no_grad():
        out = model(torch.rand(2, 3, 18, 40), torch.rand(2, 3, 18, 40), P2, baseline)
    a, c = grid.anchors_per_cell, grid.num_classes
    assert out.head.cls.shape == (2, a * c, grid.ny, grid.nx)
    assert out.head.box.shape == (2, a * 7, grid.ny, grid.nx)
    assert out.head.dir.shape == (2, a * 2, grid.ny, grid.nx)
    hf, wf = math.ceil(18 / 4), math.ceil(40 / 4)
    assert out.depth_logits.shape == (2, config.num_planes, hf, wf)
    assert out.depth.shape == (2, hf, wf)
    assert out.volume_features.shape == (
        2,
        config.volume_channels,
        config.voxel_z // config.z_pool,
        grid.ny,
        grid.nx,
    )
    assert out.bev_features.shape == (2, config.bev_channels, grid.ny, grid.nx)
    assert torch.all((out.depth >= config.depth_min) & (out.depth <= config.depth_max))
    with pytest.raises(ValueError, match="P2"):
        model(torch.rand(2, 3, 18, 40), torch.rand(2, 3, 18, 40), P2[:1], baseline)


# ----------------------------------------------------------------------------------------------- cost volume
def test_plane_sweep_peaks_at_the_plane_of_the_true_disparity() -> None:
    torch.manual_seed(1)
    b, c, h, w, shift, stride = 1, 32, 5, 20, 3, 4
    left = torch.randn(b, c, h, w)
    right = torch.randn(b, c, h, w)
    right[..., : w - shift] = left[..., shift:]  # left pixel j appears at right pixel j - shift
    planes = plane_depths(TINY)
    true_plane = 5
    focal_baseline = torch.tensor(
        [shift * stride * float(planes[true_plane])]
    )  # f_u * B giving `shift` there
    disparities = plane_disparities(focal_baseline, planes, stride)
    assert disparities[0, true_plane].item() == pytest.approx(shift)
    assert disparities[0, 2].item() == pytest.approx(shift * 13.0 / 7.0)

    gwc = build_cost_volume(left, right, disparities, "gwc", groups=1)
    assert gwc.shape == (b, 1, len(planes), h, w)
    assert torch.all(gwc[0, 0, :, :, shift:].argmax(dim=0) == true_plane)
    assert torch.allclose(
        gwc[0, 0, true_plane, :, shift:], (left[0, :, :, shift:] ** 2).mean(dim=0), atol=1e-4
    )

    concat = build_cost_volume(left, right, disparities, "concat")
    assert concat.shape == (b, 2 * c, len(planes), h, w)
    assert torch.equal(concat[:, :c, 0], left)
    assert torch.allclose(concat[:, c:, true_plane, :, shift:], left[..., shift:], atol=1e-4)
    outside = concat[:, c:, true_plane, :, :shift]  # sampled left of the right image: zero
    assert torch.allclose(outside, torch.zeros_like(outside), atol=1e-5)

    grouped = build_cost_volume(left, right, disparities, "gwc", groups=4)
    assert grouped.shape == (b, 4, len(planes), h, w)
    assert torch.allclose(grouped.mean(dim=1), gwc[:, 0], atol=1e-5)


# ----------------------------------------------------------------------------------------------- depth
def test_two_hot_target_and_loss_by_hand() -> None:
    planes = torch.tensor([2.0, 4.0, 6.0, 8.0])
    q = two_hot_targets(torch.tensor([4.5, 2.0, 1.0, 9.0, 7.0]), planes)
    expected = torch.tensor(
        [[0, 0.75, 0.25, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0.5, 0.5]], dtype=torch.float32
    )
    assert torch.allclose(q, expected)

    logits = torch.zeros(1, 4, 1, 2)
    logits[0, :, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    target = torch.tensor([[[4.5, 0.0]]])  # second pixel has no target
    log_p = torch.log_softmax(torch.tensor([0.0, 1.0, 2.0, 3.0]), 0)
    expected_loss = -(0.75 * log_p[1] + 0.25 * log_p[2])
    assert depth_loss(logits, target, planes).item() == pytest.approx(expected_loss.item(), rel=1e-6)
    assert depth_loss(logits, torch.zeros(1, 1, 2), planes).item() == 0.0

    uniform = soft_argmin_depth(torch.zeros(1, 4, 2, 2), planes)
    assert torch.allclose(uniform, torch.full((1, 2, 2), 5.0))


def test_depth_target_map_rounds_to_feature_pixels_and_keeps_the_nearest() -> None:
    rows = np.array(
        [
            [5.9, 2.1, 10.0],  # -> (i, j) = (1, 1)  (u/4 = 1.475, v/4 = 0.525)
            [4.2, 3.0, 7.0],  # -> (1, 1) too; nearer, wins
            [0.0, 0.0, 30.0],  # -> (0, 0)
            [13.9, 9.0, 12.0],  # -> (2, 3)
            [14.1, 9.0, 12.0],  # -> column 4: outside a 4-column map
            [8.0, 4.0, 1.5],  # depth below the range: dropped
            [8.0, 4.0, 40.0],  # depth at/after the range end: dropped
        ],
        dtype=np.float32,
    )
    target = depth_target_map(rows, (10, 15), stride=4, depth_range=(2.0, 40.0))
    expected = torch.zeros(3, 4)
    expected[1, 1] = 7.0
    expected[0, 0] = 30.0
    expected[2, 3] = 12.0
    assert torch.equal(target, expected)


# ----------------------------------------------------------------------------------------------- lifting
def test_lifting_samples_the_projected_pixel_and_exact_plane() -> None:
    # Grid x centres 2.5, 3.5, ..., planes at 2.5 + p (depth_min 2, max 18, 16 planes): with t_z = 0, voxel ix
    # lies exactly on plane ix.
    grid = small_grid(18.0, 3.0)
    grid = AnchorGrid.from_dict({**grid.to_dict(), "point_cloud_range": [2.0, -3.0, -2.0, 18.0, 3.0, 1.0]})
    config = StudentConfig(depth_min=2.0, depth_max=18.0, num_planes=16)
    planes = plane_depths(config)
    calib = rig(focal=40.0, width=64, height=32, tz=0.0)
    stride, hf, wf, d = 4, 8, 16, 16
    voxel_z = 3
    jj, ii = torch.meshgrid(
        torch.arange(wf, dtype=torch.float32), torch.arange(hf, dtype=torch.float32), indexing="xy"
    )
    pp = torch.arange(d, dtype=torch.float32).view(d, 1, 1)
    volume = torch.stack([jj.expand(d, hf, wf), ii.expand(d, hf, wf), pp.expand(d, hf, wf)])[
        None
    ]  # (1,3,D,H,W)
    semantic = (1.0 + ii)[None, None]  # value i + 1
    uniform_logits = torch.zeros(1, d, hf, wf)
    lifter = VoxelLifter(grid, voxel_z, stride)
    P2, _ = calibration_tensors([calib])
    lifted = lifter(volume, uniform_logits, semantic, P2, planes)
    assert lifted.shape == (1, 4, voxel_z, grid.ny, grid.nx)

    centres = voxel_centres(grid, voxel_z).numpy().reshape(-1, 3)
    uv, depth = calib.project_to_image(centres, camera=2)
    expected = np.stack([uv[:, 0] / stride, uv[:, 1] / stride, (depth - 2.5) / 1.0], axis=-1)
    inside = (
        (depth > 0)
        & (expected[:, 0] >= 0)
        & (expected[:, 0] <= wf - 1)
        & (expected[:, 1] >= 0)
        & (expected[:, 1] <= hf - 1)
        & (expected[:, 2] >= 0)
        & (expected[:, 2] <= d - 1)
    )
    got = lifted[0].permute(1, 2, 3, 0).reshape(-1, 4).numpy()
    assert 50 < inside.sum() < len(inside)  # both valid and invalid voxels are exercised
    assert np.allclose(got[inside, :3], expected[inside], atol=1e-3)
    assert np.allclose(
        got[inside, 3], (expected[inside, 1] + 1.0) / d, atol=1e-4
    )  # semantic * p(plane) = 1/D
    assert np.all(got[~inside] == 0)
    # Exact plane index: voxel column ix sits on plane ix.
    ix = np.tile(np.arange(grid.nx), voxel_z * grid.ny)
    assert np.allclose(got[inside, 2], ix[inside], atol=1e-4)


# ----------------------------------------------------------------------------------------------- training
def _tiny_batch() -> tuple[torch.Tensor, ...]:
    torch.manual_seed(3)
    P2, baseline = calibration_tensors([rig(focal=40.0), rig(focal=36.0, baseline=0.45)])
    target = torch.zeros(2, 8, 16)
    target[:, 3:, :] = torch.linspace(4.0, 15.0, 16)
    return torch.rand(2, 3, 32, 64), torch.rand(2, 3, 32, 64), P2, baseline, target


def _loss(model: StereoStudent, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    left, right, P2, baseline, target = batch
    out = model(left, right, P2, baseline)
    head = sum(t.pow(2).mean() for t in out.head)
    return head + depth_loss(out.depth_logits, target, model.plane_depths) + out.volume_features.pow(2).mean()


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = StereoStudent(TINY, small_grid(16.0, 8.0))
    _loss(model, _tiny_batch()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_one_optimisation_step_reduces_the_loss() -> None:
    torch.manual_seed(0)
    model = StereoStudent(TINY, small_grid(16.0, 8.0))
    batch = _tiny_batch()
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-2)
    first = _loss(model, batch)
    first.backward()
    optimiser.step()
    with torch.no_grad():
        second = _loss(model, batch)
    assert second.item() < first.item()


def test_imitation_adapter_maps_bev_features_to_the_teacher_channels() -> None:
    grid = small_grid(16.0, 8.0)
    torch.manual_seed(0)
    plain = StereoStudent(TINY, grid)
    torch.manual_seed(0)
    adapted = StereoStudent(TINY, grid, imitation_channels=5)
    assert plain.imitation is None and adapted.imitation_channels == 5
    # Built last: every other weight starts as without the adapter (variants of one seed stay paired).
    plain_state, adapted_state = plain.state_dict(), adapted.state_dict()
    assert set(adapted_state) - set(plain_state) == {"imitation.weight", "imitation.bias"}
    assert all(torch.equal(plain_state[k], adapted_state[k]) for k in plain_state)
    left, right, P2, baseline, _ = _tiny_batch()
    out = adapted(left, right, P2, baseline)
    assert out.imitation_features.shape == (2, 5, grid.ny, grid.nx)
    expected = torch.nn.functional.conv2d(out.bev_features, adapted.imitation.weight, adapted.imitation.bias)
    torch.testing.assert_close(out.imitation_features, expected)
    assert plain(left, right, P2, baseline).imitation_features is None
    with pytest.raises(ValueError, match="imitation_channels"):
        StereoStudent(TINY, grid, imitation_channels=-1)

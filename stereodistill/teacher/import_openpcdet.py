"""Import an OpenPCDet SECOND checkpoint (``tools/cfgs/kitti_models/second.yaml``) as a StereoDistill teacher.

The network is MeanVFE, VoxelBackBone8x, HeightCompression, BaseBEVBackbone and AnchorHeadSingle. Our
:class:`~stereodistill.teacher.model.SecondTeacher` represents it exactly with :func:`second_yaml_config`
(stride 8, sparse channels 16/32/64/64 -> 128, ``sparse_extra_z_voxels = 1`` for OpenPCDet's 41-voxel-high
sparse tensor, ``last_down_z_padding = 0`` for conv4's (0, 1, 1) padding, BEV blocks 128/256 of 1 + 5 convs,
deblocks 256 + 256 -> 512 channels, 1x1 head convs) on :func:`second_yaml_grid` (OpenPCDet's range, 0.4 m cells,
rotations ``[0, 1.57]``, its anchor sizes and bottom heights, and ``anchor_placement: range_corners`` because
``align_center: False`` spreads anchor centres from ``x_min`` to ``x_max`` inclusive; anchor z is
``bottom + h / 2`` in both).

Names (OpenPCDet ``model_state`` -> ours)::

    backbone_3d.conv_input.{0,1}.*         -> sparse.conv_input.{0,1}.*      (0: SubMConv3d, 1: BatchNorm1d)
    backbone_3d.conv1.0.{0,1}.*            -> sparse.conv1.{0,1}.*
    backbone_3d.conv{2,3,4}.{j}.{0,1}.*    -> sparse.stages.{0,1,2}.{j}.{0,1}.*
    backbone_3d.conv_out.{0,1}.*           -> sparse.conv_out.{0,1}.*
    backbone_2d.blocks.{b}.{i + 1}.*       -> bev.block{b}.{i}.*              (their index 0 is a ZeroPad2d)
    backbone_2d.deblocks.{b}.{0,1}.*       -> bev.up{b}.{0,1}.*
    dense_head.conv_{cls,box}.*            -> head.conv_{cls,box}.*
    dense_head.conv_dir_cls.*              -> head.conv_dir.*

``global_step`` and spconv's ``*.max_num_voxels_during_training`` buffers are dropped; a missing
``num_batches_tracked`` (unused in eval mode) is allowed. Anything else left over or missing is an error.

Weights. Sparse-conv weights are stored by spconv 1.x as ``[k1, k2, k3, Cin, Cout]``, by spconv 2.x as
``[Cout, k1, k2, k3, Cin]`` and by spconv 2.0/2.1's native algorithm as ``[k1, k2, k3, Cout, Cin]``; spconv 2.3
(here) keeps ``[Cout, k1, k2, k3, Cin]`` for every algorithm. The layout is found by matching all sparse weights
of the file against the expected shapes: exactly one layout must fit them all (a 16 -> 16 conv alone cannot tell
spconv 1.x from native, the 4 -> 16 input conv can); otherwise the import is refused, naming the key. The
kernel axes keep their order (z, y, x), as OpenPCDet's own converter does. OpenPCDet's first deblock is a
``ConvTranspose2d`` with kernel 1 and stride 1, ours a 1x1 ``Conv2d``: the weight ``[Cin, Cout, 1, 1]`` is
transposed to ``[Cout, Cin, 1, 1]``. The stride-2 deblock is a ``ConvTranspose2d`` in both.

Loading is safe: ``torch.load(weights_only=True)`` never runs code from the file. OpenPCDet's one-cycle optimizer
stores numpy scalars (learning rates, betas) in ``optimizer_state``, which ``weights_only`` rejects by default;
the numeric numpy scalar and dtype constructors (plain data) are allow-listed for that, nothing else. A file with
any other Python object is refused with the name of the object.

Frame caveat. OpenPCDet trains SECOND on Velodyne-frame points (x forward, y left, z up, origin at the LiDAR);
the StereoDistill teacher is fed project-frame points (the same axes, origin at rectified camera 0). On KITTI the
LiDAR sits about 0.27 m behind and 0.08 m above camera 0, so ``x_project ~ x_velo - 0.27``,
``z_project ~ z_velo + 0.08`` (plus a rotation well under a degree). The imported network is used unchanged: its
boxes come out in the frame of the points it is given, but its voxel grid, range edges and learned heights
(anchors at OpenPCDet's Velodyne bottom heights, e.g. -1.78 m for cars) are off by those offsets. Expect a small
loss of accuracy, mostly in z; retrain or fine-tune in the project frame for an exact teacher.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from spconv.pytorch.conv import SparseConvolution
from torch import Tensor

from stereodistill.checkpoints import load_weights_only, save_atomic
from stereodistill.errors import InputError
from stereodistill.head.anchors import RANGE_CORNERS, AnchorGrid
from stereodistill.teacher.checkpoint import teacher_model_checkpoint
from stereodistill.teacher.model import SecondTeacher
from stereodistill.teacher.settings import TeacherConfig

SOURCE_FORMAT = "openpcdet-second"


# ---------------------------------------------------------------------------------------- second.yaml defaults
def second_yaml_grid() -> AnchorGrid:
    """The anchor grid of OpenPCDet's ``second.yaml`` (Velodyne frame, ``align_center: False``): 176 x 200 cells."""
    classes = [
        ("Car", [3.9, 1.6, 1.56], -1.78, 0.6, 0.45),
        ("Pedestrian", [0.8, 0.6, 1.73], -0.6, 0.5, 0.35),
        ("Cyclist", [1.76, 0.6, 1.73], -0.6, 0.5, 0.35),
    ]
    return AnchorGrid.from_params(
        {
            "point_cloud_range": [0.0, -40.0, -3.0, 70.4, 40.0, 1.0],
            "bev_cell_size": 0.4,
            "rotations": [0.0, 1.57],
            "classes": [
                {"name": n, "size": s, "bottom_z": z, "matched_iou": m, "unmatched_iou": u}
                for n, s, z, m, u in classes
            ],
            "anchor_placement": RANGE_CORNERS,
        },
        source="OpenPCDet second.yaml",
    )


def second_yaml_config() -> TeacherConfig:
    """The network of ``second.yaml`` (with OpenPCDet's test-time voxelisation: 5 points, 40000 voxels)."""
    return TeacherConfig(
        point_features=4,
        voxel_size=(0.05, 0.05, 0.1),
        max_points_per_voxel=5,
        max_voxels=40000,
        sparse_channels=(16, 32, 64, 64),
        sparse_out_channels=128,
        bev_channels=(128, 256),
        bev_layers=(5, 5),
        bev_upsample_channels=256,
        sparse_extra_z_voxels=1,
        last_down_z_padding=0,
    )


# ---------------------------------------------------------------------------------------- sparse weight layouts
@dataclass(frozen=True)
class SparseLayout:
    """A stored sparse-conv weight layout; ``to_ours`` permutes it to spconv 2.3's ``[Cout, k1, k2, k3, Cin]``."""

    name: str
    axes: str
    to_ours: tuple[int, int, int, int, int]

    def convert(self, weight: Tensor) -> Tensor:
        return weight.permute(*self.to_ours).contiguous()

    def from_ours(self, weight: Tensor) -> Tensor:
        """Inverse of :meth:`convert` (ours -> this layout)."""
        inverse = [self.to_ours.index(i) for i in range(5)]
        return weight.permute(*inverse).contiguous()

    def stored_shape(self, ours: tuple[int, ...]) -> tuple[int, ...]:
        inverse = [self.to_ours.index(i) for i in range(5)]
        return tuple(ours[i] for i in inverse)


SPCONV1 = SparseLayout("spconv1", "[k1, k2, k3, Cin, Cout] (spconv 1.x)", (4, 0, 1, 2, 3))
SPCONV2 = SparseLayout("spconv2", "[Cout, k1, k2, k3, Cin] (spconv 2.x)", (0, 1, 2, 3, 4))
NATIVE = SparseLayout("native", "[k1, k2, k3, Cout, Cin] (spconv 2.0/2.1 native)", (3, 0, 1, 2, 4))
SPARSE_LAYOUTS = (SPCONV1, SPCONV2, NATIVE)
LAYOUT_CHOICES = ("auto", *(layout.name for layout in SPARSE_LAYOUTS))


# ---------------------------------------------------------------------------------------- reading the file
@dataclass(frozen=True)
class OpenPCDetCheckpoint:
    """The parts of an OpenPCDet checkpoint the import uses."""

    path: Path
    model_state: dict[str, Tensor]
    epoch: int | None
    iteration: int | None
    version: str | None
    sha256: str


def _numpy_data_globals() -> list[Any]:
    """numpy's scalar and numeric-dtype constructors: plain data, what OpenPCDet's optimizer state pickles."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar

    dtypes = []
    for name in dir(np.dtypes):
        cls = getattr(np.dtypes, name)
        kind = getattr(cls, "type", None)
        if isinstance(cls, type) and isinstance(kind, type) and issubclass(kind, np.number | np.bool_):
            dtypes.append(cls)
    # Files written under numpy 1.x name the scalar constructor numpy.core.multiarray.scalar.
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_openpcdet_checkpoint(path: str | Path) -> OpenPCDetCheckpoint:
    """Load ``path`` safely (``weights_only``) and check it is an OpenPCDet checkpoint with a ``model_state``."""
    path = Path(path)
    ckpt = load_weights_only(path, "cpu", _numpy_data_globals())
    if not isinstance(ckpt, Mapping):
        raise InputError(f"not an OpenPCDet checkpoint: expected a dict, found {type(ckpt).__name__}", path)
    if "model_state" not in ckpt:
        if "kind" in ckpt:
            raise InputError(
                f"this is a StereoDistill {ckpt['kind']!r} checkpoint, not an OpenPCDet one (no 'model_state')",
                path,
            )
        raise InputError(
            "not an OpenPCDet checkpoint: no 'model_state' (expected epoch, it, model_state, optimizer_state, "
            f"version); found keys {sorted(map(str, ckpt))[:8]}",
            path,
        )
    state = ckpt["model_state"]
    if not isinstance(state, Mapping):
        raise InputError(f"model_state: expected a dict of tensors, found {type(state).__name__}", path)
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise InputError(f"model_state[{key!r}]: expected a tensor, found {type(value).__name__}", path)
    if "backbone_3d.conv_input.0.weight" not in state:
        modules = sorted({str(k).split(".")[0] for k in state})
        raise InputError(
            "not an OpenPCDet SECOND (VoxelBackBone8x) checkpoint: model_state has no "
            f"'backbone_3d.conv_input.0.weight' (its modules: {', '.join(modules)})",
            path,
        )
    epoch, iteration, version = ckpt.get("epoch"), ckpt.get("it"), ckpt.get("version")
    return OpenPCDetCheckpoint(
        path=path,
        model_state=dict(state),
        epoch=int(epoch) if isinstance(epoch, int) else None,
        iteration=int(iteration) if isinstance(iteration, int) else None,
        version=version if isinstance(version, str) else None,
        sha256=_sha256(path),
    )


# ---------------------------------------------------------------------------------------- names
_NAME_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"sparse\.conv_input\.(.+)"), lambda m: f"backbone_3d.conv_input.{m[1]}"),
    (re.compile(r"sparse\.conv1\.(.+)"), lambda m: f"backbone_3d.conv1.0.{m[1]}"),
    (re.compile(r"sparse\.stages\.(\d+)\.(.+)"), lambda m: f"backbone_3d.conv{int(m[1]) + 2}.{m[2]}"),
    (re.compile(r"sparse\.conv_out\.(.+)"), lambda m: f"backbone_3d.conv_out.{m[1]}"),
    # OpenPCDet's blocks start with a ZeroPad2d (index 0) before the first conv; ours pad inside the conv.
    (
        re.compile(r"bev\.block(\d)\.(\d+)\.(.+)"),
        lambda m: f"backbone_2d.blocks.{m[1]}.{int(m[2]) + 1}.{m[3]}",
    ),
    (re.compile(r"bev\.up(\d)\.(.+)"), lambda m: f"backbone_2d.deblocks.{m[1]}.{m[2]}"),
    (re.compile(r"head\.conv_dir\.(.+)"), lambda m: f"dense_head.conv_dir_cls.{m[1]}"),
    (re.compile(r"head\.conv_(cls|box)\.(.+)"), lambda m: f"dense_head.conv_{m[1]}.{m[2]}"),
)

# Ours is a 1x1 Conv2d [Cout, Cin, 1, 1]; OpenPCDet's a ConvTranspose2d (kernel 1, stride 1) [Cin, Cout, 1, 1].
_TRANSPOSED_1X1 = "bev.up0.0.weight"
_IGNORED = re.compile(r"global_step|.*\.max_num_voxels_during_training")
_OPTIONAL = re.compile(r".*\.num_batches_tracked")


def openpcdet_key(our_key: str) -> str:
    """The OpenPCDet ``model_state`` name of a :class:`SecondTeacher` ``state_dict`` key."""
    for pattern, rename in _NAME_RULES:
        match = pattern.fullmatch(our_key)
        if match:
            return rename(match)
    raise ValueError(f"no OpenPCDet name for {our_key!r}")


# Which setting decides the shape of an OpenPCDet key, by key prefix (the first match wins).
_SHAPE_HINTS: tuple[tuple[str, str], ...] = (
    ("backbone_3d.conv_input.", "teacher.model.point_features and sparse_channels[0]"),
    ("backbone_3d.conv_out.", "teacher.model.sparse_out_channels"),
    ("backbone_3d.", "teacher.model.sparse_channels"),
    (
        "backbone_2d.blocks.0.1.",
        "BEV input channels = teacher.model.sparse_out_channels x the height left after the sparse backbone, "
        "set by the grid.point_cloud_range z extent, teacher.model.voxel_size z, sparse_extra_z_voxels "
        "and last_down_z_padding",
    ),
    ("backbone_2d.blocks.", "teacher.model.bev_channels and bev_layers"),
    ("backbone_2d.deblocks.", "teacher.model.bev_upsample_channels"),
    ("dense_head.", "grid.classes and grid.rotations"),
)


def _hint(their_key: str) -> str:
    """Which setting decides the shape of ``their_key`` (for error messages)."""
    return next(
        (hint for prefix, hint in _SHAPE_HINTS if their_key.startswith(prefix)), "the network settings"
    )


# ---------------------------------------------------------------------------------------- checks
def check_head_matches_grid(
    state: Mapping[str, Tensor], grid: AnchorGrid, source: str | Path | None = None
) -> None:
    """Refuse when the checkpoint's head predicts another number of classes or rotations than ``grid``."""
    box, cls = state.get("dense_head.conv_box.weight"), state.get("dense_head.conv_cls.weight")
    if box is None or cls is None:
        return  # reported as missing keys
    box_out, cls_out = int(box.shape[0]), int(cls.shape[0])
    anchors = box_out // 7
    classes = cls_out // anchors if anchors else 0
    if box_out % 7 or anchors == 0 or classes == 0 or cls_out % anchors or anchors % classes:
        raise InputError(
            f"dense_head: conv_box has {box_out} and conv_cls {cls_out} outputs, not an AnchorHeadSingle "
            "with 7 box codes per anchor, one logit per class and the same anchors for every class",
            source,
        )
    rotations = anchors // classes
    where = f"the checkpoint's head (dense_head.conv_cls {list(cls.shape)}, conv_box {list(box.shape)})"
    if classes != grid.num_classes:
        raise InputError(
            f"grid.classes: {where} predicts {classes} classes, the grid has {grid.num_classes} "
            f"({', '.join(grid.class_names)})",
            source,
        )
    if rotations != grid.num_rotations:
        raise InputError(
            f"grid.rotations: {where} has {rotations} anchors per class and cell, the grid "
            f"{grid.num_rotations} rotations {list(grid.rotations)}",
            source,
        )


def check_openpcdet_config(config: TeacherConfig, source: str | Path | None = None) -> None:
    """Refuse settings that cannot be OpenPCDet's VoxelBackBone8x (the weights would load but compute otherwise)."""
    where = "teacher.model"
    if len(config.sparse_channels) != 4:
        raise InputError(
            f"{where}.sparse_channels: VoxelBackBone8x has 4 stages (stride 8), got {list(config.sparse_channels)}",
            source,
        )
    if config.sparse_extra_z_voxels != 1:
        raise InputError(
            f"{where}.sparse_extra_z_voxels: must be 1 for OpenPCDet (its sparse tensor is one voxel higher than "
            f"the z range), got {config.sparse_extra_z_voxels}",
            source,
        )
    if config.last_down_z_padding != 0:
        raise InputError(
            f"{where}.last_down_z_padding: must be 0 for OpenPCDet (conv4 pads (0, 1, 1)), "
            f"got {config.last_down_z_padding}",
            source,
        )


def anchor_differences(grid: AnchorGrid) -> list[str]:
    """How ``grid``'s anchors differ from ``second.yaml``'s (an imported head decodes correctly only against the
    anchors it was trained with; the checkpoint does not record them, so these are warnings)."""
    reference = second_yaml_grid()
    notes = []
    if grid.anchor_placement != reference.anchor_placement:
        notes.append(
            f"grid.anchor_placement is {grid.anchor_placement}; second.yaml (align_center False) "
            f"needs {reference.anchor_placement}"
        )
    if len(grid.rotations) != len(reference.rotations) or any(
        abs(a - b) > 1e-6 for a, b in zip(grid.rotations, reference.rotations, strict=False)
    ):
        notes.append(f"grid.rotations {list(grid.rotations)} != second.yaml's {list(reference.rotations)}")
    ours = {c.name: c for c in grid.classes}
    for i, ref in enumerate(reference.classes):
        c = ours.get(ref.name)
        if c is None:
            notes.append(f"grid.classes has no {ref.name} (second.yaml's class {i})")
            continue
        if grid.class_id(ref.name) != i:
            notes.append(
                f"grid.classes: {ref.name} is class {grid.class_id(ref.name)}, second.yaml's class {i}"
            )
        if any(abs(a - b) > 1e-6 for a, b in zip(c.size, ref.size, strict=True)):
            notes.append(f"grid {ref.name} size {list(c.size)} != second.yaml's {list(ref.size)}")
        if abs(c.bottom_z - ref.bottom_z) > 1e-6:
            notes.append(
                f"grid {ref.name} bottom_z {c.bottom_z} != second.yaml's {ref.bottom_z} (Velodyne frame)"
            )
    return notes


# ---------------------------------------------------------------------------------------- conversion
def _sparse_keys(model: SecondTeacher) -> set[str]:
    return {
        f"{name}.weight" for name, module in model.named_modules() if isinstance(module, SparseConvolution)
    }


def detect_sparse_layout(
    state: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], source: Path | None = None
) -> SparseLayout:
    """The one layout under which every OpenPCDet sparse weight in ``expected`` (their name -> our shape) fits."""
    fits = {
        key: [layout for layout in SPARSE_LAYOUTS if layout.convert(state[key]).shape == shape]
        if state[key].dim() == 5
        else []
        for key, shape in expected.items()
    }
    for key, layouts in fits.items():
        if not layouts:
            options = ", ".join(
                f"{lay.name} {list(lay.stored_shape(expected[key]))}" for lay in SPARSE_LAYOUTS
            )
            raise InputError(
                f"{key}: shape {list(state[key].shape)} fits no sparse-conv layout of the expected "
                f"{list(expected[key])} [Cout, k1, k2, k3, Cin] (would be: {options}); check {_hint(key)}",
                source,
            )
    common = [layout for layout in SPARSE_LAYOUTS if all(layout in fit for fit in fits.values())]
    if not common:
        per_key = "; ".join(f"{k}: {'/'.join(lay.name for lay in v)}" for k, v in fits.items())
        raise InputError(f"the sparse-conv weights mix layouts ({per_key})", source)
    if len(common) > 1:
        raise InputError(
            "ambiguous sparse-conv weight layout: every shape fits "
            + " and ".join(f"{lay.name} {lay.axes}" for lay in common)
            + "; choose one with --sparse-layout",
            source,
        )
    return common[0]


def convert_state_dict(
    state: Mapping[str, Tensor],
    model: SecondTeacher,
    sparse_layout: str = "auto",
    source: Path | None = None,
) -> tuple[dict[str, Tensor], SparseLayout, tuple[str, ...]]:
    """OpenPCDet ``model_state`` -> ``model``'s state dict. Returns (state dict, sparse layout, ignored keys).

    Every tensor's shape is checked; a missing, left-over or misshapen tensor is an :class:`InputError` naming
    the OpenPCDet key (and both shapes).
    """
    if sparse_layout not in LAYOUT_CHOICES:
        raise ValueError(f"sparse_layout must be one of {LAYOUT_CHOICES}, got {sparse_layout!r}")
    ours = model.state_dict()
    names = {key: openpcdet_key(key) for key in ours}
    used = set(names.values())
    missing = [t for o, t in names.items() if t not in state and not _OPTIONAL.fullmatch(t)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(
            f"missing from model_state: {shown} (expected by the network described by {_hint(missing[0])})",
            source,
        )
    ignored = tuple(k for k in state if k not in used and _IGNORED.fullmatch(k))
    extra = [k for k in state if k not in used and not _IGNORED.fullmatch(k)]
    if extra:
        shown = ", ".join(f"{k} {list(state[k].shape)}" for k in extra[:5])
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        raise InputError(
            f"left over in model_state (no place in the network): {shown}{more}; check {_hint(extra[0])}",
            source,
        )
    sparse = _sparse_keys(model)
    expected_sparse = {names[k]: tuple(ours[k].shape) for k in sorted(sparse)}
    if sparse_layout == "auto":
        layout = detect_sparse_layout(state, expected_sparse, source)
    else:
        layout = next(lay for lay in SPARSE_LAYOUTS if lay.name == sparse_layout)
    converted: dict[str, Tensor] = {}
    for key, target in ours.items():
        their = names[key]
        if their not in state:  # an optional num_batches_tracked
            converted[key] = target.clone()
            continue
        value = state[their]
        if key in sparse:
            if value.dim() != 5 or layout.convert(value).shape != target.shape:
                raise InputError(
                    f"{their}: shape {list(value.shape)} is not the {layout.name} layout {layout.axes} of the "
                    f"expected {list(target.shape)} (= {list(layout.stored_shape(tuple(target.shape)))} stored); "
                    f"check {_hint(their)}",
                    source,
                )
            value = layout.convert(value)
        elif key == _TRANSPOSED_1X1:
            if value.dim() != 4 or value.shape[2:] != (1, 1):
                raise InputError(
                    f"{their}: shape {list(value.shape)} is not a kernel-1 ConvTranspose2d weight [Cin, Cout, 1, 1]",
                    source,
                )
            value = value.transpose(0, 1)
        if value.shape != target.shape:
            raise InputError(
                f"{their}: shape {list(value.shape)} in the checkpoint, but {key} needs {list(target.shape)}; "
                f"check {_hint(their)}",
                source,
            )
        converted[key] = value.to(target.dtype).contiguous()
    return converted, layout, ignored


# ---------------------------------------------------------------------------------------- the import
@dataclass(frozen=True)
class ImportedTeacher:
    """A converted teacher: the model (eval mode, CPU), what was detected and where it came from."""

    model: SecondTeacher
    sparse_layout: SparseLayout
    ignored_keys: tuple[str, ...]
    provenance: dict[str, Any]
    anchor_warnings: tuple[str, ...]
    epoch: int


def import_openpcdet_second(
    checkpoint: str | Path,
    grid: AnchorGrid | None = None,
    config: TeacherConfig | None = None,
    sparse_layout: str = "auto",
) -> ImportedTeacher:
    """Convert an OpenPCDet SECOND checkpoint; ``grid``/``config`` default to :func:`second_yaml_grid`/``config``."""
    ckpt = read_openpcdet_checkpoint(checkpoint)
    settings_source = ckpt.path if grid is None else grid.source
    grid = second_yaml_grid() if grid is None else grid
    config = second_yaml_config() if config is None else config
    check_openpcdet_config(config, settings_source)
    check_head_matches_grid(ckpt.model_state, grid, settings_source)
    model = SecondTeacher(config, grid)
    state, layout, ignored = convert_state_dict(ckpt.model_state, model, sparse_layout, ckpt.path)
    model.load_state_dict(state, strict=True)
    model.eval()
    provenance = {
        "format": SOURCE_FORMAT,
        "path": str(ckpt.path.resolve()),
        "sha256": ckpt.sha256,
        "openpcdet_version": ckpt.version,
        "openpcdet_epoch": ckpt.epoch,
        "openpcdet_iteration": ckpt.iteration,
        "sparse_weight_layout": layout.name,
        "trained_frame": "velodyne",
    }
    return ImportedTeacher(
        model, layout, ignored, provenance, tuple(anchor_differences(grid)), ckpt.epoch or 0
    )


def write_imported_teacher(imported: ImportedTeacher, out: str | Path) -> Path:
    """Save as a StereoDistill teacher checkpoint (:func:`~stereodistill.teacher.checkpoint.load_teacher` reads it)."""
    out = Path(out)
    save_atomic(
        teacher_model_checkpoint(imported.model, imported.epoch, {"imported_from": imported.provenance}), out
    )
    return out


def import_openpcdet(
    checkpoint: str | Path,
    out: str | Path,
    params_path: str | Path | None = None,
    sparse_layout: str = "auto",
) -> ImportedTeacher:
    """``stereodistill teacher import-openpcdet``: convert ``checkpoint`` and write ``out``.

    With ``params_path``, the grid and ``teacher.model`` sections of that file describe the network; otherwise
    ``second.yaml``'s defaults do.
    """
    grid = config = None
    if params_path is not None:
        from stereodistill.params import load_params

        params = load_params(params_path)
        grid = AnchorGrid.from_params(params.grid, params.source)
        config = params.teacher.model
    imported = import_openpcdet_second(checkpoint, grid, config, sparse_layout)
    write_imported_teacher(imported, out)
    return imported

"""The student's opt-in resnet34 trunk: torchvision's layout, the ImageNet loader, strides, settings."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from cache_fixtures import anchor_grid
from grids import small_grid
from student_fixtures import TINY_STUDENT_MODEL, tiny_student

from stereodistill.distill.settings import DistillSettings
from stereodistill.errors import InputError
from stereodistill.params import load_params
from stereodistill.settings import load_settings, to_dict
from stereodistill.student.backbone import FeatureExtractor, ResNet34FeatureExtractor
from stereodistill.student.model import StereoStudent
from stereodistill.student.resnet import ResNet34Trunk, load_imagenet_weights
from stereodistill.student.settings import StudentConfig, StudentTrainSettings
from stereodistill.student.train import train_student

TORCHVISION_KEYS = Path(__file__).parent / "data" / "torchvision_resnet34_keys.json"
KITTI_PARAMS = Path(__file__).resolve().parents[1] / "docs" / "presets" / "params.kitti.yaml"
SMALL_TRUNK_FIELDS = ("backbone_channels", "backbone_strides", "backbone_blocks")


def resnet_student(**overrides) -> StudentConfig:
    """The tiny test student on the resnet34 trunk."""
    values = {k: v for k, v in TINY_STUDENT_MODEL.items() if k not in SMALL_TRUNK_FIELDS}
    return load_settings(StudentConfig, {**values, "backbone": "resnet34", **overrides}, "student.model")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def imagenet_like_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A state dict under torchvision's names, values unlike a fresh trunk's, with the ImageNet classifier."""
    generator = torch.Generator().manual_seed(7)
    state = {
        key: value + torch.rand(value.shape, generator=generator) if value.is_floating_point() else value + 3
        for key, value in ResNet34Trunk().state_dict().items()
    }
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("imagenet") / "resnet34-test.pth"
    torch.save(state, path)
    return path, state


# ------------------------------------------------------------------------------------------ torchvision's layout
def test_trunk_has_torchvisions_keys_and_shapes():
    """tests/data/dump_torchvision_resnet34_keys.py wrote torchvision 0.29's resnet34 keys; the trunk has all of
    them in the same order with the same shapes, the ImageNet classifier ``fc`` aside."""
    torchvision = json.loads(TORCHVISION_KEYS.read_text())["state_dict"]
    expected = [(key, shape) for key, shape in torchvision.items() if not key.startswith("fc.")]
    assert len(expected) == 216
    ours = [(key, list(value.shape)) for key, value in ResNet34Trunk().state_dict().items()]
    assert ours == expected


# ------------------------------------------------------------------------------------------ loading the file
def test_pretrained_file_loads_into_the_trunk(imagenet_like_file):
    path, state = imagenet_like_file
    model = StereoStudent(resnet_student(pretrained=str(path)), small_grid(16.0, 8.0))
    load_imagenet_weights(model.features.trunk, path)
    loaded = model.state_dict()
    for key in ("conv1.weight", "layer2.0.downsample.0.weight", "layer4.2.bn2.running_var"):
        assert torch.equal(loaded[f"features.trunk.{key}"], state[key])
    assert (
        loaded["features.trunk.layer1.0.bn1.num_batches_tracked"] == state["layer1.0.bn1.num_batches_tracked"]
    )
    assert not any("fc." in key for key in loaded)


def test_file_without_batchnorm_step_counters_loads(tmp_path, imagenet_like_file):
    """Files saved before torch 0.4 (resnet34-333f7ec4.pth) have no ``num_batches_tracked``."""
    _, state = imagenet_like_file
    old = {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    trunk = ResNet34Trunk()
    load_imagenet_weights(trunk, tmp_path / "old.pth")
    assert torch.equal(trunk.layer3[5].conv2.weight, state["layer3.5.conv2.weight"])
    assert int(trunk.bn1.num_batches_tracked) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "shape",
            r"layer3\.1\.conv1\.weight has shape \(256, 256, 1, 1\) in the file, the trunk expects "
            r"\(256, 256, 3, 3\)",
        ),
        ("missing", r"key layer4\.2\.bn2\.running_var \(512,\) is missing"),
        ("unexpected", r"unexpected key layer5\.0\.conv1\.weight \(8,\)"),
    ],
)
def test_mismatched_file_is_refused_naming_file_and_key(tmp_path, imagenet_like_file, change, message):
    _, state = imagenet_like_file
    state = dict(state)
    if change == "shape":
        state["layer3.1.conv1.weight"] = torch.zeros(256, 256, 1, 1)
    elif change == "missing":
        del state["layer4.2.bn2.running_var"]
    else:
        state["layer5.0.conv1.weight"] = torch.zeros(8)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    trunk = ResNet34Trunk()
    before = trunk.conv1.weight.clone()
    with pytest.raises(InputError, match=message) as err:
        load_imagenet_weights(trunk, path)
    assert str(err.value).startswith(f"{path}: ")
    assert torch.equal(trunk.conv1.weight, before)  # nothing copied


def test_missing_or_foreign_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="student.model.pretrained names no file"):
        load_imagenet_weights(ResNet34Trunk(), tmp_path / "absent.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(InputError, match="expected a state dict .* found list"):
        load_imagenet_weights(ResNet34Trunk(), tmp_path / "list.pth")


def _train_one_step(config: StudentConfig, split: Path, out_dir: Path) -> Path:
    """One GT-only step on one eighth-size frame, at a learning rate too small to move a weight visibly."""
    settings = load_settings(
        StudentTrainSettings,
        {
            "epochs": 1,
            "batch_size": 1,
            "frame_limit": 1,
            "image_scale": 8,
            "lr": 1.0e-12,
            "flip_probability": 0.0,
        },
        "student.train",
    )
    gt_only = load_settings(DistillSettings, {"xgd": {"mode": "off"}, "cld": {"mode": "off"}}, "distill")
    return train_student(anchor_grid(), config, settings, gt_only, split, out_dir, progress=False)


def test_training_starts_from_the_pretrained_file(synthetic_train_split, tmp_path, imagenet_like_file):
    path, state = imagenet_like_file
    trained = torch.load(
        _train_one_step(resnet_student(pretrained=str(path)), synthetic_train_split, tmp_path)
    )
    for key in ("conv1.weight", "layer3.0.downsample.0.weight", "layer4.2.conv2.weight"):
        torch.testing.assert_close(trained["model"][f"features.trunk.{key}"], state[key], rtol=0, atol=1e-9)
    assert trained["config"]["pretrained"] == str(path)


def test_training_refuses_a_missing_pretrained_file_before_any_work(synthetic_train_split, tmp_path):
    config = resnet_student(pretrained=str(tmp_path / "absent.pth"))
    with pytest.raises(InputError, match="student.model.pretrained names no file"):
        _train_one_step(config, synthetic_train_split, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ strides, forward
def _symmetrise(module: torch.nn.Module) -> None:
    """Make every conv kernel symmetric under flips of both image axes (a centred net then commutes with them)."""
    with torch.no_grad():
        for conv in module.modules():
            if isinstance(conv, torch.nn.Conv2d):
                w = conv.weight
                w.copy_((w + w.flip(-1) + w.flip(-2) + w.flip(-1, -2)) / 4)


@pytest.mark.parametrize("backbone", ["small", "resnet34"])
def test_feature_pixels_sit_where_the_lifting_expects(backbone):
    """Feature pixel (i, j) is centred on image pixel (s i, s j), s = config.feature_stride (the lifting's and
    the plane sweep's convention): with flip-symmetric kernels the features of a flipped image are the flipped
    features, for image sizes 1 mod s, exactly when every layer is centred that way."""
    config = tiny_student() if backbone == "small" else resnet_student()
    assert config.feature_stride == 4
    torch.manual_seed(0)
    model = StereoStudent(config, small_grid(16.0, 8.0))
    assert model.lifter.stride == config.feature_stride
    extractor = model.features.eval()
    _symmetrise(extractor)
    images = torch.rand(1, 3, 21, 37)  # 4 * 5 + 1, 4 * 9 + 1
    with torch.no_grad():
        direct = extractor(images)
        flipped = extractor(images.flip(-1, -2))
    for got, mirrored in zip(direct, flipped, strict=True):
        assert got.shape[-2:] == (6, 10)  # ceil(H / 4), ceil(W / 4)
        torch.testing.assert_close(
            mirrored, got.flip(-1, -2), rtol=1e-4, atol=1e-4
        )  # an off-centre stem: 2.2


def test_resnet34_student_runs_forward_and_backward():
    torch.manual_seed(0)
    config = resnet_student()
    model = StereoStudent(config, small_grid(16.0, 8.0))
    assert isinstance(model.features, ResNet34FeatureExtractor)
    left, right = torch.rand(2, 1, 3, 30, 62).unbind(0)
    P2 = torch.tensor([[[60.0, 0.0, 31.0, 3.6], [0.0, 60.0, 15.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])
    out = model(left, right, P2, torch.tensor([0.54]))
    assert out.depth.shape == (1, 8, 16)  # ceil(30 / 4), ceil(62 / 4)
    assert out.bev_features.shape == (1, config.bev_channels, 16, 16)
    (out.depth.sum() + out.head.cls.sum()).backward()
    assert model.features.trunk.conv1.weight.grad.abs().sum() > 0
    assert all(math.isfinite(float(t.detach().sum())) for t in (out.depth, out.bev_features))


# ------------------------------------------------------------------------------------------ settings
def test_backbone_settings_are_checked():
    def load(**values) -> StudentConfig:
        return load_settings(StudentConfig, values, "student.model")

    with pytest.raises(
        InputError, match=r"student.model.backbone: expected one of small, resnet34, got 'vgg'"
    ):
        load(backbone="vgg")
    with pytest.raises(InputError, match="student.model.backbone_channels: configures the small trunk only"):
        load(backbone="resnet34", backbone_channels=[64, 128])
    with pytest.raises(
        InputError, match="student.model.pretrained: pretrained weights are for backbone: resnet34"
    ):
        load(pretrained="resnet34.pth")
    with pytest.raises(InputError, match="student.model.pretrained: expected a string or null"):
        load(backbone="resnet34", pretrained=3)
    config = load(backbone="resnet34", pretrained="weights/resnet34.pth")
    assert load(**to_dict(config)) == config and to_dict(config)["backbone"] == "resnet34"


def test_default_network_is_unchanged():
    """The small trunk stays the default, and its saved config and seeded weights are those from before the
    resnet34 trunk existed (the hash was taken on the commit before it, bbe6cfe)."""
    config = StudentConfig()
    assert config.backbone == "small" and config.pretrained is None
    assert "backbone" not in to_dict(config) and "pretrained" not in to_dict(config)
    torch.manual_seed(0)
    model = StereoStudent(config, small_grid(16.0, 8.0))
    assert type(model.features) is FeatureExtractor
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.numpy().tobytes())
    assert digest.hexdigest() == "73863647910dcbb290fd9de5b35f6dbaa0555aafb25d336f337b29a60829d01f"
    assert torch.rand(1).item() == 0.15027213096618652  # the same RNG draws consumed


def test_kitti_preset_selects_the_resnet34_trunk():
    config = load_params(KITTI_PARAMS).student.model
    assert config.backbone == "resnet34" and config.pretrained is None and config.feature_stride == 4

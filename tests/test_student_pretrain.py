"""Depth pretraining of the student's stereo trunk: what trunk.pt holds, how a student starts from it, resume,
refusal of a trunk made otherwise, and the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from cache_fixtures import anchor_grid
from student_fixtures import TINY_STUDENT_TRAIN, tiny_student

from stereodistill.distill.settings import DistillSettings
from stereodistill.errors import InputError
from stereodistill.params import load_params
from stereodistill.settings import load_settings, to_dict
from stereodistill.student.model import TRUNK_MODULES
from stereodistill.student.pretrain import pretrain_trunk
from stereodistill.student.settings import StudentPretrainSettings, StudentTrainSettings
from stereodistill.student.train import train_student

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = tiny_student()
TRAIN = StudentTrainSettings(**{**TINY_STUDENT_TRAIN, "frame_limit": 2, "flip_probability": 0.5, "seed": 5})
GT_ONLY = load_settings(DistillSettings, {"xgd": {"mode": "off"}, "cld": {"mode": "off"}}, "distill")


def pretrain_settings(**overrides) -> StudentPretrainSettings:
    return StudentPretrainSettings(**{"epochs": 4, "batch_size": 1, "warmup_epochs": 0.0, **overrides})


def _log(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _in_trunk(key: str) -> bool:
    return key.split(".", 1)[0] in TRUNK_MODULES


@pytest.fixture(scope="module")
def trunk(synthetic_train_split, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trunk")
    torch.set_num_threads(1)
    return pretrain_trunk(
        anchor_grid(),
        TINY,
        pretrain_settings(),
        TRAIN,
        synthetic_train_split,
        out,
        progress=False,
        device="cpu",
    )


def test_pretraining_learns_depth_and_saves_the_trunk_alone(trunk):
    rows = _log(trunk.parent / "loss_log.csv")
    assert len(rows) == 4 * 2  # 4 epochs of 2 frames, one a step
    epoch_means = [
        [sum(float(r[k]) for r in rows if r["epoch"] == str(e)) / 2 for e in range(1, 5)]
        for k in ("depth", "depth_abs_error")
    ]
    depth, error = epoch_means
    assert all(b < a for a, b in zip(depth, depth[1:], strict=False)), depth  # deterministic on one thread
    assert depth[-1] < depth[0] - 0.05 and error[-1] < error[0], epoch_means
    ckpt = torch.load(trunk, weights_only=True)
    assert ckpt["kind"] == "trunk" and ckpt["config"] == to_dict(TINY)
    assert ckpt["model"] and all(_in_trunk(k) for k in ckpt["model"])
    assert {k.split(".", 1)[0] for k in ckpt["model"]} == set(TRUNK_MODULES)


def test_a_student_starts_from_the_trunk_and_its_seed_keeps_the_rest(
    trunk, synthetic_train_split, tmp_path, monkeypatch
):
    import stereodistill.student.train as trainer

    starts: list[dict[str, torch.Tensor]] = []

    class Recording(trainer.TrainingRun):
        def start(self, resume: bool, restart_on_mismatch: bool) -> None:
            super().start(resume, restart_on_mismatch)
            starts.append({k: v.clone() for k, v in self.model.state_dict().items()})

    monkeypatch.setattr(trainer, "TrainingRun", Recording)
    grid = anchor_grid()
    for name, source in (("scratch", None), ("pretrained", trunk)):
        train_student(
            grid,
            TINY,
            TRAIN,
            GT_ONLY,
            synthetic_train_split,
            tmp_path / name,
            progress=False,
            device="cpu",
            trunk=source,
            pretrain=pretrain_settings(),
        )
    scratch, pretrained = starts
    saved = torch.load(trunk, weights_only=True)["model"]
    for key, value in pretrained.items():
        if _in_trunk(key):
            assert torch.equal(value, saved[key]), key
        else:
            assert torch.equal(value, scratch[key]), key  # the seed's own initial weights
    assert any(not torch.equal(scratch[k], saved[k]) for k in saved)


def test_a_trunk_made_otherwise_is_refused_naming_what_differs(trunk, synthetic_train_split, tmp_path):
    grid = anchor_grid()

    def train(**kwargs):
        args = dict(progress=False, device="cpu", trunk=trunk, pretrain=pretrain_settings())
        args.update(kwargs)
        config = args.pop("config", TINY)
        settings = args.pop("settings", TRAIN)
        train_student(grid, config, settings, GT_ONLY, synthetic_train_split, tmp_path / "s", **args)

    with pytest.raises(InputError, match=r"config\.bev_channels"):
        train(config=tiny_student(bev_channels=16))
    with pytest.raises(InputError, match=r"pretrain\.epochs"):
        train(pretrain=pretrain_settings(epochs=5))
    with pytest.raises(InputError, match=r"images\.image_scale"):
        train(settings=StudentTrainSettings(**{**to_dict(TRAIN), "image_scale": 2}))
    with pytest.raises(InputError, match="stereodistill pretrain-student"):
        train(trunk=tmp_path / "missing" / "trunk.pt")
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_resumed_pretraining_equals_uninterrupted(trunk, synthetic_train_split, tmp_path):
    grid, settings = anchor_grid(), pretrain_settings()
    args = (grid, TINY, settings, TRAIN, synthetic_train_split, tmp_path)
    pretrain_trunk(*args, progress=False, device="cpu", stop_after_epoch=2)
    assert not (tmp_path / "trunk.pt").exists()
    resumed = pretrain_trunk(*args, resume=True, progress=False, device="cpu")
    a, b = torch.load(trunk, weights_only=True)["model"], torch.load(resumed, weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(_log(trunk.parent / "loss_log.csv")) == strip(_log(tmp_path / "loss_log.csv"))


def test_zero_epochs_writes_an_empty_trunk_and_students_train_from_scratch(synthetic_train_split, tmp_path):
    path = pretrain_trunk(
        anchor_grid(),
        TINY,
        pretrain_settings(epochs=0),
        TRAIN,
        synthetic_train_split,
        tmp_path,
        progress=False,
    )
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["model"] == {} and ckpt["pretrain"]["epochs"] == 0
    assert not (tmp_path / "checkpoint.pt").exists()


def test_cli_pretrains_then_trains_from_the_trunk(synthetic_train_split, tmp_path, run_cli, monkeypatch):
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["data"]["prepared_dir"] = str(Path(synthetic_train_split).parent)
    params["student"].update(
        out_dir=str(tmp_path / "student"),
        pretrain={"out_dir": str(tmp_path / "pretrain"), "epochs": 1, "batch_size": 2},
        model=to_dict(TINY),
        train=to_dict(TRAIN),
    )
    params["distill"] = to_dict(GT_ONLY)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    assert Path(load_params(path).data.prepared_split("train")) == Path(synthetic_train_split)
    result = run_cli("train-student", "--params", path, "--no-progress")
    assert result.exit_code != 0 and "pretrain-student" in result.output
    result = run_cli("pretrain-student", "--params", path, "--no-progress")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pretrain" / "trunk.pt").is_file()
    result = run_cli("train-student", "--params", path, "--no-progress")
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run_cli("pretrain-student", "--params", path, "--no-progress")
    assert result.exit_code != 0 and "without torchrun" in result.output
    student = torch.load(tmp_path / "student" / "student.pt", weights_only=True)
    assert student["kind"] == "student"

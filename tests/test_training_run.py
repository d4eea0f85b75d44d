"""The resumable run both trainers share (stereodistill/training/run.py), on a one-layer model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from stereodistill.cache.ranks import Ranks
from stereodistill.errors import InputError
from stereodistill.training.run import TrainingRun

COLUMNS = ["epoch", "loss"]


def _run(out_dir: Path, identity: dict, epochs: int = 3, **kwargs) -> TrainingRun:
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return TrainingRun("toy", out_dir, identity, model, optimizer, scheduler, epochs, COLUMNS, **kwargs)


def _train(run: TrainingRun, resume: bool = False, restart_on_mismatch: bool = False) -> Path:
    run.start(resume, restart_on_mismatch)
    for epoch in run.epochs():
        loss = run.model(torch.ones(1, 2)).square().sum()
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        run.log_rows.append({"epoch": epoch, "loss": f"{float(loss.detach()):.6f}"})
        run.end_epoch(epoch, f"toy epoch {epoch}")
    return run.finish({"kind": "toy", "model": run.model.state_dict()})


def _epochs_logged(path: Path) -> list[str]:
    with path.open() as f:
        return [row["epoch"] for row in csv.DictReader(f)]


def test_stopped_then_resumed_equals_uninterrupted(tmp_path):
    full = _train(_run(tmp_path / "full", {"lr": 0.1}))
    assert full == tmp_path / "full" / "toy.pt"
    stopped = _train(_run(tmp_path / "part", {"lr": 0.1}, stop_after_epoch=1))
    assert stopped == tmp_path / "part" / "checkpoint.pt" and not (tmp_path / "part" / "toy.pt").exists()
    assert torch.load(stopped, weights_only=True)["kind"] == "toy-training"
    resumed = _train(_run(tmp_path / "part", {"lr": 0.1}), resume=True)
    a, b = (torch.load(p, weights_only=True)["model"] for p in (full, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _epochs_logged(tmp_path / "part" / "loss_log.csv") == ["1", "2", "3"]
    assert (tmp_path / "part" / "loss_log.csv").read_bytes() == (
        tmp_path / "full" / "loss_log.csv"
    ).read_bytes()


def test_changed_identity_is_refused_or_restarted(tmp_path):
    _train(_run(tmp_path, {"lr": 0.1, "data": "a"}, stop_after_epoch=2))
    with pytest.raises(InputError, match=r"the toy's data changed") as refused:
        _train(_run(tmp_path, {"lr": 0.1, "data": "b"}), resume=True)
    assert str(tmp_path / "checkpoint.pt") in str(refused.value)
    restarted = _run(tmp_path, {"lr": 0.1, "data": "b"})
    _train(restarted, resume=True, restart_on_mismatch=True)
    assert restarted.start_epoch == 0 and _epochs_logged(tmp_path / "loss_log.csv") == ["1", "2", "3"]


def test_only_the_lead_rank_writes(tmp_path):
    other = Ranks(rank=1, world=1, device=torch.device("cpu"))  # world 1: the barrier is a no-op
    path = _train(_run(tmp_path / "out", {"lr": 0.1}, ranks=other))
    assert path == tmp_path / "out" / "toy.pt" and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("start", "stop", "expected"),
    [(0, None, [1, 2, 3]), (0, 1, [1]), (1, 1, [2]), (2, 1, [3]), (0, 5, [1, 2, 3]), (3, None, [])],
)
def test_epochs_left(tmp_path, start, stop, expected):
    run = _run(tmp_path, {}, stop_after_epoch=stop)
    run.start_epoch = start
    assert list(run.epochs()) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda_keeps_adamw_step_counts_on_the_cpu(tmp_path):
    """As in a fresh run: a step count on the GPU costs a host sync per parameter and step."""

    def run_on_cuda(**kwargs) -> TrainingRun:
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1).cuda()
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return TrainingRun("toy", tmp_path, {}, model, optimizer, scheduler, 2, COLUMNS, **kwargs)

    first = run_on_cuda(stop_after_epoch=1)
    first.start(False, False)
    loss = first.model(torch.ones(1, 2, device="cuda")).square().sum()
    loss.backward()
    first.optimizer.step()
    first.end_epoch(1, "toy epoch 1")
    resumed = run_on_cuda()
    resumed.start(True, False)
    assert resumed.start_epoch == 1
    for state in resumed.optimizer.state.values():
        assert state["step"].device.type == "cpu" and state["exp_avg"].device.type == "cuda"


def _train_by_steps(run: TrainingRun, resume: bool = False, steps_per_epoch: int = 2) -> list[torch.Tensor]:
    """Train with :meth:`TrainingRun.step`; return the model's flattened weights after every step."""
    run.start(resume, False)
    after_step = []
    for epoch in run.epochs():
        for _ in range(steps_per_epoch):
            run.step(run.model(torch.ones(1, 2)).square().sum(), grad_clip=10.0)
            after_step.append(torch.cat([p.detach().flatten() for p in run.model.parameters()]))
        run.end_epoch(epoch, f"toy epoch {epoch}")
    run.finish({"kind": "toy", "model": run.final_model.state_dict()})
    return after_step


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_weight_average_is_the_exponential_moving_average_of_the_steps(tmp_path):
    decay = 0.8
    run = _run(tmp_path, {}, ema_decay=decay)
    trajectory = _train_by_steps(run)
    expected = trajectory[0]  # the average starts as a copy of the weights after the first step
    for weights in trajectory[1:]:
        expected = decay * expected + (1 - decay) * weights
    assert torch.allclose(_flat(run.final_model), expected, atol=1e-6)
    assert not torch.allclose(_flat(run.final_model), trajectory[-1], atol=1e-3)  # the average lags the model
    saved = torch.load(tmp_path / "toy.pt", weights_only=True)["model"]
    assert torch.equal(torch.cat([saved["weight"].flatten(), saved["bias"]]), _flat(run.final_model))
    assert "averaged" in torch.load(tmp_path / "checkpoint.pt", weights_only=True)


def test_weight_average_survives_a_resume(tmp_path):
    full = _run(tmp_path / "full", {}, ema_decay=0.8)
    _train_by_steps(full)
    _train_by_steps(_run(tmp_path / "part", {}, ema_decay=0.8, stop_after_epoch=1))
    resumed = _run(tmp_path / "part", {}, ema_decay=0.8)
    _train_by_steps(resumed, resume=True)
    assert resumed.start_epoch == 1
    assert torch.equal(_flat(resumed.final_model), _flat(full.final_model))
    assert torch.equal(_flat(resumed.model), _flat(full.model))


def test_without_an_average_the_final_model_is_the_model(tmp_path):
    run = _run(tmp_path, {})
    assert run.final_model is run.model and run.averaged is None
    with pytest.raises(ValueError, match="ema_decay"):
        _run(tmp_path, {}, ema_decay=1.0)

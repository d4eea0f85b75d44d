"""Crash safety: SIGKILL at chosen moments of prepare, train-teacher, cache-teacher and train-student; a full
disk during cache writes; two writers and two readers on one store.

Every command runs as the real CLI in a subprocess (one thread). Each kill lands on an *event*: something the
run does that the test sees on disk (its temporary file appears, an epoch reaches the loss log, a checkpoint
holds an epoch, a shard's first chunk or its completion record is written), never after a delay, so where it
lands does not depend on how fast the machine is. Each event leaves work after it (at least an epoch or a
shard, a second or more; prepare's packing, about 0.1 s), so the watcher, which looks every 2 ms, kills before
the end. Which events a test uses is drawn from the command's list with a fixed seed (see ``_events``): kills
hit the start, the moment between a loss log and its checkpoint, and the middle of a shard's writes. After a
kill nothing that DVC or a reader could take as finished exists; rerunning the same command completes and gives
the reference's outputs.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr
from cache_fixtures import SMALL, anchor_grid, assert_stores_equal, store_arrays
from student_fixtures import NO_PRETRAINING, TINY_STUDENT_MODEL, TINY_STUDENT_TRAIN

from stereodistill.cache.lock import lock_path
from stereodistill.cache.run import cache_teacher_from_params
from stereodistill.errors import OutputError
from stereodistill.params import load_params, read_params_yaml
from stereodistill.settings import to_dict

EXE = Path(sys.executable).parent / "stereodistill"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
KILLS = 3  # events per command in the slow variant
POLL_SECONDS = 0.002  # between two looks at the files a run writes
PATIENCE_SECONDS = 600.0  # a run that has not reached its event by then fails the test


def _cli(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EXE), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout
    )


@dataclass(frozen=True)
class Event:
    """Something a run does that shows on disk. ``seen(out)`` (``out``: the run's output path) holds from the
    moment it happens to the end of the run, so a late look sees it too."""

    what: str
    seen: Callable[[Path], bool]


def _start(args: list[str], stderr: Path) -> subprocess.Popen:
    with stderr.open("wb") as err:
        return subprocess.Popen([str(EXE), *args], env=ENV, stdout=subprocess.DEVNULL, stderr=err)


def _await(proc: subprocess.Popen, event: Event, out: Path, stderr: Path) -> None:
    """Return once ``event`` is seen; fail if the run ends first or ``PATIENCE_SECONDS`` pass."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not event.seen(out):
        if proc.poll() is not None:
            tail = stderr.read_text(errors="replace")[-2000:]
            pytest.fail(f"{proc.args[1]} ended (exit {proc.returncode}) before {event.what}:\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"{proc.args[1]}: {event.what} was not seen within {PATIENCE_SECONDS:.0f} s")
        time.sleep(POLL_SECONDS)


def _kill_at(args: list[str], event: Event, out: Path) -> None:
    """Start ``args`` and SIGKILL it as soon as ``event`` is seen."""
    stderr = out.parent / f".{out.name}.stderr"
    proc = _start(args, stderr)
    try:
        _await(proc, event, out, stderr)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        stderr.unlink()


def _events(name: str, events: list[Event], kills: int) -> list[Event]:
    """``kills`` of ``events``, in an order drawn with a fixed seed (distinct while there are enough)."""
    order = random.Random(f"{name}-2026").sample(events, len(events))
    return [order[i % len(order)] for i in range(kills)]


def _params_file(params: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(params))
    return path


# ------------------------------------------------------------------------------------------ prepare
# One event per command in the fast suite, three behind the slow marker.
KILL_COUNTS = [1, pytest.param(KILLS, marks=pytest.mark.slow, id="3-kills")]

# Packing four frames into the temporary file takes about a tenth of a second after it appears (the frames were
# validated before), so the one event a run shows before its end is the file's appearance.
PREPARE_EVENTS = [
    Event(
        "the temporary file appeared",
        lambda out: out.exists() or any(out.parent.glob(f".{out.name}.tmp-*")),
    )
]


@pytest.mark.parametrize("kills", KILL_COUNTS)
def test_prepare_killed_at_working_events_reruns_to_the_same_bytes(synthetic_train_split, tmp_path, kills):
    root = Path(synthetic_train_split).parent / "data"
    split_file = root / "ImageSets" / "train.txt"

    def args(out: Path) -> list[str]:
        return [
            "prepare",
            "--root",
            str(root),
            "--split-file",
            str(split_file),
            "--out",
            str(out),
            "--no-progress",
        ]

    reference = tmp_path / "reference" / "train.h5"
    reference.parent.mkdir()
    result = _cli(*args(reference))
    assert result.returncode == 0, result.stderr
    killed = 0
    for i, event in enumerate(_events("prepare", PREPARE_EVENTS, kills)):
        out = tmp_path / f"run{i}" / "train.h5"
        out.parent.mkdir()
        _kill_at(args(out), event, out)
        if not out.exists():
            killed += 1  # killed mid-write: nothing under the output name
            assert list(out.parent.glob(".train.h5.tmp-*")), "the dead writer's temporary file"
        else:  # killed after the rename: the file is whole
            assert out.read_bytes() == reference.read_bytes()
        result = _cli(*args(out))
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == reference.read_bytes()
        assert [p.name for p in out.parent.iterdir()] == ["train.h5"], "the dead writer's temp file stays"
    assert killed >= 1, "every kill came after the output was renamed into place"


# ------------------------------------------------------------------------------------------ training
def _teacher_params(split: Path, out_dir: Path) -> dict:
    grid = anchor_grid()
    return {
        "data": {"prepared_dir": str(split.parent)},
        "grid": grid.to_dict(),
        "teacher": {
            "out_dir": str(out_dir),
            "model": to_dict(SMALL),
            "train": {
                "epochs": 3,
                "batch_size": 2,
                "lr": 0.003,
                "seed": 0,
                "augment": {
                    "flip_probability": 0.5,
                    "rotation": [-0.3, 0.3],
                    "scale": [0.95, 1.05],
                    "gt_sampling": None,
                },
            },
        },
    }


def _epochs_logged(path: Path, column: str) -> list[int]:
    lines = path.read_text().splitlines()
    index = lines[0].split(",").index(column)
    return [int(line.split(",")[index]) for line in lines[1:]]


def _logged_epoch(out_dir: Path) -> int:
    """The last epoch in the run's loss log (0 before the first); the log is replaced whole, never half-written."""
    log = out_dir / "loss_log.csv"
    return max(_epochs_logged(log, "epoch"), default=0) if log.exists() else 0


def _checkpoint_epoch(out_dir: Path) -> int:
    """The epoch ``checkpoint.pt`` holds (0 before the first); it is written after that epoch's log rows."""
    if _logged_epoch(out_dir) == 0 or not (out_dir / "checkpoint.pt").exists():
        return 0
    return int(torch.load(out_dir / "checkpoint.pt", weights_only=True)["epoch"])


# Three epochs; each event leaves at least the last epoch to run.
TRAINING_EVENTS = [
    Event("the output folder appeared", Path.exists),
    Event("epoch 1 reached the loss log", lambda out: _logged_epoch(out) >= 1),
    Event("the checkpoint holds epoch 1", lambda out: _checkpoint_epoch(out) >= 1),
    Event("epoch 2 reached the loss log", lambda out: _logged_epoch(out) >= 2),
    Event("the checkpoint holds epoch 2", lambda out: _checkpoint_epoch(out) >= 2),
]


def _training_killed_then_resumed(
    command: str, final_name: str, params_for: Callable[[Path], dict], tmp_path: Path, kills: int
) -> list[tuple[Path, Path]]:
    """Kill ``command`` at seeded events, rerun it with ``--resume``; return (reference, resumed) output folders."""
    ref_dir = tmp_path / "reference"
    ref_params = _params_file(params_for(ref_dir), tmp_path / "reference.yaml")
    result = _cli(command, "--params", ref_params, "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    pairs = []
    for i, event in enumerate(_events(command, TRAINING_EVENTS, kills)):
        out_dir = tmp_path / f"run{i}"
        params = _params_file(params_for(out_dir), tmp_path / f"run{i}.yaml")
        _kill_at([command, "--params", str(params), "--no-progress"], event, out_dir)
        assert not (out_dir / final_name).exists(), f"the final model exists after a kill when {event.what}"
        if (out_dir / "checkpoint.pt").exists():  # written atomically: always loadable
            assert "model" in torch.load(out_dir / "checkpoint.pt", weights_only=True)
        result = _cli(command, "--params", params, "--resume", "--no-progress")
        assert result.returncode == 0, result.stderr[-3000:]
        assert not list(out_dir.glob(".*.tmp-*")), "the dead writer's temp file stays"
        pairs.append((ref_dir, out_dir))
    return pairs


@pytest.mark.parametrize("kills", KILL_COUNTS)
def test_train_teacher_killed_at_working_events_resumes_to_the_same_epochs(
    synthetic_train_split, tmp_path, kills
):
    pairs = _training_killed_then_resumed(
        "train-teacher",
        "teacher.pt",
        lambda out: _teacher_params(Path(synthetic_train_split), out),
        tmp_path,
        kills,
    )
    for reference, resumed in pairs:
        a = torch.load(reference / "teacher.pt", weights_only=True)
        b = torch.load(resumed / "teacher.pt", weights_only=True)
        assert a["epoch"] == b["epoch"] == 3
        assert _epochs_logged(resumed / "loss_log.csv", "epoch") == [1, 2, 3]
        for key in a["model"]:
            torch.testing.assert_close(b["model"][key], a["model"][key], atol=1e-4, rtol=1e-4, msg=key)


def _student_params(cache_setup: dict, out_dir: Path) -> dict:
    params = read_params_yaml(Path(cache_setup["params_path"]).read_text())
    params["student"] = {
        "out_dir": str(out_dir),
        "pretrain": dict(NO_PRETRAINING),
        "model": dict(TINY_STUDENT_MODEL),
        "train": {**TINY_STUDENT_TRAIN, "epochs": 3, "seed": 3, "lr": 0.01},
    }
    params["distill"] = {"xgd": {"mode": "xgd"}, "cld": {"mode": "diagonal"}}
    return params


@pytest.mark.parametrize("kills", KILL_COUNTS)
def test_train_student_killed_at_working_events_resumes_bitwise(teacher_cache_setup, tmp_path, kills):
    pairs = _training_killed_then_resumed(
        "train-student", "student.pt", lambda out: _student_params(teacher_cache_setup, out), tmp_path, kills
    )
    for reference, resumed in pairs:
        a = torch.load(reference / "student.pt", weights_only=True)
        b = torch.load(resumed / "student.pt", weights_only=True)
        assert a["epoch"] == b["epoch"] == 3
        for key in a["model"]:
            torch.testing.assert_close(b["model"][key], a["model"][key], atol=0, rtol=0, msg=key)
        strip = [line.rsplit(",", 1)[0] for line in (resumed / "loss_log.csv").read_text().splitlines()]
        assert strip == [
            line.rsplit(",", 1)[0] for line in (reference / "loss_log.csv").read_text().splitlines()
        ]


# ------------------------------------------------------------------------------------------ the cache
def _cache_params(setup: dict, store: Path, **cache: object) -> dict:
    params = read_params_yaml(Path(setup["params_path"]).read_text())
    params["cache"].update(store=str(store), frames_per_shard=1, **cache)
    return params


@pytest.fixture(scope="module")
def one_frame_shards(teacher_cache_setup, tmp_path_factory) -> Path:
    """The reference store with one frame per shard (four shards): the CLI run without interruption, one thread
    like every subprocess here (other thread counts round the teacher's sums differently: a logit step apart)."""
    work = tmp_path_factory.mktemp("reference")
    store = work / "reference.zarr"
    result = _cli(
        "cache-teacher", "--params", _params_file(_cache_params(teacher_cache_setup, store), work / "p.yaml")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return store


def _cache_complete(store: Path) -> bool:
    return (store / "zarr.json").exists() and bool(
        zarr.open_group(store, mode="r", use_consolidated=False).attrs.get("complete")
    )


# Four shards of one frame; each event leaves at least the last two shards to compute and write.
CACHE_EVENTS = [
    Event("the store appeared", lambda store: (store / "zarr.json").exists()),
    *(
        event
        for shard in (0, 1)
        for event in (
            Event(
                f"shard {shard}'s first chunk was written",
                lambda store, shard=shard: (store / "cls_logits" / f"c.{shard}.0.0.0").exists(),
            ),
            Event(
                f"shard {shard} was marked complete",
                lambda store, shard=shard: (store / "shard_complete" / f"c.{shard}").exists(),
            ),
        )
    ),
]


@pytest.mark.parametrize("kills", KILL_COUNTS)
def test_cache_teacher_killed_at_working_events_reruns_to_the_same_store(
    teacher_cache_setup, one_frame_shards, tmp_path, kills
):
    def args(store: Path) -> list[str]:
        params = _params_file(_cache_params(teacher_cache_setup, store), store.with_suffix(".yaml"))
        return ["cache-teacher", "--params", str(params), "--no-progress"]

    for i, event in enumerate(_events("cache-teacher", CACHE_EVENTS, kills)):
        store = tmp_path / f"run{i}.zarr"
        _kill_at(args(store), event, store)
        assert not _cache_complete(store), f"the store says it is complete after a kill when {event.what}"
        result = _cli(*args(store))
        assert result.returncode == 0, result.stderr[-3000:]
        assert_stores_equal(one_frame_shards, store)
        assert not list(store.rglob("*.partial")) and not lock_path(store).exists()


def test_a_second_cache_writer_is_refused_while_the_first_finishes(
    teacher_cache_setup, one_frame_shards, tmp_path
):
    store = tmp_path / "store.zarr"
    params = _params_file(_cache_params(teacher_cache_setup, store), tmp_path / "params.yaml")
    stderr = tmp_path / "first.stderr"
    first = _start(["cache-teacher", "--params", str(params), "--no-progress"], stderr)
    try:
        _await(first, Event("the lock was taken", lambda store: lock_path(store).exists()), store, stderr)
        first.send_signal(signal.SIGSTOP)  # a slow first writer: paused while it holds the lock
        try:
            second = _cli("cache-teacher", "--params", params, "--no-progress")
        finally:
            first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=PATIENCE_SECONDS) == 0, stderr.read_text(errors="replace")[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.returncode == 1
    assert "another writer holds this cache" in second.stderr and str(lock_path(store)) in second.stderr
    assert "Traceback" not in second.stderr
    assert_stores_equal(one_frame_shards, store)


def _watch_store(store: Path, reference: dict[str, np.ndarray], stop: threading.Event, seen: list) -> None:
    """A reader: whenever a shard (one frame) reads as complete, its data must already be the reference's."""
    while not stop.is_set():
        if not (store / "shard_complete" / "zarr.json").exists():
            time.sleep(0.001)
            continue
        root = zarr.open_group(store, mode="r", use_consolidated=False)
        complete = root["shard_complete"][:]
        for frame in np.flatnonzero(complete):
            for name in ("cls_logits", "covered_count", "covered_index", "boxes", "dir_logits"):
                got = root[name][frame]
                assert got.tobytes() == reference[name][frame].tobytes(), (name, frame)
        seen.append(int(complete.sum()))


def test_readers_during_a_write_never_see_a_frame_complete_before_its_data(
    teacher_cache_setup, one_frame_shards, tmp_path
):
    reference = store_arrays(one_frame_shards)
    store = tmp_path / "store.zarr"
    params = _params_file(_cache_params(teacher_cache_setup, store), tmp_path / "params.yaml")
    stop, errors = threading.Event(), []
    seen: list[list[int]] = [[], []]

    def reader(k: int) -> None:
        try:
            _watch_store(store, reference, stop, seen[k])
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            errors.append(err)

    readers = [threading.Thread(target=reader, args=(k,)) for k in range(2)]
    for thread in readers:
        thread.start()
    try:
        result = _cli("cache-teacher", "--params", params, "--no-progress")
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert result.returncode == 0, result.stderr[-3000:]
    assert not errors, errors[0]
    n = len(reference["shard_complete"])
    partial_views = [c for s in seen for c in s if 0 < c < n]
    assert partial_views, f"the readers never saw the store part-written: {seen}"


# ------------------------------------------------------------------------------------------ a full disk
def test_disk_full_during_cache_write_is_reported_and_the_store_resumes(
    teacher_cache_setup, one_frame_shards, tmp_path, monkeypatch, run_cli, one_thread
):
    """ENOSPC injected into zarr's file writes after the first shard's data (works without root)."""
    import zarr.storage._local as local

    store = tmp_path / "store.zarr"
    params = _params_file(_cache_params(teacher_cache_setup, store), tmp_path / "params.yaml")
    put = local._put
    calls = {"n": 0}

    def put_until_full(path, value, exclusive=False):
        if "shard_complete" in str(path) and not str(path).endswith("zarr.json"):
            calls["n"] += 1
            if calls["n"] > 1:  # the second shard's completion record finds the disk full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return put(path, value, exclusive)

    monkeypatch.setattr(local, "_put", put_until_full)
    result = run_cli("cache-teacher", "--params", params, "--no-progress")
    assert result.exit_code == 1
    assert "No space left on device" in result.stderr and str(store) in result.stderr
    assert "resumable" in result.stderr
    with pytest.raises(OutputError, match="1 complete shard"):
        calls["n"] = 1
        cache_teacher_from_params(load_params(params), progress=False)
    monkeypatch.setattr(local, "_put", put)
    root = zarr.open_group(store, mode="r", use_consolidated=False)
    assert root.attrs.get("complete") is not True and root["shard_complete"][:].tolist() == [1, 0, 0, 0]
    assert not lock_path(store).exists()
    result = run_cli("cache-teacher", "--params", params, "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert_stores_equal(one_frame_shards, store)


def _mount_tmpfs(where: Path, size: int) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    return done.returncode == 0


def test_a_real_full_tmpfs_during_cache_write(teacher_cache_setup, one_frame_shards, tmp_path):
    """The same on a real size-limited filesystem (a tmpfs smaller than the store); needs root to mount."""
    from stereodistill.cache.store import bytes_on_disk

    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, max(bytes_on_disk(one_frame_shards) // 2, 64 * 1024)):
        pytest.skip("cannot mount a tmpfs here (needs root); the ENOSPC-injection test covers the code path")
    try:
        store = disk / "store.zarr"
        params = _params_file(_cache_params(teacher_cache_setup, store), tmp_path / "params.yaml")
        result = _cli("cache-teacher", "--params", params, "--no-progress")
        assert result.returncode == 1, result.stderr[-3000:]
        assert "No space left on device" in result.stderr and str(store) in result.stderr
        assert "Traceback" not in result.stderr
        done = zarr.open_group(store, mode="r", use_consolidated=False)["shard_complete"][:]
        assert done.sum() < len(done)
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        result = _cli("cache-teacher", "--params", params, "--no-progress")
        assert result.returncode == 0, result.stderr[-3000:]
        assert_stores_equal(one_frame_shards, store)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)

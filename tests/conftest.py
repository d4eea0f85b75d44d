"""Shared fixtures: the hand-made KITTI-layout dataset (tests/kitti_fixtures.py) and a CLI runner."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from kitti_fixtures import KittiFixture, write_kitti_dataset


@pytest.fixture(scope="session")
def kitti_readonly(tmp_path_factory: pytest.TempPathFactory) -> KittiFixture:
    """The fixture dataset, written once per session. Do not modify its files; use ``kitti`` for that."""
    return write_kitti_dataset(tmp_path_factory.mktemp("kitti") / "kitti")


@pytest.fixture()
def kitti(kitti_readonly: KittiFixture, tmp_path: Path) -> KittiFixture:
    """A private copy of the fixture dataset that a test may damage."""
    root = tmp_path / "kitti"
    shutil.copytree(kitti_readonly.root, root)
    return KittiFixture(root, kitti_readonly.frames)


@pytest.fixture()
def run_cli() -> Callable[..., Result]:
    """Invoke ``stereodistill ARGS...`` in-process; stdout and stderr are kept apart (``result.stderr``)."""
    from stereodistill.cli import main

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def synthetic_train_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synthetic default-preset frames (seed 101: 33 cars), prepared into one HDF5 split."""
    from stereodistill.data.prepared import prepare_split
    from stereodistill.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synthetic4") / "data"
    generate_dataset(root, frames=4, seed=101, val_fraction=0.0, progress=False)
    out = root.parent / "train.h5"
    prepare_split(root, root / "ImageSets" / "train.txt", out, progress=False)
    return out


@pytest.fixture(scope="session")
def teacher_cache_setup(synthetic_train_split: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny teacher cache over ``synthetic_train_split`` (see tests/cache_fixtures.py). Read-only: copy to modify."""
    from cache_fixtures import build_teacher_cache

    return build_teacher_cache(synthetic_train_split, tmp_path_factory.mktemp("cache"))


@pytest.fixture()
def one_thread():
    """One intra-op thread: tiny convolutions run faster than on two contended threads (the 2-core test machine),
    and results are bitwise repeatable for a fixed thread count, as in the single-threaded subprocesses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

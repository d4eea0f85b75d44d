"""Shared fixtures: the hand-made KITTI-layout dataset (tests/kitti_fixtures.py) and a CLI runner."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
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
    from stereodistill.cli.data import data, prepare

    # The lead wires these into the main group; adding them here keeps the tests independent of that.
    for command in (data, prepare):
        if command.name not in main.commands:
            main.add_command(command)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke

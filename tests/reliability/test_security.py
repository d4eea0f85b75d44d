"""Security promises: checkpoints never run code (12), the teacher cache holds no pickles (13), and commands write
only to the output paths they are given (14)."""

from __future__ import annotations

import ast
import json
import os
import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch
import yaml
import zarr
from click.testing import Result
from kitti_fixtures import KittiFixture
from student_fixtures import NO_PRETRAINING, TINY_STUDENT_MODEL, TINY_STUDENT_TRAIN

from stereodistill.params import read_params_yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGE_SOURCES = sorted([*(REPO / "stereodistill").rglob("*.py"), *(REPO / "stages").glob("*.py")])


# ============================================================================================== 12 checkpoints
class CreatesMarker:
    """Unpickling this object calls ``open(marker, "w")``: the file appears if a loader runs code from a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return (open, (str(self.marker), "w"))


GLOBAL_NAME = f"{open.__module__}.{open.__qualname__}"  # what the refusal names: io.open


def write_hostile(path: Path, marker: Path, **fields: Any) -> Path:
    """A checkpoint with plausible ``fields`` and, among them, an object whose unpickling creates ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**fields, "extra": CreatesMarker(marker)}, path)
    return path


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_12_the_hostile_checkpoint_really_runs_code_when_unpickled(tmp_path):
    """The control: loaded without weights_only the payload runs, so the refusals below are not vacuous."""
    marker = tmp_path / "control_marker"
    path = write_hostile(tmp_path / "hostile.pt", marker, kind="teacher")
    torch.load(path, weights_only=False)  # the unsafe load this project never does
    assert marker.exists()


def _params(setup: dict, tmp_path: Path) -> dict:
    params = read_params_yaml(Path(setup["params_path"]).read_text())
    out = tmp_path / "out"
    params["teacher"]["out_dir"] = str(tmp_path / "teacher")
    params["teacher"]["train"].update(epochs=1, batch_size=2)
    params["student"].update(
        out_dir=str(tmp_path / "student"), pretrain=dict(NO_PRETRAINING), model=dict(TINY_STUDENT_MODEL)
    )
    params["student"]["train"].update(TINY_STUDENT_TRAIN, frame_limit=2)
    params["distill"]["xgd"]["mode"] = params["distill"]["cld"]["mode"] = "off"  # GT only: no cache needed
    params["cache"]["store"] = str(out / "cache.zarr")
    params["evaluate"].update(
        split="train",
        teacher_predictions=str(out / "teacher_pred"),
        teacher_metrics=str(out / "teacher.json"),
        teacher_breakdown=str(out / "teacher_breakdown.json"),
        student_predictions=str(out / "student_pred"),
        student_metrics=str(out / "student.json"),
        student_breakdown=str(out / "student_breakdown.json"),
    )
    return params


# entry point -> (the checkpoint it loads, relative to tmp_path; the command)
ENTRY_POINTS: dict[str, tuple[str, list[str]]] = {
    "cache-teacher (teacher load)": ("teacher/teacher.pt", ["cache-teacher"]),
    "teacher evaluate (teacher load)": ("teacher/teacher.pt", ["teacher", "evaluate"]),
    "student evaluate (student load)": ("student/student.pt", ["student", "evaluate"]),
    "train-teacher --resume": ("teacher/checkpoint.pt", ["train-teacher", "--resume"]),
    "train-student --resume": ("student/checkpoint.pt", ["train-student", "--resume"]),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_12_hostile_checkpoint_is_refused_and_never_run(run_cli, teacher_cache_setup, tmp_path, entry):
    relative, command = ENTRY_POINTS[entry]
    marker = tmp_path / "marker"
    kind = {"teacher.pt": "teacher", "student.pt": "student"}.get(Path(relative).name, "training")
    checkpoint = write_hostile(tmp_path / relative, marker, kind=kind, model={}, epoch=1)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params(teacher_cache_setup, tmp_path)))
    before = tree(checkpoint.parent)

    result = run_cli(*command, "--params", params, "--no-progress")

    assert not marker.exists(), "the checkpoint's code ran"
    assert result.exit_code != 0
    assert result.stderr.startswith(f"error: {checkpoint}: refusing to load"), result.stderr
    assert GLOBAL_NAME in result.stderr and "weights_only=True" in result.stderr
    assert tree(checkpoint.parent) == before  # the checkpoint's folder (the run's out_dir) is unchanged
    assert not (tmp_path / "out").exists()


def test_12_hostile_openpcdet_checkpoint_is_refused_and_never_run(run_cli, tmp_path):
    marker = tmp_path / "marker"
    checkpoint = write_hostile(
        tmp_path / "second.pth", marker, model_state={}, epoch=80, version="pcdet+0.6.0"
    )
    out = tmp_path / "out" / "teacher.pt"
    result = run_cli("teacher", "import-openpcdet", checkpoint, "--out", out)
    assert not marker.exists(), "the checkpoint's code ran"
    assert result.exit_code != 0
    assert result.stderr.startswith(f"error: {checkpoint}: refusing to load") and GLOBAL_NAME in result.stderr
    assert not out.parent.exists()


def _calls(tree_: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree_) if isinstance(node, ast.Call)]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str) -> Any:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "<expression>"
    return None


UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_unpickling(source: str, where: str) -> list[str]:
    """Every way ``source`` could unpickle code: torch.load without weights_only=True, pickle (other than catching
    pickle.UnpicklingError) and its cousins, allow_pickle=True, process-wide torch safe-globals registration."""
    problems = []
    module = ast.parse(source, where)
    for call in _calls(module):
        name, line = _dotted(call.func), f"{where}:{call.lineno}"
        if name in ("torch.load", "torch.serialization.load") and _keyword(call, "weights_only") is not True:
            problems.append(f"{line}: {name}() without weights_only=True")
        if _keyword(call, "allow_pickle") not in (None, False):
            problems.append(f"{line}: {name}(allow_pickle=...)")
        if _keyword(call, "weights_only") is False:
            problems.append(f"{line}: {name}(weights_only=False)")
        if name.endswith("add_safe_globals"):
            problems.append(f"{line}: {name}() widens what every later torch.load accepts")
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES and alias.name != "pickle":
                    problems.append(f"{where}:{node.lineno}: import {alias.name}")
        if isinstance(node, ast.ImportFrom):
            top = (node.module or "").split(".")[0]
            loads = [a.name for a in node.names if a.name == "load"]
            if top in UNSAFE_MODULES or (top == "torch" and loads):
                problems.append(f"{where}:{node.lineno}: from {node.module} import ...")
        # `import pickle` only to catch pickle.UnpicklingError.
        if (
            isinstance(node, ast.Attribute)
            and _dotted(node.value) == "pickle"
            and node.attr != "UnpicklingError"
        ):
            problems.append(f"{where}:{node.lineno}: pickle.{node.attr}")
    return problems


def test_12_the_static_check_catches_unsafe_loading():
    bad = """
import pickle, dill
import numpy as np
import torch
from torch import load
torch.load(p)
torch.load(p, weights_only=False)
pickle.loads(b)
np.load(p, allow_pickle=True)
torch.serialization.add_safe_globals([object])
"""
    flagged = {int(problem.split(":")[1]) for problem in unsafe_unpickling(bad, "bad.py")}
    assert flagged == {2, 5, 6, 7, 8, 9, 10}  # every line but the plain imports
    good = "import pickle\nimport torch\ntry:\n    torch.load(p, weights_only=True)\nexcept pickle.UnpicklingError:\n    pass\n"
    assert unsafe_unpickling(good, "good.py") == []


def test_12_package_source_never_unpickles_unsafely():
    """Static check of stereodistill/ and stages/ (see :func:`unsafe_unpickling`)."""
    problems = []
    for path in PACKAGE_SOURCES:
        problems += unsafe_unpickling(path.read_text(), str(path.relative_to(REPO)))
    assert problems == []
    assert any("torch.load" in path.read_text() for path in PACKAGE_SOURCES)  # the scan sees the loader


# ============================================================================================== 13 no pickle at rest
SAFE_CODECS = {"bytes", "blosc", "zstd", "gzip", "crc32c", "sharding_indexed", "transpose", "vlen-utf8"}


def _codec_names(codecs: list[dict]) -> list[str]:
    names = []
    for codec in codecs:
        names.append(codec["name"])
        configuration = codec.get("configuration", {})
        names += _codec_names(configuration.get("codecs", []))
        names += _codec_names(configuration.get("index_codecs", []))
    return names


def test_13_the_teacher_cache_holds_no_pickles(teacher_cache_setup):
    store = Path(teacher_cache_setup["params"]["cache"]["store"])
    assert not [p for p in store.rglob(".z*")], "Zarr v2 metadata (object codecs) in the store"
    metadata = sorted(store.rglob("zarr.json"))
    arrays = 0
    for path in metadata:
        node = json.loads(path.read_text())
        assert node["zarr_format"] == 3
        if node["node_type"] != "array":
            continue
        arrays += 1
        assert node["data_type"] in {"int16", "int32", "uint8", "float16", "float32", "string"}, path
        codecs = _codec_names(node["codecs"])
        assert set(codecs) <= SAFE_CODECS, (path, codecs)
    assert arrays == 13  # 9 + the 4 feature arrays (cache.features: [bev])
    root = zarr.open_group(store, mode="r", use_consolidated=False)
    for name, array in root.arrays():
        assert array.dtype.kind != "O", name


def test_13_the_prepared_split_holds_no_pickles(synthetic_train_split):
    with h5py.File(synthetic_train_split, "r") as f:
        datasets: list[h5py.Dataset] = []
        f.visititems(lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
        assert len(datasets) > 20
        for dataset in datasets:
            kind_ok = dataset.dtype.kind != "O" or h5py.check_string_dtype(dataset.dtype) is not None
            assert kind_ok, dataset.name
        for key, value in f.attrs.items():
            assert not (hasattr(value, "dtype") and value.dtype.kind == "O"), key


# ============================================================================================== 14 writes stay put
def snapshot(root: Path) -> dict[Path, tuple[int, ...]]:
    """Every path under ``root``: directories by existence, files by size, mtime and inode."""
    out = {}
    for path in root.rglob("*"):
        stat = path.lstat()
        out[path] = () if path.is_dir() else (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return out


def assert_writes_only_to(before: dict, after: dict, outputs: list[Path]) -> None:
    """Every path created, changed or removed lies under one of ``outputs`` (or is a folder made to hold one)."""
    outputs = [o.resolve() for o in outputs]
    stray = []
    for path in sorted(before.keys() | after.keys()):
        if before.get(path) == after.get(path):
            continue
        resolved = path.resolve()
        inside = any(resolved == o or o in resolved.parents for o in outputs)
        holder = path in after and after[path] == () and any(resolved in o.parents for o in outputs)
        if not (inside or holder):
            stray.append(path)
    assert stray == []


def test_14_the_snapshot_sees_stray_writes(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "old.txt").write_text("x")
    before = snapshot(tmp_path)
    (tmp_path / "out" / "result.h5").write_text("fine")
    (tmp_path / "stray.txt").write_text("not an output")
    (tmp_path / "old.txt").write_text("changed")
    with pytest.raises(AssertionError, match="stray.txt"):
        assert_writes_only_to(before, snapshot(tmp_path), [tmp_path / "out" / "result.h5"])
    with pytest.raises(AssertionError, match="old.txt"):
        assert_writes_only_to(before, snapshot(tmp_path), [tmp_path / "out", tmp_path / "stray.txt"])
    assert_writes_only_to(
        before, snapshot(tmp_path), [tmp_path / "out", tmp_path / "stray.txt", tmp_path / "old.txt"]
    )


def test_14_synth_and_prepare_write_only_their_outputs(run_cli, tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    base = tmp_path.parent  # every test's folder of this session: nothing outside ours may change
    before = snapshot(base)
    result = run_cli("synth", "--out", "data/synthetic", "--frames", "2", "--workers", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    result = run_cli(
        "prepare",
        "--root",
        "data/synthetic",
        "--split-file",
        "data/synthetic/ImageSets/val.txt",
        "--out",
        "data/prepared/val.h5",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    after = snapshot(base)
    assert_writes_only_to(before, after, [project / "data/synthetic", project / "data/prepared/val.h5"])
    assert (project / "data/prepared/val.h5").is_file()


def test_14_params_paths_outside_the_project_are_allowed_and_written_exactly(
    kitti_readonly: KittiFixture, tmp_path, monkeypatch
):
    """Decision: params paths are not confined to the project. A data root elsewhere (an absolute path to a KITTI
    copy) is the documented use, and an output like ``../shared/prepared`` is a legitimate choice too; refusing
    ``..`` would break those users without protecting anything (the params file is trusted input, written by
    the user). What is promised instead: a command writes to exactly the output paths configured, nowhere else,
    and never into its data root."""
    project = tmp_path / "project"
    project.mkdir()
    params = {
        "data": {
            "root": str(kitti_readonly.root),
            "split_dir": str(kitti_readonly.root / "ImageSets"),
            "prepared_dir": "../shared/prepared",  # escapes the project on purpose
            "splits": ["val"],
        }
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)
    base = tmp_path.parent
    before = snapshot(base)
    runpy.run_path(
        str(REPO / "stages" / "prepare.py"), run_name="__main__"
    )  # the DVC stage, as `dvc repro` runs it
    after = snapshot(base)
    assert_writes_only_to(before, after, [tmp_path / "shared" / "prepared" / "val.h5"])
    assert (tmp_path / "shared" / "prepared" / "val.h5").is_file()
    assert not (project / "shared").exists()


def test_14_cache_teacher_writes_only_its_store(run_cli, teacher_cache_setup, tmp_path, monkeypatch):
    params = read_params_yaml(Path(teacher_cache_setup["params_path"]).read_text())
    params["cache"]["store"] = "out/cache.zarr"  # relative to the working directory
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)
    base = tmp_path.parent
    before = snapshot(base)
    result: Result = run_cli("cache-teacher", "--no-progress")
    assert result.exit_code == 0, result.output
    after = snapshot(base)
    assert_writes_only_to(before, after, [project / "out" / "cache.zarr"])
    assert (project / "out" / "cache.zarr" / "zarr.json").is_file()
    assert not (project / "out" / "cache.zarr.lock").exists()
    assert os.listdir(project / "out") == ["cache.zarr"]

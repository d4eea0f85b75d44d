"""Which code a stage or a training run depends on: the static import closure (stereodistill/fingerprint.py).

dvc.yaml's code deps must be exactly each stage script's closure, and the training runs' code fingerprint is
the hash of their trainer's closure, so neither can miss a module the code runs nor list one it does not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from stereodistill.fingerprint import code_fingerprint, import_closure

REPO = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("stages", "stereodistill")
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _rel(paths: set[Path]) -> list[str]:
    return sorted(p.relative_to(REPO).as_posix() for p in paths)


def _code_deps(deps: list[str]) -> set[Path]:
    """The Python files the code deps stand for (a folder: every ``.py`` file under it)."""
    files: set[Path] = set()
    for dep in deps:
        if dep.split("/")[0] not in CODE_FOLDERS:
            continue
        path = REPO / dep
        assert path.exists(), f"dvc.yaml lists {dep}, which does not exist"
        files |= set(path.rglob("*.py")) if path.is_dir() else {path}
    return files


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_code_deps_are_the_import_closure_of_its_script(stage):
    spec = STAGES[stage]
    script = Path("stages") / f"{stage}.py"
    assert spec["cmd"] == f"python {script.as_posix()}"
    closure = set(import_closure(REPO / script, root=REPO))
    listed = _code_deps(spec["deps"])
    missing, extra = _rel(closure - listed), _rel(listed - closure)
    assert not missing and not extra, (
        f"dvc.yaml stage {stage}: add the deps {missing}; remove {extra} (a folder whose files the stage does "
        "not all import must be listed file by file)"
    )


def test_training_fingerprints_cover_the_modules_the_trainers_import():
    student = _rel(set(import_closure("stereodistill.student.train", root=REPO)))
    teacher = _rel(set(import_closure("stereodistill.teacher.train", root=REPO)))
    # the student dequantises cached logits; the shared run and the model checkpoints are imported by both
    for path in ("cache/quantize.py", "cache/reader.py", "training/run.py", "student/checkpoint.py"):
        assert f"stereodistill/{path}" in student
    for path in ("training/run.py", "training/loss_log.py", "teacher/checkpoint.py", "__init__.py"):
        assert f"stereodistill/{path}" in teacher
    assert not any(p.startswith(("stereodistill/student/", "stereodistill/distill/")) for p in teacher)
    assert "stereodistill/teacher/import_openpcdet.py" not in teacher


def test_fingerprint_follows_the_source_not_the_imported_modules(tmp_path):
    shutil.copytree(
        REPO / "stereodistill", tmp_path / "stereodistill", ignore=shutil.ignore_patterns("__pycache__")
    )
    before = {
        m: code_fingerprint(m, root=tmp_path)
        for m in ("stereodistill.student.train", "stereodistill.teacher.train")
    }
    assert before == {m: code_fingerprint(m, root=REPO) for m in before}
    quantize = tmp_path / "stereodistill" / "cache" / "quantize.py"
    quantize.write_text(quantize.read_text() + "\n# edited\n")
    (tmp_path / "stereodistill" / "unused.py").write_text("VALUE = 1\n")
    after = {m: code_fingerprint(m, root=tmp_path) for m in before}
    assert after["stereodistill.student.train"] != before["stereodistill.student.train"]
    assert after["stereodistill.teacher.train"] == before["stereodistill.teacher.train"]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_closure_rules(tmp_path):
    _write(
        tmp_path,
        {
            "stereodistill/__init__.py": "",
            "stereodistill/pkg/__init__.py": "",
            "stereodistill/pkg/a.py": (
                "from typing import TYPE_CHECKING\n"
                "import numpy\n"
                "from stereodistill.pkg import b\n"
                "from stereodistill.pkg.c import NAME\n"
                "if TYPE_CHECKING:\n"
                "    from stereodistill import typing_only\n"
                "def f():\n"
                "    import stereodistill.lazy\n"
            ),
            "stereodistill/pkg/b.py": "",
            "stereodistill/pkg/c.py": "NAME = 1\n",
            "stereodistill/lazy.py": "",
            "stereodistill/typing_only.py": "",
            "stereodistill/unused.py": "",
        },
    )
    closure = import_closure("stereodistill.pkg.a", root=tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in closure] == [
        "stereodistill/__init__.py",
        "stereodistill/lazy.py",
        "stereodistill/pkg/__init__.py",
        "stereodistill/pkg/a.py",
        "stereodistill/pkg/b.py",
        "stereodistill/pkg/c.py",
    ]
    _write(tmp_path, {"stereodistill/pkg/b.py": "import stereodistill.missing\n"})
    with pytest.raises(ValueError, match="stereodistill.missing"):
        import_closure("stereodistill.pkg.a", root=tmp_path)

"""The code a module runs, and its fingerprint: the static import closure over the ``stereodistill`` package.

One rule serves both places that ask which code produced an output: a resumable training run records
:func:`code_fingerprint` of its trainer module and refuses to resume under other code, and each DVC stage lists
exactly :func:`import_closure` of ``stages/<stage>.py`` as its code dependencies (tests/test_dvc_deps.py holds
dvc.yaml to it). The closure is read from the source with :mod:`ast`, never from ``sys.modules``, so it does not
depend on what the process happened to import: every ``import`` / ``from ... import`` of a ``stereodistill``
module anywhere in a file counts (inside functions too), except under ``if TYPE_CHECKING:``, which never runs,
and so does the ``__init__.py`` of every package on the way, which Python runs first.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

PACKAGE = "stereodistill"
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the package (and stages/)


def module_file(name: str, root: Path = SOURCE_ROOT) -> Path | None:
    """The source of the dotted module ``name`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``), or None."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _imports(node.orelse)
        else:
            yield from _imports(ast.iter_child_nodes(node))


def imported_modules(path: Path) -> dict[str, bool]:
    """The ``stereodistill`` names a file imports, each with whether it must be a module.

    ``import m`` and ``from m import x`` name module ``m``; ``x`` may be a submodule ``m.x`` or an attribute.
    """
    names: dict[str, bool] = {}
    for node in _imports([ast.parse(path.read_bytes(), filename=str(path))]):
        if isinstance(node, ast.Import):
            names.update((alias.name, True) for alias in node.names)
        else:
            if node.level:
                raise ValueError(f"{path}: relative imports are not used in this project")
            for alias in node.names:
                names.setdefault(f"{node.module}.{alias.name}", False)
            names[str(node.module)] = True
    return {n: required for n, required in names.items() if n == PACKAGE or n.startswith(PACKAGE + ".")}


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(*entries: str | Path, root: Path = SOURCE_ROOT) -> list[Path]:
    """Every ``stereodistill`` source file that importing ``entries`` runs, entries included, sorted.

    An entry is a dotted module name or a file path (a script such as ``stages/train_teacher.py``). A module
    that an ``import`` statement names but ``root`` lacks is an error; a ``from m import x`` whose ``x`` is no
    module is an attribute of ``m`` and adds nothing.
    """
    files: set[Path] = set()
    pending: list[tuple[str, bool]] = []  # (module name, must exist)
    for entry in entries:
        if isinstance(entry, Path):
            files.add(entry.resolve())
            pending += imported_modules(entry).items()
        else:
            pending.append((entry, True))
    seen: set[str] = set()
    while pending:
        name, required = pending.pop()
        if name in seen:
            continue
        path = module_file(name, root)
        if path is None:
            if required:
                raise ValueError(f"module {name} is imported but {root} holds no source for it")
            continue
        seen.add(name)
        for parent in _with_parents(name):
            pending.append((parent, True))
        if path not in files:
            files.add(path)
            pending += imported_modules(path).items()
    return sorted(files, key=lambda p: p.as_posix())


def code_fingerprint(module: str, root: Path = SOURCE_ROOT) -> str:
    """sha256 over the files of :func:`import_closure` of ``module`` (path relative to ``root``, then bytes),
    in sorted path order."""
    digest = hashlib.sha256()
    for path in sorted(import_closure(module, root=root), key=lambda p: p.relative_to(root).as_posix()):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()

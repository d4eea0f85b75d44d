"""Unpack the GPU kit (benchmarks/gpu_kit.sh) into a folder to put on ``PYTHONPATH``; standard library only.

The spconv archive (CPython 3.12 binaries) is unpacked when this interpreter is CPython 3.12; a wheel when it
suits this interpreter and one of its top-level modules is not importable, so the image's own packages (numpy,
torch's dependencies ...) are never shadowed. ``--check`` then loads the archive's two extension modules (cumm's
and spconv's ``core_cc``, with their bundled CUDA runtime) by file, which needs neither torch nor a GPU.

    python3 benchmarks/gpu_site.py --kit .gpu --site /tmp/gpu_site [--check]

Prints one line per wheel; exits non-zero when the archive lacks the spconv or cumm package or, with
``--check``, an extension module does not load.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import tarfile
import zipfile
from pathlib import Path

ARCHIVE = "spconv-cp312.tar.xz"
ARCHIVE_TAG = "cp312"
REQUIRED = ("spconv", "cumm")  # in this order: spconv's core_cc uses the types cumm's registers


def interpreter_tag() -> str:
    """``cp312`` for CPython 3.12: the tag of the binary wheels this interpreter can load."""
    impl = "cp" if platform.python_implementation() == "CPython" else "other"
    return f"{impl}{sys.version_info.major}{sys.version_info.minor}"


def wheel_suits(name: str) -> bool:
    """A pure-Python wheel, or a binary one built for this interpreter."""
    python_tag = name.removesuffix(".whl").split("-")[-3]
    return python_tag.startswith("py3") or interpreter_tag() in python_tag.split(".")


def top_level_modules(wheel: zipfile.ZipFile) -> list[str]:
    """The importable names a wheel installs (its top-level packages and modules)."""
    names = set()
    for entry in wheel.namelist():
        first = entry.split("/", 1)[0]
        if first.endswith((".dist-info", ".data", ".libs")):
            continue
        if "/" in entry or first.endswith(".py"):
            names.add(first.removesuffix(".py"))
        elif first.endswith(".so"):
            names.add(first.split(".", 1)[0])
    return sorted(names)


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def unpack_archive(archive: Path, site: Path) -> list[str]:
    """Unpack ``archive`` into ``site``; the top-level entries it holds."""
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(site, filter="data")
        tops = sorted({member.name.split("/", 1)[0] for member in tar.getmembers()})
    missing = [p for p in REQUIRED if not (site / p / "__init__.py").is_file()]
    if missing:
        raise SystemExit(f"{archive}: no {', '.join(missing)} package inside")
    return tops


def load_extensions(site: Path) -> list[str]:
    """Load cumm's, then spconv's, ``core_cc`` extension module from ``site`` by file (no package imports)."""
    loaded = []
    for package in reversed(REQUIRED):
        (path,) = (site / package).glob("core_cc.*.so")
        spec = importlib.util.spec_from_file_location(f"{package}.core_cc", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        loaded.append(path.name)
    return loaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kit", type=Path, default=Path(".gpu"))
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--check", action="store_true", help="load the archive's extension modules")
    args = parser.parse_args()
    args.site.mkdir(parents=True, exist_ok=True)
    archive = args.kit / ARCHIVE
    if not archive.is_file():
        print(f"no {archive}: spconv must already be importable")
    elif interpreter_tag() != ARCHIVE_TAG:
        print(
            f"{archive} holds {ARCHIVE_TAG} binaries, this is {interpreter_tag()}: using the importable spconv"
        )
    else:
        tops = unpack_archive(archive, args.site)
        print(f"unpacked {archive} ({archive.stat().st_size / 2**20:.1f} MiB): {', '.join(tops)}")
        if args.check:
            print(f"loaded {', '.join(load_extensions(args.site))}")
    for path in sorted((args.kit / "wheels").glob("*.whl")):
        if not wheel_suits(path.name):
            print(f"{path.name}: not for {interpreter_tag()}, skipped")
            continue
        with zipfile.ZipFile(path) as wheel:
            modules = top_level_modules(wheel)
            missing = [m for m in modules if not importable(m)]
            if missing:
                wheel.extractall(args.site)
        state = f"unpacked (missing: {', '.join(missing)})" if missing else "already importable, skipped"
        print(f"{path.name}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

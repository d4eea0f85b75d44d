"""Unpack the GPU kit (benchmarks/gpu_kit.sh) into a folder to put on ``PYTHONPATH``; standard library only.

The spconv archive is always unpacked; a wheel only when one of its top-level modules is not importable by this
interpreter, so the image's own packages (numpy, torch's dependencies ...) are never shadowed.

    python3 benchmarks/gpu_site.py --kit .gpu --site /tmp/gpu_site

Prints one line per wheel and exits non-zero when the archive lacks the spconv or cumm package.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tarfile
import zipfile
from pathlib import Path

ARCHIVE = "spconv-cp312.tar.xz"
REQUIRED = ("spconv", "cumm")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kit", type=Path, default=Path(".gpu"))
    parser.add_argument("--site", type=Path, required=True)
    args = parser.parse_args()
    args.site.mkdir(parents=True, exist_ok=True)
    archive = args.kit / ARCHIVE
    if archive.is_file():
        tops = unpack_archive(archive, args.site)
        print(f"unpacked {archive} ({archive.stat().st_size / 2**20:.1f} MiB): {', '.join(tops)}")
    else:
        print(f"no {archive}: spconv must already be importable")
    for path in sorted((args.kit / "wheels").glob("*.whl")):
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

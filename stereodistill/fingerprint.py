"""Fingerprints that tell whether a resumable output still belongs to the current code and inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType


def source_fingerprint(*packages: ModuleType) -> str:
    """sha256 over the ``.py`` files (relative path and bytes) of the given packages, in a stable order."""
    digest = hashlib.sha256()
    for package in packages:
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()

"""``cache_teacher`` driven by params.yaml: shared by ``stages/cache_teacher.py`` and ``stereodistill cache-teacher``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stereodistill.cache.ranks import current_ranks
from stereodistill.cache.schema import CacheSettings, check_views_supported
from stereodistill.cache.store import file_sha256, store_identity
from stereodistill.cache.writer import CacheRunStats, write_cache
from stereodistill.checkpoints import load_checkpoint
from stereodistill.data.prepared import PreparedSplit, split_fingerprint
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import require, section
from stereodistill.teacher.checkpoint import MODEL_KIND, load_teacher


def teacher_identity(path: str | Path) -> dict[str, Any]:
    """The checkpoint's sha256 plus the network config and training settings it records."""
    ckpt = load_checkpoint(path, MODEL_KIND)
    return {"sha256": file_sha256(path), "config": ckpt["config"], "settings": ckpt.get("settings")}


def cache_settings(params: dict[str, Any]) -> CacheSettings:
    return CacheSettings.from_params(params.get("cache") or {})


def cache_teacher_from_params(
    params: dict[str, Any], force: bool = False, progress: bool = True, recompute_on_mismatch: bool = False
) -> CacheRunStats:
    """Cache the teacher ``{teacher.out_dir}/teacher.pt`` on ``{data.prepared_dir}/{cache.split}.h5``."""
    data, teacher = section(params, "data"), section(params, "teacher")
    settings = cache_settings(params)
    grid = AnchorGrid.from_params(section(params, "grid"), "params.yaml")
    check_views_supported(settings.views, grid.point_cloud_range, "params.yaml")
    ranks = current_ranks()
    checkpoint = Path(require(teacher, "out_dir", "teacher")) / "teacher.pt"
    model = load_teacher(checkpoint, ranks.device, grid)
    split = PreparedSplit(Path(require(data, "prepared_dir", "data")) / f"{settings.split}.h5")
    identity = None
    if ranks.rank == 0:
        identity = store_identity(
            grid, settings, split.frame_ids, split_fingerprint(split), teacher_identity(checkpoint)
        )
    return write_cache(
        model,
        split,
        settings.store,
        settings,
        identity,
        ranks,
        force=force,
        progress=progress,
        recompute_on_mismatch=recompute_on_mismatch,
    )

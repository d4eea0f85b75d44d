"""``cache_teacher`` driven by params.yaml: shared by ``stages/cache_teacher.py`` and ``stereodistill cache-teacher``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stereodistill.cache.ranks import current_ranks
from stereodistill.cache.schema import check_views_supported
from stereodistill.cache.store import file_sha256, store_identity
from stereodistill.cache.writer import CacheRunStats, write_cache
from stereodistill.checkpoints import load_checkpoint
from stereodistill.data.prepared import PreparedSplit, split_fingerprint
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import Params
from stereodistill.teacher.checkpoint import MODEL_KIND, load_teacher


def teacher_identity(path: str | Path) -> dict[str, Any]:
    """The checkpoint's sha256 plus the network config and training settings it records."""
    ckpt = load_checkpoint(path, MODEL_KIND)
    return {"sha256": file_sha256(path), "config": ckpt["config"], "settings": ckpt.get("settings")}


def cache_teacher_from_params(
    params: Params, force: bool = False, progress: bool = True, recompute_on_mismatch: bool = False
) -> CacheRunStats:
    """Cache the teacher ``{teacher.out_dir}/teacher.pt`` on ``{data.prepared_dir}/{cache.split}.h5``."""
    settings = params.cache
    grid = AnchorGrid.from_params(params.grid, params.source)
    check_views_supported(settings.views, grid.point_cloud_range, params.source)
    ranks = current_ranks()
    checkpoint = Path(params.teacher.out_dir) / "teacher.pt"
    model = load_teacher(checkpoint, ranks.device, grid)
    split = PreparedSplit(params.data.prepared_split(settings.split))
    identity = None
    if ranks.rank == 0:
        identity = store_identity(
            grid, settings, split.frame_ids, split_fingerprint(split), teacher_identity(checkpoint)
        )
    stats = write_cache(
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
    ranks.close()
    return stats

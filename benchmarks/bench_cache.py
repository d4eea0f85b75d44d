"""Teacher cache: bytes on disk per frame and view, write overhead (whole stage / teacher forward) and read cost.

Writes a cache of the first ``--frames`` frames of a prepared split with the given teacher checkpoint at the
``--params`` cache settings (measuring stage time against forward-only time), and, when those cache the teacher's
BEV features, once more without them (the features' own bytes and overhead); then re-encodes the same teacher
outputs with other codecs and logit encodings (bytes only) and times ``TeacherCache.read`` (and
``read_features``) per frame.
Prints a markdown table and the command line.

    python benchmarks/bench_cache.py --params params.yaml --split data/prepared/train.h5 \
        --teacher models/teacher/teacher.pt [--frames 32] [--out /tmp/bench_cache]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from stereodistill.cache.ranks import Ranks
from stereodistill.cache.reader import TeacherCache
from stereodistill.cache.run import teacher_identity
from stereodistill.cache.store import bytes_on_disk, store_identity
from stereodistill.cache.writer import write_cache
from stereodistill.data.prepared import PreparedSplit
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import load_params
from stereodistill.teacher.checkpoint import load_teacher

CODECS = {
    "none": None,
    "zstd-3": ZstdCodec(level=3),
    "blosc-lz4-bitshuffle": BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.bitshuffle),
    "blosc-zstd-3-bitshuffle": BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle),
    "blosc-zstd-7-bitshuffle": BloscCodec(cname="zstd", clevel=7, shuffle=BloscShuffle.bitshuffle),
}
ENCODINGS = ("int16 step 1/64", "int16 step 0.02", "float16")


class _Subset:
    """The first ``n`` frames of a prepared split (what write_cache needs of it)."""

    def __init__(self, split: PreparedSplit, n: int) -> None:
        self._split, self.path = split, split.path
        self.frame_ids = split.frame_ids[:n]

    def __len__(self) -> int:
        return len(self.frame_ids)

    def read_points(self, i: int) -> np.ndarray:
        return self._split.read_points(i)

    def labels(self, i: int):
        return self._split.labels(i)


def _array_bytes(root: zarr.Group, name: str) -> int:
    return bytes_on_disk(Path(root.store.root) / name)


def reencode(src: Path, dst: Path, codec_name: str, encoding: str) -> int:
    """Bytes of the store ``src`` rewritten with another codec and logit encoding (same chunks and shards)."""
    source = zarr.open_group(src, mode="r", use_consolidated=False)
    step = source.attrs["identity"]["quantisation"]["logits"]["step"]
    if dst.exists():
        shutil.rmtree(dst)
    out = zarr.open_group(dst, mode="w")
    total = 0
    for name in ("cls_logits", "covered_index", "covered_kind", "boxes", "dir_logits", "covered_count"):
        a = source[name]
        data = a[:]
        dtype, fill = a.dtype, a.fill_value
        if name in ("cls_logits", "dir_logits"):
            logits = data.astype(np.float32) * np.float32(step)
            if encoding == "float16":
                data, dtype, fill = logits.astype(np.float16), np.float16, np.nan
            elif encoding == "int16 step 0.02":
                data = np.clip(np.round(logits / 0.02), -32767, 32767).astype(np.int16)
        b = out.create_array(
            name,
            shape=a.shape,
            dtype=dtype,
            chunks=a.chunks,
            shards=a.shards,
            fill_value=fill,
            compressors=CODECS[codec_name],
            chunk_key_encoding={"name": "default", "separator": "."},
        )
        b[:] = data
        total += _array_bytes(out, name)
    return total


def _make_noisy(model: torch.nn.Module, clouds: list[torch.Tensor]) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(clouds[:4])
        g = torch.Generator().manual_seed(0)
        head = model.head
        for conv, std in ((head.conv_cls, 0.5), (head.conv_box, 0.05), (head.conv_dir, 0.5)):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * std)
        head.conv_cls.bias.fill_(-7.5)
    model.eval()


def _report_features(store: Path, cache: TeacherCache, views, frame_views: int, grid, stats, plain) -> None:
    """The BEV features' share: bytes per frame and view, cells, dense equivalent, overhead (the fastest of
    three writes with them against the fastest of two without), read time."""
    root = zarr.open_group(store, mode="r")
    cells = root["feature_count"][:]
    channels = cache.feature_channels()
    stored = sum(_array_bytes(root, name) for name in ("feature_count", "feature_cell", "bev_features"))
    stored += _array_bytes(root, "bev_feature_abs_sum")
    dense = grid.ny * grid.nx * channels * 4
    times = []
    for _ in range(3):
        for i in range(len(cache)):
            for view in views:
                t0 = time.perf_counter()
                cache.read_features(i, view)
                times.append(time.perf_counter() - t0)
    per = stored / frame_views
    print(
        f"BEV features: {channels} channels float16 at in-box cells (mean {cells.mean():.0f}, max {cells.max()} "
        f"per frame/view): {per / 1e6:.3f} MB per frame and view; dense float32 map {dense / 1e6:.2f} MB "
        f"({dense / per:.0f}x)"
    )
    print(
        f"stage / forward with features {stats.overhead_ratio:.3f}, without {plain.overhead_ratio:.3f}; "
        f"whole stage with / without features: {stats.total_seconds / plain.total_seconds:.3f}"
    )
    print(
        f"TeacherCache.read_features per frame and view: median {statistics.median(times) * 1e3:.2f} ms, "
        f"p90 {np.percentile(times, 90) * 1e3:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_cache"))
    parser.add_argument("--skip-reencode", action="store_true")
    parser.add_argument(
        "--noisy-head",
        action="store_true",
        help="Worst case for compression: batch-norm statistics from the frames and a random head "
        "(logits spread over about +-20 with no smooth background), instead of the checkpoint's head.",
    )
    args = parser.parse_args()

    params = load_params(args.params)
    grid = AnchorGrid.from_params(params.grid, params.source)
    settings = params.cache
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_teacher(args.teacher, device, grid)
    split = PreparedSplit(args.split)
    subset = _Subset(split, min(args.frames, len(split)))
    if args.noisy_head:
        _make_noisy(model, [torch.from_numpy(subset.read_points(i)).to(device) for i in range(len(subset))])
    settings = replace(settings, frames_per_shard=min(settings.frames_per_shard, len(subset)))
    store = args.out / "default.zarr"
    args.out.mkdir(parents=True, exist_ok=True)
    identity = store_identity(grid, settings, subset.frame_ids, "benchmark", teacher_identity(args.teacher))
    ranks = Ranks(0, 1, device)
    stats = write_cache(model, subset, store, settings, identity, ranks, force=True, progress=False)
    plain = None
    if settings.features:
        # Without and with the features in turn, twice (the first pair warms up): the fastest of each counts, so
        # a load that comes and goes on a shared machine does not decide the comparison.
        no_features = replace(settings, features=())
        plain_identity = store_identity(
            grid, no_features, subset.frame_ids, "benchmark", teacher_identity(args.teacher)
        )
        plains, withs = [], [stats]
        for _ in range(2):
            plains.append(
                write_cache(
                    model,
                    subset,
                    args.out / "plain.zarr",
                    no_features,
                    plain_identity,
                    ranks,
                    force=True,
                    progress=False,
                )
            )
            withs.append(
                write_cache(model, subset, store, settings, identity, ranks, force=True, progress=False)
            )
        plain = min(plains, key=lambda run: run.total_seconds)
        stats = min(withs, key=lambda run: run.total_seconds)

    f, v = len(subset), len(settings.views)
    dense = grid.num_anchors * (grid.num_classes + 7 + 2) * 4  # float32 cls + box + dir, every anchor
    cache = TeacherCache(store)
    counts = zarr.open_group(store, mode="r")["covered_count"][:]
    times = []
    for _ in range(3):
        for i in range(f):
            for view in settings.views:
                t0 = time.perf_counter()
                cache.read(i, view)
                times.append(time.perf_counter() - t0)

    print(f"command: {' '.join(sys.argv)}")
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    print(
        f"grid: {grid.ny} x {grid.nx} x {grid.anchors_per_cell} = {grid.num_anchors} anchors; frames {f}, "
        f"views {v}; covered anchors per frame/view mean {counts.mean():.0f}, max {counts.max()}"
    )
    print(f"dense float32 (cls + box + dir of every anchor): {dense / 1e6:.2f} MB per frame and view")
    per = stats.bytes_on_disk / (f * v)
    print(
        f"default settings ({settings.codec} level {settings.codec_level}, int16 step {settings.logit_step}): "
        f"{per / 1e6:.3f} MB per frame and view ({dense / per:.1f}x smaller than dense float32); "
        f"stage {stats.total_seconds:.2f} s / forward {stats.forward_seconds:.2f} s = {stats.overhead_ratio:.3f}"
    )
    print(
        f"TeacherCache.read per frame and view: median {statistics.median(times) * 1e3:.2f} ms, "
        f"p90 {np.percentile(times, 90) * 1e3:.2f} ms ({len(times)} reads, page cache warm)"
    )
    if plain is not None:
        _report_features(store, cache, settings.views, f * v, grid, stats, plain)
    if args.skip_reencode:
        return
    print()
    print("| codec | logits | MB per frame and view | vs dense float32 |")
    print("|---|---|---|---|")
    for codec in CODECS:
        for encoding in ENCODINGS:
            size = reencode(store, args.out / "variant.zarr", codec, encoding) / (f * v)
            print(f"| {codec} | {encoding} | {size / 1e6:.3f} | {dense / size:.1f}x |")


if __name__ == "__main__":
    main()

"""GPU readiness check and benchmark in one time-boxed run (what benchmarks/gpu_check.sh runs on a lent GPU).

Steps, in order of importance:

    spconv_check       spconv's sparse convolutions on the device against a dense float64 torch reference on
                       the CPU (fixed input), and the teacher's forward on the device against the CPU
    data               synthesizes and prepares the default benchmark (params.yaml's data.synth: 80 train and 720
                       val frames) and a kitti-preset set (--kitti-frames, all train), with one process per core
    stage_one_kitti    on the LIGA (kitti) grid: teacher forward frames/s per batch size, then the whole cache
                       write (write_cache: batching, coverage, quantisation, overlapped shard writes) frames/s
    stage_one_default  the same on the default grid
    student_default    the student's training step (losses with XGD + CLD from the cache, backward, clipping,
                       AdamW) on the default preset: median seconds and peak device memory
    student_kitti      the same on the kitti preset (LIGA-scale student, full-resolution images, batch 1)
    ddp                a two-step `train-student` under torchrun on every GPU (skipped with one GPU)
    ablation           default-preset students of benchmarks/ablation.py's variants and seeds (seed 0 of every
                       variant first), as many as the time left allows, each trained and evaluated

The teachers are built from the params' settings with seed 0 and saved (untrained weights: throughput does not
depend on them), so no checkpoint has to travel; ``--teacher`` uses a trained default-grid teacher instead. The
ablation needs a trained default teacher: ``--teacher``, or else it trains one first (train_teacher_from_params).

Each step is skipped when the time left (``--budget-s``) is below its estimate, and a failing step records its
error without stopping the others. ``gpu_check.json`` and ``gpu_check.md`` under ``--out`` (default ``$OUT``,
else ``./gpu_check_out``) are rewritten after every step, so a run killed at its time limit keeps what it
measured.

    python benchmarks/gpu_check.py [--out DIR] [--budget-s 420] [--device cuda|cpu] [--small] [--teacher PT]

Data, models and caches go to ``--work`` (default ``$TMPDIR/stereodistill_gpu_check``), a few GB on a GPU.
``--device cpu --small`` runs every step on tiny sizes (a kitti student shrunk to fit a CPU) to test this script.
Exits non-zero when a step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PRESET_FILES = {"default": REPO / "params.yaml", "kitti": REPO / "docs/presets/params.kitti.yaml"}
KITTI_GOAL_FPS = 100.0
# A student small enough for one CPU step in seconds, at --small only: what the kitti preset's student becomes.
SMALL_KITTI_STUDENT = {
    "model": {
        "backbone_channels": [16, 16, 32, 32],
        "backbone_blocks": [1, 1, 1, 1],
        "stereo_channels": 16,
        "semantic_channels": 16,
        "num_planes": 8,
        "cost_channels": 16,
        "volume_channels": 16,
        "voxel_z": 4,
        "z_pool": 1,
        "bev_channels": 32,
        "norm_groups": 8,
    },
    "train": {"image_scale": 4},
}


@dataclass(frozen=True)
class Sizes:
    """How much each step measures (``--small``: just enough to run every code path)."""

    default_frames: int | None  # None: params.yaml's data.synth.frames
    kitti_frames: int
    teacher_batch_sizes: tuple[int, ...]
    forward_frames: int  # frames timed per batch size
    student_warm_up: int
    student_steps: int
    ablation_epochs: int
    ablation_seeds: tuple[int, ...]
    ablation_variants: tuple[str, ...] | None  # None: every variant of benchmarks/ablation.py
    teacher_epochs: int | None  # None: params.yaml's teacher.train.epochs
    pretrain_epochs: int | None  # None: params.yaml's student.pretrain.epochs (the students' trunk)
    # Seconds each step is expected to need (the budget skips a step with less time left).
    estimates: dict[str, float] = field(default_factory=dict)


GPU_SIZES = Sizes(
    default_frames=None,
    kitti_frames=96,
    teacher_batch_sizes=(1, 4, 8, 16),
    forward_frames=64,
    student_warm_up=2,
    student_steps=10,
    ablation_epochs=12,
    ablation_seeds=(0, 1, 2),
    ablation_variants=None,
    teacher_epochs=None,
    pretrain_epochs=None,
    estimates={
        "spconv_check": 5,
        "data": 40,
        "stage_one_kitti": 60,
        "stage_one_default": 30,
        "student_default": 15,
        "student_kitti": 40,
        "ddp": 60,
        "ablation": 60,
    },
)
SMALL_SIZES = Sizes(
    default_frames=8,  # 4 train frames: two DDP steps of batch 1 on two ranks
    kitti_frames=1,
    teacher_batch_sizes=(4,),  # the params' cache.batch_size: one cache write
    forward_frames=1,
    student_warm_up=1,
    student_steps=1,
    ablation_epochs=1,
    ablation_seeds=(0,),
    ablation_variants=("xgd_cld",),
    teacher_epochs=1,
    pretrain_epochs=1,
    estimates={
        "spconv_check": 2,
        "data": 10,
        "stage_one_kitti": 10,
        "stage_one_default": 5,
        "student_default": 5,
        "student_kitti": 10,
        "ddp": 30,
        "ablation": 20,
    },
)
STEPS = tuple(GPU_SIZES.estimates)
# The synthetic set each step reads (the data step makes only those the chosen steps need).
STEP_PRESETS = {
    "stage_one_kitti": "kitti",
    "student_kitti": "kitti",
    "stage_one_default": "default",
    "student_default": "default",
    "ddp": "default",
    "ablation": "default",
}


# ============================================================================================ the run
class StepSkipped(Exception):
    """Raised by a step that does not apply to this machine (its message says why)."""


class Budget:
    """Wall seconds left of ``seconds`` from construction."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()


class Report:
    """The run's results, rewritten to ``gpu_check.json`` and ``gpu_check.md`` in ``out`` after every step."""

    def __init__(self, out: Path, meta: dict[str, Any], budget: Budget) -> None:
        self.out, self.budget = out, budget
        self.data: dict[str, Any] = {"meta": meta, "steps": {}, "finished": False, "elapsed_s": 0.0}
        out.mkdir(parents=True, exist_ok=True)

    def record(self, name: str, result: dict[str, Any]) -> None:
        self.data["steps"][name] = result
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.budget.elapsed(), 2)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(markdown(self.data))

    def run(self, name: str, need_s: float, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Run step ``name`` when ``need_s`` seconds are left; record its result, or why it was skipped or failed."""
        left = self.budget.left()
        if left < need_s:
            self.record(
                name, {"status": "skipped", "reason": f"{left:.0f} s left, the step needs ~{need_s:.0f} s"}
            )
            return None
        print(f"[{self.budget.elapsed():6.1f} s] {name} ...", flush=True)
        started = time.perf_counter()
        try:
            result = {"status": "ok", **fn()}
        except StepSkipped as why:
            result = {"status": "skipped", "reason": str(why)}
        except Exception as err:  # noqa: BLE001 - recorded; the other steps still run
            result = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            result["traceback"] = traceback.format_exc()[-3000:]
            print(result["traceback"], file=sys.stderr, flush=True)
        result["seconds"] = round(time.perf_counter() - started, 2)
        self.record(name, result)
        print(f"[{self.budget.elapsed():6.1f} s] {name}: {result['status']}", flush=True)
        return result if result["status"] == "ok" else None


# =========================================================================================== helpers
def preset_mapping(preset: str, work: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preset's params as a mapping, every path moved under ``work/<preset>``."""
    from stereodistill.params import read_params_yaml

    params = read_params_yaml(PRESET_FILES[preset].read_text())
    root = work / preset
    params["data"]["root"] = str(root / "synthetic")
    params["data"]["split_dir"] = str(root / "synthetic/ImageSets")
    params["data"]["prepared_dir"] = str(root / "prepared")
    params["data"]["synth"]["out"] = str(root / "synthetic")
    params["teacher"]["out_dir"] = str(root / "teacher")
    params["cache"]["store"] = str(root / "teacher_cache.zarr")
    params["student"]["out_dir"] = str(root / "student")
    params["student"].setdefault("pretrain", {})["out_dir"] = str(root / "student_pretrain")
    for key in ("teacher_predictions", "teacher_metrics", "student_predictions", "student_metrics"):
        params["evaluate"][key] = str(root / "evaluate" / Path(params["evaluate"][key]).name)
    for section, values in (overrides or {}).items():
        params["student"][section].update(values)
    return params


def sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: Any) -> dict[str, float | None]:
    """Peak device memory (GiB) since :func:`reset_peak`; ``None`` on the CPU."""
    import torch

    if torch.device(device).type != "cuda":
        return {"peak_allocated_gib": None, "peak_reserved_gib": None}
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 3),
    }


def save_untrained_teacher(params: Any, path: Path) -> Path:
    """A teacher built from ``params.teacher.model`` with seed 0, saved as a finished ``teacher.pt``."""
    import torch

    from stereodistill.checkpoints import save_atomic
    from stereodistill.head.anchors import AnchorGrid
    from stereodistill.teacher.checkpoint import teacher_model_checkpoint
    from stereodistill.teacher.model import SecondTeacher

    torch.manual_seed(0)
    model = SecondTeacher(params.teacher.model, AnchorGrid.from_params(params.grid, params.source))
    save_atomic(teacher_model_checkpoint(model, 0), path)
    return path


def write_store(model: Any, params: Any, checkpoint: Path, device: Any, batch_size: int) -> Any:
    """Stage one over ``params``' cache split into ``cache.store`` (``force``), ``batch_size`` frames per forward."""
    from stereodistill.cache.ranks import Ranks
    from stereodistill.cache.run import teacher_identity
    from stereodistill.cache.store import store_identity
    from stereodistill.cache.writer import write_cache
    from stereodistill.data.prepared import PreparedSplit, split_fingerprint

    settings = replace(params.cache, batch_size=batch_size)
    split = PreparedSplit(params.data.prepared_split(settings.split))
    identity = store_identity(
        model.grid, settings, split.frame_ids, split_fingerprint(split), teacher_identity(checkpoint)
    )
    ranks = Ranks(0, 1, model.device)
    return write_cache(model, split, settings.store, settings, identity, ranks, force=True, progress=False)


# ============================================================================================= steps
def spconv_check(device: str) -> dict[str, Any]:
    """SubMConv3d + strided SparseConv3d on a fixed input, per algorithm, against a dense float64 reference."""
    import spconv
    import spconv.pytorch as sp
    import torch
    import torch.nn.functional as F
    from spconv.core import ConvAlgo

    g = torch.Generator().manual_seed(0)
    shape, c_in, c_mid, c_out, n = (12, 24, 24), 4, 8, 8, 400
    flat = torch.randperm(shape[0] * shape[1] * shape[2], generator=g)[:n]
    zyx = torch.stack(torch.unravel_index(flat, shape), dim=1)
    indices = torch.cat([torch.zeros(n, 1, dtype=torch.long), zyx], dim=1).int()
    features = torch.randn(n, c_in, generator=g)
    w1 = torch.randn(c_mid, 3, 3, 3, c_in, generator=g) * 0.2  # spconv's [Cout, kz, ky, kx, Cin] layout
    w2 = torch.randn(c_out, 3, 3, 3, c_mid, generator=g) * 0.2

    dense = torch.zeros(1, c_in, *shape, dtype=torch.float64)
    dense[0, :, zyx[:, 0], zyx[:, 1], zyx[:, 2]] = features.double().T
    mid = F.conv3d(dense, w1.double().permute(0, 4, 1, 2, 3), padding=1)
    mask = torch.zeros(1, 1, *shape, dtype=torch.float64)
    mask[0, 0, zyx[:, 0], zyx[:, 1], zyx[:, 2]] = 1.0
    reference = F.conv3d(mid * mask, w2.double().permute(0, 4, 1, 2, 3), stride=2, padding=1)
    scale = reference.abs().max().item()

    algos = [("cpu", ConvAlgo.Native)]
    if device != "cpu":
        algos += [(device, ConvAlgo.Native), (device, ConvAlgo.MaskImplicitGemm)]
    results, worst = [], 0.0
    for dev, algo in algos:
        net = sp.SparseSequential(
            sp.SubMConv3d(c_in, c_mid, 3, padding=1, bias=False, indice_key="subm", algo=algo),
            sp.SparseConv3d(c_mid, c_out, 3, stride=2, padding=1, bias=False, algo=algo),
        )
        with torch.no_grad():
            net[0].weight.copy_(w1)
            net[1].weight.copy_(w2)
            x = sp.SparseConvTensor(features.to(dev), indices.to(dev), list(shape), 1)
            out = net.to(dev)(x).dense().cpu().double()
        diff = (out - reference).abs().max().item()
        worst = max(worst, diff / scale)
        results.append({"device": dev, "algo": algo.name, "max_abs_diff": diff, "relative": diff / scale})
    if not worst < 1e-3:
        raise RuntimeError(f"spconv disagrees with the dense reference: {results}")
    return {"spconv": spconv.__version__, "spconv_path": str(Path(spconv.__file__).parent), "convs": results}


def teacher_cpu_vs_device(work: Path, device: str) -> dict[str, Any]:
    """The default teacher's head outputs on one synthetic frame: device against CPU (max abs difference)."""
    import numpy as np
    import torch

    from stereodistill.data.synth import generate_frame, preset_by_name
    from stereodistill.head.anchors import AnchorGrid
    from stereodistill.params import parse_params
    from stereodistill.teacher.model import SecondTeacher

    params = parse_params(preset_mapping("default", work))
    torch.manual_seed(0)
    model = SecondTeacher(params.teacher.model, AnchorGrid.from_params(params.grid, params.source)).eval()
    frame = generate_frame(preset_by_name("default"), 7, 0)
    xyz = frame.calib.velo_to_project(frame.scan.points[:, :3])
    points = torch.from_numpy(np.concatenate([xyz, frame.scan.points[:, 3:4]], axis=1).astype(np.float32))
    outs = {}
    for dev in ("cpu", device):
        model.to(dev)
        with torch.no_grad():
            out = model.head.flatten(model([points.to(dev)]))
        outs[dev] = {name: getattr(out, name).cpu() for name in ("cls", "box", "dir")}
    return {
        f"teacher_{name}_max_abs_diff": (outs[device][name] - outs["cpu"][name]).abs().max().item()
        for name in ("cls", "box", "dir")
    }


def make_data(work: Path, presets: list[str], sizes: Sizes, cpus: int) -> dict[str, Any]:
    """Synthesize and prepare the default benchmark and/or the kitti-preset set under ``work``."""
    from stereodistill.data.prepared import prepare_split
    from stereodistill.data.synth import generate_dataset
    from stereodistill.params import parse_params

    out: dict[str, Any] = {}
    for preset in presets:
        params = parse_params(preset_mapping(preset, work))
        synth = params.data.synth
        frames = sizes.kitti_frames if preset == "kitti" else (sizes.default_frames or synth.frames)
        val_fraction = 0.0 if preset == "kitti" else synth.val_fraction
        extra_val_frames = 0 if preset == "kitti" or sizes.default_frames else synth.extra_val_frames
        splits = ["train"] if preset == "kitti" else list(params.data.splits)
        t0 = time.perf_counter()
        generate_dataset(
            synth.out,
            frames,
            synth.seed,
            preset,
            val_fraction,
            overwrite=True,
            progress=False,
            workers=cpus,
            extra_val_frames=extra_val_frames,
        )
        t1 = time.perf_counter()
        for split in splits:
            prepare_split(
                params.data.root,
                Path(params.data.split_dir) / f"{split}.txt",
                params.data.prepared_split(split),
                progress=False,
            )
        t2 = time.perf_counter()
        out[preset] = {
            "frames": frames,
            "splits": splits,
            "synth_s": round(t1 - t0, 2),
            "prepare_s": round(t2 - t1, 2),
        }
    return out


def stage_one(work: Path, preset: str, device: str, sizes: Sizes, teacher: Path | None) -> dict[str, Any]:
    """Teacher forward frames/s per batch size and the whole cache write's frames/s, on ``preset``'s grid."""
    import torch

    from stereodistill.cache.writer import frame_inputs
    from stereodistill.data.prepared import PreparedSplit
    from stereodistill.head.anchors import AnchorGrid
    from stereodistill.params import parse_params
    from stereodistill.teacher.checkpoint import load_teacher

    params = parse_params(preset_mapping(preset, work))
    checkpoint = teacher or save_untrained_teacher(params, Path(params.teacher.out_dir) / "teacher.pt")
    model = load_teacher(checkpoint, device, AnchorGrid.from_params(params.grid, params.source))
    split = PreparedSplit(params.data.prepared_split(params.cache.split))
    views, grid = params.cache.views, model.grid
    n = min(sizes.forward_frames, len(split))
    inputs = [frame_inputs(split, i, views, model.config.point_features, grid) for i in range(n)]
    clouds = [[torch.from_numpy(p).to(device) for p, _, _ in frame] for frame in inputs]
    points = [len(c) for frame in clouds for c in frame]
    forward = []
    with torch.no_grad():
        model.head.flatten(model(clouds[0]))  # warm-up: spconv's kernel selection, cuDNN's algorithms
        for batch_size in sizes.teacher_batch_sizes:
            model.head.flatten(model([c for frame in clouds[:batch_size] for c in frame]))  # new shapes
            reset_peak(device)
            seconds = 0.0
            for start in range(0, n, batch_size):
                batch = [c for frame in clouds[start : start + batch_size] for c in frame]
                sync(device)
                t0 = time.perf_counter()
                model.head.flatten(model(batch))
                sync(device)
                seconds += time.perf_counter() - t0
            forward.append(
                {"batch_frames": batch_size, "frames_per_s": round(n / seconds, 2), **peak_memory(device)}
            )
    best = max(forward, key=lambda r: r["frames_per_s"])["batch_frames"]
    writes = []
    for batch_size in dict.fromkeys((params.cache.batch_size, best)):
        reset_peak(device)
        stats = write_store(model, params, checkpoint, device, batch_size)
        writes.append(
            {
                "batch_frames": batch_size,
                "frames": stats.frames_written,
                "frames_per_s": round(stats.frames_written / stats.total_seconds, 2),
                "stage_over_forward": round(stats.overhead_ratio, 3),
                "mb_per_frame_and_view": round(
                    stats.bytes_on_disk / 1e6 / stats.frames_written / len(views), 4
                ),
                **peak_memory(device),
            }
        )
    result: dict[str, Any] = {
        "grid": f"{grid.nx}x{grid.ny}, {grid.num_anchors} anchors",
        "voxel_size": list(params.teacher.model.voxel_size),
        "views": list(views),
        "teacher": str(teacher) if teacher else "untrained (built from the params, seed 0)",
        "timed_frames": n,
        "points_per_cloud_median": int(statistics.median(points)),
        "forward": forward,
        "cache_write": writes,
    }
    if preset == "kitti":
        result["goal_frames_per_s"] = KITTI_GOAL_FPS
        result["goal_met"] = max(w["frames_per_s"] for w in writes) >= KITTI_GOAL_FPS
    return result


def student_step(work: Path, preset: str, device: str, sizes: Sizes, small: bool) -> dict[str, Any]:
    """Median seconds of a full training step (data excluded) and peak device memory, distilling from the cache."""
    import torch

    from stereodistill.data.prepared import PreparedSplit
    from stereodistill.head.anchors import AnchorGrid
    from stereodistill.params import parse_params
    from stereodistill.student.dataset import StudentFrames
    from stereodistill.student.losses import student_losses
    from stereodistill.student.model import StereoStudent
    from stereodistill.student.teacher_cache import open_cache

    overrides = SMALL_KITTI_STUDENT if small and preset == "kitti" else None
    params = parse_params(preset_mapping(preset, work, overrides))
    grid = AnchorGrid.from_params(params.grid, params.source)
    config, settings, distill = params.student.model, params.student.train, params.distill
    split = PreparedSplit(params.data.prepared_split("train"))
    cache = open_cache(params.cache.store, grid, settings, distill, split) if distill.enabled else None
    frames = StudentFrames(
        split, settings.flip_probability, settings.image_scale, settings.seed, cache, grid=grid
    )
    torch.manual_seed(settings.seed)
    model = StereoStudent(config, grid).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    b = settings.batch_size
    step_s, data_s = [], []
    warm_up = sizes.student_warm_up
    for step in range(warm_up + sizes.student_steps):
        if step == warm_up:
            reset_peak(device)
        t0 = time.perf_counter()
        samples = [frames[(step * b + k) % len(frames)] for k in range(b)]
        t1 = time.perf_counter()
        losses = student_losses(model, samples, settings, distill, torch.device(device), cache)
        optimizer.zero_grad(set_to_none=True)
        losses.terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        sync(device)
        if not torch.isfinite(losses.terms["total"]):
            raise RuntimeError(f"non-finite loss at step {step}")
        if step >= warm_up:
            step_s.append(time.perf_counter() - t1)
            data_s.append(t1 - t0)
    left = samples[0].left
    return {
        "batch": b,
        "image_hw": list(left.shape[:2]),
        "num_planes": config.num_planes,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "distill": {"xgd": distill.xgd.mode, "cld": distill.cld.mode},
        "overrides": overrides,
        "steps_timed": len(step_s),
        "step_s_median": round(statistics.median(step_s), 4),
        "data_s_median": round(statistics.median(data_s), 4),
        **peak_memory(device),
    }


def ddp_run(work: Path, procs: int, cpus: int) -> dict[str, Any]:
    """`train-student` under torchrun on ``procs`` ranks for two steps (one epoch of 2 * procs * batch frames)."""
    import yaml

    params = preset_mapping("default", work)
    frames = len((Path(params["data"]["split_dir"]) / "train.txt").read_text().split())
    train = params["student"]["train"]
    train["epochs"] = 1
    train["batch_size"] = max(1, min(train["batch_size"], frames // (2 * procs)))  # tiny sets: batch 1
    train["frame_limit"] = 2 * procs * train["batch_size"]
    params["student"]["out_dir"] = str(work / "ddp/student")
    params["student"]["pretrain"]["epochs"] = 0  # the step's cost, from a trunk trained from scratch
    params_path = work / "ddp/params.yaml"
    params_path.parent.mkdir(parents=True, exist_ok=True)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cpus // procs))}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={procs}",
        "-m",
        "stereodistill.cli",
        "train-student",
        "--params",
        str(params_path),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}")
    log = (work / "ddp/student/loss_log.csv").read_text().splitlines()
    header, rows = log[0].split(","), [row.split(",") for row in log[1:]]
    seconds = [float(row[header.index("seconds")]) for row in rows]
    return {
        "ranks": procs,
        "batch_per_rank": train["batch_size"],
        "steps": len(rows),
        "step_s": seconds,
        "wall_s": round(wall, 2),
    }


def ablation(
    work: Path, device: str, sizes: Sizes, budget: Budget, teacher: Path | None, cpus: int, report: Report
) -> dict[str, Any]:
    """Trained default teacher and its cache, then students of each variant and seed while time is left."""
    import torch

    from ablation import VARIANTS, Run, ap, execute, run_params
    from stereodistill.params import parse_params
    from stereodistill.student.pretrain import pretrain_trunk_from_params
    from stereodistill.teacher.checkpoint import load_teacher
    from stereodistill.teacher.run import train_teacher_from_params

    base = preset_mapping("default", work)
    base["teacher"]["out_dir"] = str(work / "ablation/teacher")
    base["cache"]["store"] = str(work / "ablation/teacher_cache.zarr")
    if sizes.teacher_epochs is not None:
        base["teacher"]["train"]["epochs"] = sizes.teacher_epochs
    if sizes.pretrain_epochs is not None:
        base["student"]["pretrain"]["epochs"] = sizes.pretrain_epochs
    if device != "cpu":  # the teacher's augmentation on CPU workers while the GPU trains
        base["teacher"]["train"]["num_workers"] = min(8, cpus - 1)
    params = parse_params(base)
    result: dict[str, Any] = {"epochs": sizes.ablation_epochs, "runs": []}
    t0 = time.perf_counter()
    checkpoint = Path(params.teacher.out_dir) / "teacher.pt"
    report.record("ablation", {"status": "running", "teacher": str(teacher) if teacher else "training"})
    if teacher is None:
        train_teacher_from_params(params, progress=False)
        result["teacher"] = f"trained here, {params.teacher.train.epochs} epochs"
        result["teacher_train_s"] = round(time.perf_counter() - t0, 2)
    else:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(teacher.read_bytes())
        result["teacher"] = str(teacher)
    t1 = time.perf_counter()
    write_store(load_teacher(checkpoint, device), params, checkpoint, device, params.cache.batch_size)
    result["cache_s"] = round(time.perf_counter() - t1, 2)
    t2 = time.perf_counter()
    pretrain_trunk_from_params(params, progress=False)  # the trunk every student run starts from
    result["pretrain_s"] = round(time.perf_counter() - t2, 2)
    report.record("ablation", {"status": "running", **result})
    threads = torch.get_num_threads() if device != "cpu" else max(1, cpus)
    last = 0.0
    for seed in sizes.ablation_seeds:
        for variant in sizes.ablation_variants or VARIANTS:
            if budget.left() < 1.2 * last:
                result["stopped"] = f"{budget.left():.0f} s left, a run takes ~{last:.0f} s"
                return result
            run_dir = work / "ablation" / variant / f"seed{seed}"
            mapping = run_params(base, variant, seed, sizes.ablation_epochs, run_dir)
            _, _, last = execute(Run(variant, seed, mapping, run_dir, threads))
            metrics = json.loads((run_dir / "metrics.json").read_text())
            result["runs"].append(
                {
                    "variant": variant,
                    "seed": seed,
                    "seconds": round(last, 2),
                    **{
                        f"{c}_3d_moderate": ap(metrics, c, "3d", "moderate")
                        for c in ("Car", "Pedestrian", "Cyclist")
                    },
                }
            )
            report.record("ablation", {"status": "running", **result})
    return result


# ========================================================================================== summary
def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown(data: dict[str, Any]) -> str:
    """The JSON as a short markdown summary (the tables docs/BENCHMARKS.md takes)."""
    meta, steps = data["meta"], data["steps"]
    lines = [
        "# gpu_check",
        "",
        f"{meta.get('gpu') or 'no GPU'} ({meta['device']}), torch {meta['torch']}, CUDA {meta.get('cuda')}, "
        f"Python {meta['python']}, {meta['cpus']} CPUs; budget {meta['budget_s']} s, used {data['elapsed_s']} s"
        + (" (--small)" if meta["small"] else ""),
        "",
        "| step | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for name, step in steps.items():
        note = step.get("error") or step.get("reason") or step.get("stopped") or ""
        lines.append(f"| {name} | {step['status']} | {_fmt(step.get('seconds'))} | {note[:200]} |")
    for preset in ("kitti", "default"):
        step = steps.get(f"stage_one_{preset}", {})
        if step.get("status") != "ok":
            continue
        lines += [
            "",
            f"## Stage one, {preset} grid ({step['grid']}, {step['points_per_cloud_median']} points per cloud)",
            "",
        ]
        lines += ["| what | frames per forward | frames/s | peak allocated GiB |", "|---|---|---|---|"]
        for row in step["forward"]:
            lines.append(
                f"| teacher forward | {row['batch_frames']} | {_fmt(row['frames_per_s'])} | "
                f"{_fmt(row['peak_allocated_gib'])} |"
            )
        for row in step["cache_write"]:
            lines.append(
                f"| whole cache write (stage / forward {row['stage_over_forward']}) | "
                f"{row['batch_frames']} | {_fmt(row['frames_per_s'])} | {_fmt(row['peak_allocated_gib'])} |"
            )
    rows = [(p, steps.get(f"student_{p}", {})) for p in ("default", "kitti")]
    if any(s.get("status") == "ok" for _, s in rows):
        lines += ["", "## Student training step", ""]
        lines += [
            "| preset | batch | image | planes | params (M) | step s | data s | peak allocated GiB | peak reserved GiB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for preset, s in rows:
            if s.get("status") == "ok":
                lines.append(
                    f"| {preset} | {s['batch']} | {s['image_hw'][1]}x{s['image_hw'][0]} | {s['num_planes']} | "
                    f"{s['parameters_m']} | {_fmt(s['step_s_median'])} | {_fmt(s['data_s_median'])} | "
                    f"{_fmt(s['peak_allocated_gib'])} | {_fmt(s['peak_reserved_gib'])} |"
                )
    runs = steps.get("ablation", {}).get("runs", [])
    if runs:
        lines += ["", "## Ablation runs (3D AP R40, moderate)", ""]
        lines += ["| variant | seed | seconds | Car | Pedestrian | Cyclist |", "|---|---|---|---|---|---|"]
        for r in runs:
            lines.append(
                f"| {r['variant']} | {r['seed']} | {_fmt(r['seconds'])} | {r['Car_3d_moderate']:.2f} | "
                f"{r['Pedestrian_3d_moderate']:.2f} | {r['Cyclist_3d_moderate']:.2f} |"
            )
    return "\n".join(lines) + "\n"


# ============================================================================================== main
def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "stereodistill_gpu_check",
        help="where the data, models and caches go (not under --out: that folder travels back)",
    )
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall seconds for every step together")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny sizes, to test this script on a CPU")
    parser.add_argument(
        "--teacher", type=Path, help="a trained default-grid teacher.pt (else untrained/trained here)"
    )
    parser.add_argument(
        "--ddp-procs", type=int, default=0, help="ranks of the DDP step (0: the GPU count if > 1)"
    )
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run")
    args = parser.parse_args()
    budget = Budget(args.budget_s)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # also for the child processes (torchrun)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU visible to torch (use --device cpu to test on a CPU)")
    sizes = SMALL_SIZES if args.small else GPU_SIZES
    cpus = len(os.sched_getaffinity(0))
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    work = args.work.resolve()
    meta = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if gpus else None,
        "gpu_count": gpus,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpus": cpus,
        "torch_threads": torch.get_num_threads(),
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "small": args.small,
        "budget_s": args.budget_s,
        "work": str(work),
    }
    report = Report(args.out, meta, budget)
    device = "cuda:0" if args.device == "cuda" else "cpu"
    ddp_procs = args.ddp_procs or (gpus if gpus > 1 else 0)
    needed = {STEP_PRESETS.get(step) for step in args.steps}
    presets = [p for p in ("default", "kitti") if p in needed]

    def ddp() -> dict[str, Any]:
        if ddp_procs < 2:
            raise StepSkipped(f"{gpus} GPU(s): DDP needs two ranks (--ddp-procs N forces N ranks)")
        return ddp_run(work, ddp_procs, cpus)

    plan: dict[str, Callable[[], dict[str, Any]]] = {
        "spconv_check": lambda: {
            **spconv_check(device),
            **(teacher_cpu_vs_device(work, device) if device != "cpu" else {}),
        },
        "data": lambda: make_data(work, presets, sizes, cpus),
        "stage_one_kitti": lambda: stage_one(work, "kitti", device, sizes, None),
        "stage_one_default": lambda: stage_one(work, "default", device, sizes, args.teacher),
        "student_default": lambda: student_step(work, "default", device, sizes, args.small),
        "student_kitti": lambda: student_step(work, "kitti", device, sizes, args.small),
        "ddp": ddp,
        "ablation": lambda: ablation(work, device, sizes, budget, args.teacher, cpus, report),
    }
    for name in args.steps:
        report.run(name, sizes.estimates[name], plan[name])
    failed = any(step["status"] == "failed" for step in report.data["steps"].values())
    report.data["finished"] = True
    report.write()
    print((args.out / "gpu_check.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

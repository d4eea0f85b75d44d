"""Stage two's teacher targets: read from the store vs already in memory vs the teacher run online.

Figures 2 and 3 of docs/BENCHMARKS.md, on the params.yaml student, distillation settings, cache and teacher (with
``distill.imitation.mode: bev`` the targets include the teacher's BEV features, read, held or computed alike):

- **read overhead**: a training step whose teacher targets come from the Zarr store (as `train_student` runs,
  DataLoader workers as ``student.train.num_workers``) / the same step with the same targets already in memory.
- **why cache**: the same step with the teacher run online on the step's frames and views (same frames, same
  flips; the cache's coverage rule, float32, no quantisation) / the step reading the store; per epoch, and
  peak memory of each (separate processes: ``ru_maxrss``, and CUDA's max allocated on a GPU).

The three modes train three identical students and take turns step by step on the epoch's batches, so a change in
machine load hits all of them alike; the ratios come from one run. Peak memory comes from one child process per
mode running ``--memory-steps`` steps.

    python benchmarks/bench_student_targets.py [--params params.yaml] [--steps 0 (= one epoch)] [--json OUT]

Exits non-zero when the cache, the teacher or a mode's figure is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from stereodistill.cache.coverage import CoverageRule
from stereodistill.cache.reader import CachedFeatures, CachedFrame, TeacherCache
from stereodistill.cache.writer import frame_inputs, teacher_answer, teacher_bev_features
from stereodistill.checkpoints import default_device
from stereodistill.data.prepared import PreparedSplit
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import Params, load_params
from stereodistill.student.dataset import StudentFrames, StudentSample, collate_samples
from stereodistill.student.losses import student_losses
from stereodistill.student.model import StereoStudent
from stereodistill.student.ranks import epoch_indices
from stereodistill.student.teacher_cache import open_cache, views_needed
from stereodistill.teacher.checkpoint import load_teacher
from stereodistill.teacher.model import SecondTeacher

MODES = ("store", "memory", "online")


class MemoryTargets:
    """The cache's answers (and BEV features, when ``features``) for every frame and view, read once into memory;
    ``read`` / ``read_features`` like a TeacherCache."""

    def __init__(self, cache: TeacherCache, frame_ids: list[str], views: list[str], features: bool) -> None:
        self.answers = {(f, v): cache.read(f, v) for f in frame_ids for v in views}
        self.features = {(f, v): cache.read_features(f, v) for f in frame_ids for v in views if features}

    def read(self, frame_id: str, view: str) -> CachedFrame:
        return self.answers[(frame_id, view)]

    def read_features(self, frame_id: str, view: str) -> CachedFeatures:
        return self.features[(frame_id, view)]


class OnlineTeacher:
    """Runs the teacher on a batch's frames and views and attaches its answers to the samples."""

    def __init__(
        self, teacher: SecondTeacher, split: PreparedSplit, rule: CoverageRule, feature_capacity: int | None
    ) -> None:
        self.teacher, self.split, self.rule = teacher, split, rule
        self.anchors = teacher.grid.shared_anchors(teacher.device)
        self.feature_capacity = feature_capacity  # None: no BEV features (no imitation)

    @torch.no_grad()
    def attach(self, samples: list[StudentSample]) -> list[StudentSample]:
        grid, device = self.teacher.grid, self.teacher.device
        inputs = [
            frame_inputs(self.split, s.index, [s.view], self.teacher.config.point_features, grid)[0]
            for s in samples
        ]
        clouds = [torch.from_numpy(points).to(device) for points, _, _ in inputs]
        features = self.teacher.features(clouds)
        out = self.teacher.head.flatten(self.teacher.head(features))
        attached = []
        for j, (s, (_, boxes, classes)) in enumerate(zip(samples, inputs, strict=True)):
            answer = teacher_answer(
                out, j, boxes.to(device), classes.to(device), self.rule, self.anchors, s.frame_id, s.view
            )
            bev = None
            if self.feature_capacity is not None:
                bev = teacher_bev_features(
                    features[j], boxes, grid, self.feature_capacity, s.frame_id, s.view
                )
            attached.append(dataclasses.replace(s, teacher=answer, teacher_features=bev))
        return attached


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Setup:
    """Everything the modes share, from params.yaml."""

    def __init__(self, params: Params) -> None:
        self.device = default_device()
        self.grid = AnchorGrid.from_params(params.grid, params.source)
        self.config = params.student.model
        self.settings = params.student.train
        self.distill = params.distill
        if not self.distill.enabled:
            raise SystemExit("distill turns XGD and CLD off: there are no teacher targets to measure")
        self.split = PreparedSplit(params.data.prepared_split("train"))
        self.cache = open_cache(params.cache.store, self.grid, self.settings, self.distill, self.split)
        self.teacher_path = Path(params.teacher.out_dir) / "teacher.pt"
        self.coverage = params.cache.coverage
        self.imitation = self.distill.imitation.enabled
        self.feature_capacity = params.cache.feature_capacity
        self.scale = self.cache.feature_scale().to(self.device) if self.imitation else None

    def frames(self, mode: str) -> tuple[StudentFrames, OnlineTeacher | None]:
        s = self.settings
        if mode == "store":
            source: Any = self.cache
        elif mode == "memory":
            source = MemoryTargets(self.cache, list(self.split.frame_ids), views_needed(s), self.imitation)
        else:
            source = None
        frames = StudentFrames(
            self.split,
            s.flip_probability,
            s.image_scale,
            s.seed,
            source,
            s.frame_limit,
            grid=self.grid,
            read_features=self.imitation and source is not None,
        )
        frames.set_epoch(1)
        online = None
        if mode == "online":
            teacher = load_teacher(self.teacher_path, self.device, self.grid)
            c = self.coverage
            online = OnlineTeacher(
                teacher,
                self.split,
                CoverageRule(self.grid, c.iou_floor, c.score_floor, c.capacity),
                self.feature_capacity if self.imitation else None,
            )
        return frames, online

    def student(self) -> tuple[StereoStudent, torch.optim.Optimizer]:
        torch.manual_seed(self.settings.seed)
        channels = self.cache.feature_channels() if self.imitation else 0
        model = StereoStudent(self.config, self.grid, imitation_channels=channels).to(self.device).train()
        return model, torch.optim.AdamW(model.parameters(), lr=self.settings.lr)

    def loader(self, frames: StudentFrames) -> DataLoader:
        s = self.settings
        return DataLoader(
            Subset(frames, epoch_indices(len(frames), s.seed, 1)),
            batch_size=s.batch_size,
            shuffle=False,
            collate_fn=collate_samples,
            num_workers=s.num_workers,
        )


class Mode:
    """One mode's student, optimiser and batch iterator; ``step()`` times fetching, targets and the update."""

    def __init__(self, setup: Setup, mode: str) -> None:
        self.setup, self.mode = setup, mode
        frames, self.online = setup.frames(mode)
        loader = setup.loader(frames)
        self.steps_per_epoch = len(loader)
        self.batches = iter(loader)
        self.model, self.optimizer = setup.student()
        self.seconds: list[float] = []

    def step(self) -> None:
        s = self.setup
        _sync(s.device)
        started = time.perf_counter()
        samples = next(self.batches)
        if self.online is not None:
            samples = self.online.attach(samples)
        cache = s.cache if self.mode == "store" else None
        terms = student_losses(
            self.model, samples, s.settings, s.distill, s.device, cache, imitation_scale=s.scale
        ).terms
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        _sync(s.device)
        self.seconds.append(time.perf_counter() - started)


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status: peak memory cannot be measured here")


def peak_memory(mode: str, params_path: str, steps: int) -> dict[str, float]:
    """Peak RSS (and CUDA max allocated) in MiB of one mode: its own set-up (targets preloaded, teacher loaded)
    and ``steps`` steps. The shared set-up before it (which reads every frame once to fingerprint the split) is
    excluded by resetting the kernel's high-water mark (``/proc/self/clear_refs``) after it."""
    setup = Setup(load_params(params_path))
    baseline = _peak_rss_mib()
    Path("/proc/self/clear_refs").write_text("5")
    runner = Mode(setup, mode)
    for _ in range(steps):
        runner.step()
    result = {"peak_rss_mib": _peak_rss_mib(), "setup_peak_rss_mib": baseline}
    if setup.device.type == "cuda":
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(setup.device) / 2**20
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=0, help="steps per mode (0: one epoch)")
    parser.add_argument(
        "--memory-steps", type=int, default=5, help="steps per mode in the peak-memory children"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--peak-memory-of", choices=MODES, help=argparse.SUPPRESS)  # the child processes
    args = parser.parse_args()
    if args.peak_memory_of:
        print(json.dumps(peak_memory(args.peak_memory_of, args.params, args.memory_steps)))
        return 0

    setup = Setup(load_params(args.params))
    modes = {mode: Mode(setup, mode) for mode in MODES}
    epoch_steps = modes["store"].steps_per_epoch
    steps = args.steps or epoch_steps
    for _ in range(min(steps, epoch_steps)):
        for runner in modes.values():  # take turns, so load changes hit every mode alike
            runner.step()
    # The first step of each mode pays one-off costs (allocator warm-up, first file opens): left out.
    mean = {m: statistics.fmean(r.seconds[1:] or r.seconds) for m, r in modes.items()}
    memory = {}
    for mode in MODES:
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--params",
                args.params,
                "--memory-steps",
                str(args.memory_steps),
                "--peak-memory-of",
                mode,
            ],
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            print(
                f"peak memory of mode {mode} could not be measured:\n{child.stderr[-2000:]}", file=sys.stderr
            )
            return 1
        memory[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    result = {
        "device": str(setup.device),
        "torch_threads": torch.get_num_threads(),
        "num_workers": setup.settings.num_workers,
        "batch_size": setup.settings.batch_size,
        "steps_timed": len(modes["store"].seconds),
        "epoch_steps": epoch_steps,
        "step_seconds": mean,
        "epoch_seconds": {m: v * epoch_steps for m, v in mean.items()},
        "read_overhead_store_over_memory": mean["store"] / mean["memory"],
        "online_over_cached": mean["online"] / mean["store"],
        "peak_memory": memory,
        "command": " ".join(["python", *sys.argv]),
    }
    print("| mode | step (s) | epoch (s) | peak RSS (MiB) |\n|---|---|---|---|")
    for m in MODES:
        print(f"| {m} | {mean[m]:.3f} | {mean[m] * epoch_steps:.1f} | {memory[m]['peak_rss_mib']:.0f} |")
    print(
        f"\nstore / memory = {result['read_overhead_store_over_memory']:.3f}; "
        f"online / store = {result['online_over_cached']:.3f} "
        f"({result['steps_timed']} steps per mode, {result['device']}, {result['torch_threads']} threads)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

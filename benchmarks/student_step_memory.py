"""The memory of one student training step at batch 1, measured on the CPU, as an estimate of its GPU memory.

Runs the training step the `train_student` stage runs (:func:`~stereodistill.student.losses.student_losses`:
forward, GT, depth and distillation losses, backward, an AdamW step) on the first frame of the params' prepared
train split, with its teacher cache when ``distill`` is on. Counts, in bytes:

- ``parameters``; ``gradients`` (the same); ``adamw_state`` (``exp_avg`` and ``exp_avg_sq``: twice the parameters);
- ``saved_activations``: every tensor autograd saves for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``), each storage counted once, parameters excluded. On a GPU this is
  what the forward pass leaves allocated when the backward begins. Each is charged to the part of the network
  that saved it (the top-level module running; ``cost_volume``: the network's own code between its parts, mostly
  the plane sweep; ``losses``: everything after the network's forward);
- ``largest_module_output``: the largest tensor any module returns, a lower bound on the transient memory on top of
  the saved tensors at the forward's peak (a layer's output coexists with its input);
- ``step_peak_rss_delta``: the process's peak RSS during the step minus its RSS just before, the measured peak of
  everything the step allocates (large CPU buffers are returned to the system when freed, so RSS follows the live
  tensors).

The GPU estimate is parameters + gradients + AdamW state + the step's measured peak (the larger of the RSS delta
and saved + largest output; the RSS delta also holds the gradients and the AdamW state, which the sum then
counts twice, a negligible overestimate for a few million parameters); a CUDA context (about 0.3-0.5 GiB), cuDNN
workspaces and the caching allocator's slack come on top.

    python benchmarks/student_step_memory.py [--params params.yaml] [--threads 1] [--json OUT]

Run it from a directory whose params.yaml points at a prepared split (and a cache when distilling), e.g. the work
directory that ``benchmarks/bench_kitti_preset.py --keep`` leaves.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stereodistill.data.prepared import PreparedSplit
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import load_params
from stereodistill.student.dataset import StudentFrames
from stereodistill.student.losses import student_losses
from stereodistill.student.model import StereoStudent
from stereodistill.student.teacher_cache import open_cache

GIB = 1024**3


def current_rss() -> int:
    """Resident bytes of this process now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def peak_rss() -> int:
    """Peak resident bytes of this process so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def largest_output_hooks(model: nn.Module, largest: dict[str, Any]) -> list[Any]:
    """Forward hooks recording the largest tensor a module returns (bytes, module name, shape)."""

    def record(name: str, output: Any) -> None:
        tensors = output if isinstance(output, tuple) else (output,)
        for t in tensors:
            if isinstance(t, Tensor) and t.nbytes > largest["bytes"]:
                largest.update(bytes=t.nbytes, module=name, shape=list(t.shape))

    return [
        module.register_forward_hook(lambda _m, _i, out, n=name: record(n, out))
        for name, module in model.named_modules()
        if name
    ]


def measure(params_path: Path, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    params = load_params(params_path)
    student, distill = params.student, params.distill
    grid = AnchorGrid.from_params(params.grid, params.source)
    torch.manual_seed(student.train.seed)
    split = PreparedSplit(params.data.prepared_split("train"))
    cache = open_cache(params.cache.store, grid, student.train, distill, split) if distill.enabled else None
    frames = StudentFrames(split, 0.0, student.train.image_scale, student.train.seed, cache, 1, grid=grid)
    sample = frames[0]
    model = StereoStudent(student.model, grid)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=student.train.lr)
    parameter_bytes = sum(p.nbytes for p in model.parameters())
    parameter_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}

    saved: dict[int, tuple[str, int]] = {}  # storage pointer -> (part that saved it first, bytes)
    part = ["losses"]

    def pack(t: Tensor) -> Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in parameter_ptrs and ptr not in saved:
            saved[ptr] = (part[0], t.untyped_storage().nbytes())
        return t

    largest: dict[str, Any] = {"bytes": 0, "module": "", "shape": []}
    hooks = largest_output_hooks(model, largest)
    between = "cost_volume"  # the model's own forward between its parts: the plane sweep, soft-argmin
    for name, module in model.named_children():
        hooks.append(module.register_forward_pre_hook(lambda _m, _i, n=name: part.__setitem__(0, n)))
        hooks.append(module.register_forward_hook(lambda _m, _i, _o: part.__setitem__(0, between)))
    hooks.append(model.register_forward_hook(lambda _m, _i, _o: part.__setitem__(0, "losses")))
    device = torch.device("cpu")
    rss_before = current_rss()
    started = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step = student_losses(model, [sample], student.train, distill, device, cache)
    forward_s = time.perf_counter() - started
    step.terms["total"].backward()
    optimizer.step()
    step_s = time.perf_counter() - started
    step_peak = peak_rss() - rss_before
    for hook in hooks:
        hook.remove()
    if not torch.isfinite(step.terms["total"]):
        raise SystemExit(f"non-finite loss {step.terms['total'].item()}")

    saved_bytes = sum(size for _, size in saved.values())
    by_part: dict[str, int] = {}
    for name, size in saved.values():
        by_part[name] = by_part.get(name, 0) + size
    activation_peak = max(step_peak, saved_bytes + largest["bytes"])
    fixed = 4 * parameter_bytes  # parameters, gradients, AdamW's exp_avg and exp_avg_sq
    height, width = sample.left.shape[:2]
    return {
        "params": str(params_path),
        "image_hw": [height, width],
        "num_planes": student.model.num_planes,
        "backbone_channels": list(student.model.backbone_channels),
        "cost_volume": student.model.cost_volume,
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameter_bytes": parameter_bytes,
        "gradient_bytes": parameter_bytes,
        "adamw_state_bytes": 2 * parameter_bytes,
        "saved_activation_bytes": saved_bytes,
        "saved_tensors": len(saved),
        "saved_activation_bytes_by_part": dict(sorted(by_part.items(), key=lambda kv: -kv[1])),
        "largest_module_output": largest,
        "step_peak_rss_delta_bytes": step_peak,
        "gpu_estimate_bytes": fixed + activation_peak,
        "gpu_estimate_gib": (fixed + activation_peak) / GIB,
        "forward_s": forward_s,
        "step_s": step_s,
        "threads": threads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.params, args.threads)
    for key in (
        "parameter_bytes",
        "gradient_bytes",
        "adamw_state_bytes",
        "saved_activation_bytes",
        "step_peak_rss_delta_bytes",
        "gpu_estimate_bytes",
    ):
        print(f"{key[: -len('_bytes')]}: {result[key] / GIB:.2f} GiB")
    for name, size in result["saved_activation_bytes_by_part"].items():
        print(f"  saved by {name}: {size / GIB:.2f} GiB")
    big = result["largest_module_output"]
    print(f"largest module output: {big['bytes'] / GIB:.2f} GiB ({big['module']}, {big['shape']})")
    print(f"parameters: {result['parameters'] / 1e6:.2f} M; step {result['step_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

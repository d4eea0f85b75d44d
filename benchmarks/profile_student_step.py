"""Where a student training step's time goes: forward vs backward, per module, and the costliest operators.

On the params.yaml student (``student.model``, ``student.train.batch_size``, the image size the training run
feeds after ``image_scale``), random images and a loss that reaches every output (head, depth). Also times the
volume convolution (``volume_conv``, a 3x3x3 Conv3d over only ``voxel_z`` height cells) three ways on the same
input: as is, in ``channels_last_3d``, and as the mathematically equal Conv2d over the three stacked height
neighbours, because on CPU oneDNN's Conv3d backward is several times its forward.

    python benchmarks/profile_student_step.py [--params params.yaml] [--threads 1] [--steps 4] [--json OUT]

Ratios are within one run; the absolute times depend on the machine and its load. Exits non-zero when a figure
cannot be measured (a non-finite step, or the Conv2d rewrite disagreeing with the Conv3d).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from stereodistill.data.synth.presets import DEFAULT
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import load_params
from stereodistill.student.model import StereoStudent

MODULES = ("features", "aggregation", "depth_head", "lifter", "volume_conv", "bev", "head")
BASELINE = 0.54  # metres, KITTI's stereo baseline


def _inputs(batch: int, scale: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random stereo images of the synthetic benchmark's camera, downsampled by ``scale`` as training does."""
    h, w = DEFAULT.image_height // scale, DEFAULT.image_width // scale
    f, cu, cv = DEFAULT.focal / scale, DEFAULT.cu / scale, DEFAULT.cv / scale
    p2 = torch.tensor([[f, 0.0, cu, 0.0], [0.0, f, cv, 0.0], [0.0, 0.0, 1.0, 0.0]])
    generator = torch.Generator().manual_seed(0)
    left = torch.rand(batch, 3, h, w, generator=generator)
    right = torch.rand(batch, 3, h, w, generator=generator)
    return left, right, p2.expand(batch, 3, 4).contiguous(), torch.full((batch,), BASELINE)


def _step_loss(model: StereoStudent, inputs: tuple[Tensor, ...]) -> Tensor:
    out = model(*inputs)
    return out.head.cls.square().mean() + out.head.box.square().mean() + out.depth_logits.square().mean()


def time_modules(model: StereoStudent, inputs: tuple[Tensor, ...], steps: int) -> dict[str, Any]:
    """Mean forward and backward seconds per step, and forward seconds per module (first step is warm-up)."""
    starts: dict[str, float] = {}
    forward: dict[str, list[float]] = {name: [] for name in MODULES}
    for name in MODULES:
        module = getattr(model, name)
        module.register_forward_pre_hook(lambda _m, _i, n=name: starts.__setitem__(n, time.perf_counter()))
        module.register_forward_hook(
            lambda _m, _i, _o, n=name: forward[n].append(time.perf_counter() - starts[n])
        )
    fwd, bwd = [], []
    for _ in range(steps + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = _step_loss(model, inputs)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss {loss.item()} in the profiled step")
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    return {
        "forward_s": statistics.fmean(fwd[1:]),
        "backward_s": statistics.fmean(bwd[1:]),
        "module_forward_s": {name: statistics.fmean(v[1:]) for name, v in forward.items()},
    }


def top_operators(model: StereoStudent, inputs: tuple[Tensor, ...], rows: int = 8) -> list[dict[str, Any]]:
    """The ``rows`` operators with the most self CPU time in one step, with their input shapes."""
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        _step_loss(model, inputs).backward()
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    return [
        {
            "operator": e.key,
            "input_shapes": str(e.input_shapes)[:120],
            "calls": e.count,
            "self_ms": e.self_cpu_time_total / 1e3,
            "share": e.self_cpu_time_total / total,
        }
        for e in ranked
    ]


def _timed(fn: Callable[[Tensor], Tensor], x: Tensor, steps: int) -> tuple[float, float]:
    fwd, bwd = [], []
    for _ in range(steps + 1):
        x.grad = None
        t0 = time.perf_counter()
        y = fn(x)
        t1 = time.perf_counter()
        y.backward(torch.ones_like(y))
        fwd.append(t1 - t0)
        bwd.append(time.perf_counter() - t1)
    return statistics.fmean(fwd[1:]), statistics.fmean(bwd[1:])


def conv3d_as_conv2d(conv: nn.Conv3d) -> Callable[[Tensor], Tensor]:
    """A 3x3x3, padding-1 Conv3d written as one Conv2d over the three stacked height neighbours."""
    c_out, c_in = conv.weight.shape[:2]
    weight = conv.weight.detach().permute(0, 2, 1, 3, 4).reshape(c_out, 3 * c_in, 3, 3)

    def forward(x: Tensor) -> Tensor:
        b, c, z, h, w = x.shape
        padded = F.pad(x, (0, 0, 0, 0, 1, 1))
        stacked = torch.stack([padded[:, :, dz : dz + z] for dz in range(3)], dim=1)  # (B, 3, C, Z, H, W)
        stacked = stacked.permute(0, 3, 1, 2, 4, 5).reshape(b * z, 3 * c, h, w)
        return F.conv2d(stacked, weight, padding=1).view(b, z, c_out, h, w).transpose(1, 2)

    return forward


def volume_conv_variants(model: StereoStudent, batch: int, steps: int) -> dict[str, Any]:
    """Forward/backward seconds of the volume Conv3d as is, channels-last, and as a Conv2d; max difference."""
    conv = model.volume_conv[0]
    grid, cfg = model.grid, model.config
    x = torch.randn(batch, conv.in_channels, cfg.voxel_z, grid.ny, grid.nx, requires_grad=True)
    rewritten = conv3d_as_conv2d(conv)
    with torch.no_grad():
        difference = (rewritten(x) - conv(x)).abs().max().item()
    if not difference < 1e-3:
        raise SystemExit(f"the Conv2d rewrite differs from the Conv3d by {difference}")
    x_last = x.detach().to(memory_format=torch.channels_last_3d).requires_grad_()
    conv_last = nn.Conv3d(conv.in_channels, conv.out_channels, 3, padding=1, bias=False)
    conv_last.load_state_dict(conv.state_dict())
    conv_last = conv_last.to(memory_format=torch.channels_last_3d)
    figures = {
        "conv3d": _timed(conv, x, steps),
        "conv3d_channels_last": _timed(conv_last, x_last, steps),
        "conv2d_rewrite": _timed(rewritten, x, steps),
    }
    return {
        "input_shape": list(x.shape),
        "max_abs_difference": difference,
        **{name: {"forward_s": f, "backward_s": b} for name, (f, b) in figures.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    params = load_params(args.params)
    grid = AnchorGrid.from_params(params.grid, params.source)
    model = StereoStudent(params.student.model, grid)
    batch = params.student.train.batch_size
    inputs = _inputs(batch, params.student.train.image_scale)

    step = time_modules(model, inputs, args.steps)
    operators = top_operators(model, inputs)
    volume = volume_conv_variants(model, batch, args.steps)
    result = {
        "threads": args.threads,
        "batch": batch,
        "image": list(inputs[0].shape[-2:]),
        "step": step,
        "top_operators": operators,
        "volume_conv": volume,
    }

    print(
        f"step: forward {step['forward_s']:.3f} s, backward {step['backward_s']:.3f} s "
        f"(backward / forward {step['backward_s'] / step['forward_s']:.2f})"
    )
    for name, seconds in step["module_forward_s"].items():
        print(f"  forward {name:12s} {seconds * 1e3:7.1f} ms")
    print("costliest operators (self CPU, one step):")
    for op in operators:
        print(f"  {op['share']:6.1%} {op['self_ms']:8.1f} ms  {op['operator']}  {op['input_shapes']}")
    print(
        f"volume conv {volume['input_shape']} (max |conv2d rewrite - conv3d| {volume['max_abs_difference']:.1e}):"
    )
    for name in ("conv3d", "conv3d_channels_last", "conv2d_rewrite"):
        f, b = volume[name]["forward_s"], volume[name]["backward_s"]
        print(
            f"  {name:22s} forward {f * 1e3:6.1f} ms  backward {b * 1e3:6.1f} ms  (sum {(f + b) * 1e3:6.1f})"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

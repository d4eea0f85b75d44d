"""The distillation ablation: students of each variant x seeds on one teacher cache, paired by seed.

Variants (``distill`` section overrides; everything else comes from params.yaml):

    gt_only            xgd off,       cld off,      imitation off   the baseline
    whole_box          xgd whole_box, cld off,      imitation off   response KD kept by a whole-box IoU threshold
    xgd                xgd xgd,       cld off,      imitation off   X-component Guided Distillation
    cld                xgd off,       cld diagonal, imitation off   Cross-anchor Logit Distillation
    xgd_cld            xgd xgd,       cld diagonal, imitation off   StereoDistill
    imitation          xgd off,       cld off,      imitation bev   LIGA-Stereo's BEV feature imitation
    imitation_xgd_cld  xgd xgd,       cld diagonal, imitation bev   StereoDistill with LIGA's imitation

The first five are the default (``--variants``); the two imitation variants run when named and need a cache that
holds the teacher's BEV features (``cache.features: [bev]``, params.yaml's default).

Each run is exactly what ``dvc exp run -S distill.xgd.mode=... -S distill.cld.mode=...
-S distill.imitation.mode=... -S student.train.seed=...`` would train (the same library calls as the
train_student / evaluate_student stages), with the ablation's schedule (``--epochs``, default 12 instead of
params.yaml's 24: half the cost per run, docs/BENCHMARKS.md "The ablation's runs").
Runs go ``--jobs`` at a time with ``--threads`` torch threads each and write under ``--out/<variant>/seed<k>/``;
a rerun skips finished runs and resumes interrupted ones from their last epoch checkpoint. Each finished run
leaves a record, ``run.json``: its params, scores, kept shares, seconds, machine, its teacher's AP and the inputs it
trained on (the fingerprints of the student's code, the training split, the trunk and the teacher cache). The
summary reads only the records, so records committed to git carry finished runs to any clone.

The variants of a seed are paired, so they must train on one stage one. Stage one is reproducible on one machine
but not across CPUs (their float rounding differs, and so do the synthetic data, the teacher and the trunk), so the
rule is per seed (:func:`runs_to_do`): a seed whose variants all have records on one stage one and the current
code is done, wherever it ran; otherwise its runs whose records are not on this checkout's stage one run again.
The summary refuses a seed whose runs differ and runs of different code, and lists the stage ones with their seeds.

``--set key=value`` overrides any other params.yaml entry for every run (dotted key, YAML value), as
``dvc exp run -S`` does. When ``student.train.ema_decay > 0`` each run is scored twice: ``metrics.json`` with the
averaged weights (what ``student.pt`` holds) and ``metrics_raw.json`` with the last weights (the training
checkpoint's), so one set of runs measures what the average does, paired by seed.

Stage one and the students' pretrained trunk must be current: the script first runs ``dvc repro cache_teacher
evaluate_teacher pretrain_student`` (a no-op when the pipeline is up to date; ``--no-repro`` skips it). Every run
starts from that one trunk (``student.pretrain``), so the variants of a seed share it with their initial weights.

    python benchmarks/ablation.py [--epochs 12] [--seeds 0 1 2] [--variants ...] [--set KEY=VALUE ...] \
        [--jobs 2] [--threads 1] [--out ablation] [--json docs/ablation.json] [--markdown ablation/results.md] \
        [--figure docs/ablation_gains.png]

The summary (``--json``, ``--markdown``): per variant and class, 3D and BEV AP R40 (strict) mean, std, 95 % CI and
per-seed values; each variant's paired Car 3D moderate gain over gt_only (and over imitation, when it ran); the
paired contrasts of :data:`CONTRASTS` (XGD against the whole-box rule, XGD+CLD against each loss alone, ...);
every gain as ``{"mean", "std", "ci95", "p", "values"}`` (Student's t over seeds, two-sided p of a zero mean); XGD's
kept share per component; minutes per run, the hours of run time in all and the machines the runs ran on (each
run's ``run.json`` records its own; ``wall_minutes`` is this invocation's, the last sitting of a resumed ablation)
and the stage ones the seeds ran on; the teacher's AP is the mean over seeds of their stage one's teacher.
``--figure`` draws the paired gains (needs matplotlib: ``pip install -e ".[plots]"``).

Exits non-zero when a run fails or a run's record is missing.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stereodistill.evaluation.report import write_json_atomic
from stereodistill.params import read_params_yaml

VARIANTS: dict[str, dict[str, str]] = {
    "gt_only": {"xgd": "off", "cld": "off", "imitation": "off"},
    "whole_box": {"xgd": "whole_box", "cld": "off", "imitation": "off"},
    "xgd": {"xgd": "xgd", "cld": "off", "imitation": "off"},
    "cld": {"xgd": "off", "cld": "diagonal", "imitation": "off"},
    "xgd_cld": {"xgd": "xgd", "cld": "diagonal", "imitation": "off"},
    "imitation": {"xgd": "off", "cld": "off", "imitation": "bev"},
    "imitation_xgd_cld": {"xgd": "xgd", "cld": "diagonal", "imitation": "bev"},
}
# What a plain run trains: the response-distillation ablation (the imitation variants need a cache with features).
DEFAULT_VARIANTS = ("gt_only", "whole_box", "xgd", "cld", "xgd_cld")
# Paired Car 3D moderate differences reported besides each variant's gain over gt_only: (variant, baseline).
CONTRASTS = (
    ("xgd", "whole_box"),
    ("xgd_cld", "xgd"),
    ("xgd_cld", "cld"),
    ("imitation_xgd_cld", "imitation"),
    ("imitation_xgd_cld", "xgd_cld"),
)
CLASSES = ("Car", "Pedestrian", "Cyclist")
METRICS = ("3d", "bev")
DIFFICULTIES = ("easy", "moderate", "hard")
# A run's record, in its folder: what the summary reads, and what marks the run finished.
RECORD_NAME = "run.json"
# What a run trained on, from its last training checkpoint (stereodistill.training.run.run_identity): the
# trainer's code fingerprint, the training split's, the pretrained trunk's sha256 and the teacher cache's identity.
INPUTS = ("code", "data", "trunk", "cache")
TRAINER = "stereodistill.student.train"  # the module whose code fingerprint a student run records


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int
    params: dict[str, Any]
    run_dir: Path
    threads: int


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, by the continued fraction of the incomplete beta function (modified Lentz), which converges
    fast for ``x < (a + 1) / (a + b + 2)``; beyond it, the symmetry ``I_x(a, b) = 1 - I_{1-x}(b, a)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - regularized_incomplete_beta(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def t_two_sided_p(t: float, df: int) -> float:
    """Two-sided p-value of Student's t statistic ``t`` with ``df`` degrees of freedom: ``P(|T| >= |t|)``."""
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_critical_975(df: int) -> float:
    """The two-sided 95 % critical value of Student's t (``P(|T| >= t) = 0.05``), by bisection."""
    low, high = 0.0, 1000.0
    for _ in range(200):
        mid = (low + high) / 2.0
        low, high = (mid, high) if t_two_sided_p(mid, df) > 0.05 else (low, mid)
    return (low + high) / 2.0


def apply_overrides(params: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``params`` with each ``dotted.key=value`` of ``overrides`` set (the value parsed as YAML); the key must exist."""
    params = copy.deepcopy(params)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise SystemExit(f"--set {item!r}: params has no key {key!r}")
        node[last] = read_params_yaml(text)
    return params


def run_params(base: dict[str, Any], variant: str, seed: int, epochs: int, run_dir: Path) -> dict[str, Any]:
    """params.yaml with the variant's distill modes, the seed, the ablation schedule and the run's own paths."""
    params = copy.deepcopy(base)
    for loss in ("xgd", "cld", "imitation"):
        params["distill"].setdefault(loss, {})["mode"] = VARIANTS[variant][loss]
    params["student"]["train"]["seed"] = seed
    params["student"]["train"]["epochs"] = epochs
    params["student"]["out_dir"] = str(run_dir / "model")
    params["evaluate"]["student_predictions"] = str(run_dir / "predictions")
    params["evaluate"]["student_metrics"] = str(run_dir / "metrics.json")
    params["evaluate"]["student_breakdown"] = str(run_dir / "breakdown.json")
    return params


def machine(threads: int) -> str:
    """Where a run runs, in words: the CPU model and core count, or the GPU when torch uses one; torch's version
    and the run's torch threads."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    where = f"{cpu}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        where = f"{torch.cuda.get_device_name(0)} ({where})"
    return f"{where}; torch {torch.__version__}, {threads} thread{'s' if threads > 1 else ''}"


def finished_record(run_dir: Path, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The run's record (``run_dir/run.json``) when the run finished, under ``params`` when given; else None."""
    path = run_dir / RECORD_NAME
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if "ap_r40_strict" not in record or (params is not None and record.get("params") != params):
        return None
    return record


def run_record(run: Run, seconds: float) -> dict[str, Any]:
    """What the summary needs of a finished run, read from its outputs: its params, time and machine, the inputs
    it trained on (from its last training checkpoint), its AP table, its last weights' Car 3D moderate (when it averages
    its weights) and XGD's kept shares."""
    from stereodistill.checkpoints import load_checkpoint
    from stereodistill.student.checkpoint import MODEL_KIND
    from stereodistill.training.run import CHECKPOINT_NAME

    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    teacher = json.loads(Path(run.params["evaluate"]["teacher_metrics"]).read_text())
    training = load_checkpoint(run.run_dir / "model" / CHECKPOINT_NAME, f"{MODEL_KIND}-training")
    raw = run.run_dir / "metrics_raw.json"
    return {
        "params": run.params,
        "seconds": seconds,
        "machine": machine(run.threads),
        "inputs": {key: training[key] for key in INPUTS},
        "ap_r40_strict": ap_table(metrics),
        "teacher_ap_r40_strict": ap_table(teacher),
        "car_3d_moderate_last_weights": (
            ap(json.loads(raw.read_text()), "Car", "3d", "moderate") if raw.exists() else None
        ),
        "xgd_kept_share": kept_shares(run.run_dir / "model" / "loss_log.csv"),
    }


def execute(run: Run) -> tuple[str, int, float]:
    """Train and evaluate one run in this (fresh) process, resuming its checkpoint, then write its record."""
    import torch

    from stereodistill.params import parse_params
    from stereodistill.student.evaluate import evaluate_student_from_params
    from stereodistill.student.run import train_student_from_params

    torch.set_num_threads(run.threads)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / RECORD_NAME).unlink(missing_ok=True)
    start = time.perf_counter()
    params = parse_params(run.params)
    train_student_from_params(params, resume=True, restart_on_mismatch=True, progress=False)
    evaluate_student_from_params(params, progress=False)
    if params.student.train.ema_decay > 0:
        evaluate_last_weights(params, run.run_dir)
    record = run_record(run, time.perf_counter() - start)
    write_json_atomic(run.run_dir / RECORD_NAME, record)
    return run.variant, run.seed, record["seconds"]


def evaluate_last_weights(params: Any, run_dir: Path) -> None:
    """Score the run's last (not averaged) weights, read from its final training checkpoint, into
    ``run_dir/metrics_raw.json`` (predictions under ``run_dir/predictions_raw``)."""
    from stereodistill.checkpoints import default_device, load_checkpoint
    from stereodistill.student.checkpoint import MODEL_KIND, load_student
    from stereodistill.student.evaluate import evaluate_student_model
    from stereodistill.training.run import CHECKPOINT_NAME

    out_dir = Path(params.student.out_dir)
    model, ckpt = load_student(out_dir / f"{MODEL_KIND}.pt", default_device())
    training = load_checkpoint(out_dir / CHECKPOINT_NAME, f"{MODEL_KIND}-training")
    model.load_state_dict(training["model"])
    evaluate_student_model(
        params,
        model,
        int(ckpt["settings"]["image_scale"]),
        run_dir / "predictions_raw",
        run_dir / "metrics_raw.json",
        progress=False,
    )


def ap(metrics: dict, cls: str, metric: str, difficulty: str) -> float:
    return float(metrics["results"][cls]["strict"]["R40"][metric][difficulty])


def ap_table(metrics: dict) -> dict[str, dict[str, dict[str, float]]]:
    """AP R40 (strict) per class, 3D / BEV and difficulty, of an evaluation's metrics file."""
    return {
        cls: {metric: {d: ap(metrics, cls, metric, d) for d in DIFFICULTIES} for metric in METRICS}
        for cls in CLASSES
    }


def kept_shares(loss_log: Path) -> dict[str, float]:
    """Mean over all steps of each ``xgd_kept_<component>`` column (empty for runs without XGD)."""
    with loss_log.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{loss_log}: empty loss log")
    names = [c for c in rows[0] if c.startswith("xgd_kept_")]
    return {n.removeprefix("xgd_kept_"): statistics.fmean(float(r[n]) for r in rows) for n in names}


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean, sample std, the 95 % confidence interval of the mean (Student's t) and the two-sided p-value of a
    zero mean (one-sample t-test) of ``values``; one value has neither a std, an interval nor a p (``None``)."""
    mean = statistics.fmean(values)
    n = len(values)
    if n < 2:
        return {"mean": mean, "std": None, "ci95": None, "p": None, "values": values}
    std = statistics.stdev(values)
    half = t_critical_975(n - 1) * std / n**0.5
    p = t_two_sided_p(mean / (std / n**0.5), n - 1) if std > 0 else (1.0 if mean == 0 else 0.0)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "p": p, "values": values}


def canonical(value: Any) -> str:
    """``value`` as sorted JSON, so values read back from a record compare equal to freshly computed ones."""
    return json.dumps(value, sort_keys=True)


def current_inputs(params: Any) -> dict[str, Any]:
    """The :data:`INPUTS` a run of ``params`` (parsed) would train on now, as the student's trainer records them:
    the code fingerprint of :data:`TRAINER`, the training split's fingerprint, the pretrained trunk's sha256
    (None when the student trains from scratch) and the teacher cache's identity (None when there is none)."""
    from stereodistill.cache.reader import TeacherCache
    from stereodistill.cache.store import file_sha256
    from stereodistill.data.prepared import PreparedSplit, split_fingerprint
    from stereodistill.fingerprint import code_fingerprint
    from stereodistill.student.pretrain import trunk_path

    cache = Path(params.cache.store)
    return {
        "code": code_fingerprint(TRAINER),
        "data": split_fingerprint(PreparedSplit(params.data.prepared_split("train"))),
        "trunk": file_sha256(trunk_path(params)) if params.student.pretrain.epochs > 0 else None,
        "cache": TeacherCache(cache).identity if cache.exists() else None,
    }


def agrees(inputs: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a record's ``inputs`` are ``current`` (a key the run did not use, None, agrees with anything)."""
    return all(inputs[key] is None or canonical(inputs[key]) == canonical(current[key]) for key in INPUTS)


def block_inputs(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The inputs that the runs of one seed shared (a key none of them used is None), or None when they differ."""
    shared: dict[str, Any] = {}
    for key in INPUTS:
        values = {canonical(r["inputs"][key]) for r in records if r["inputs"][key] is not None}
        if len(values) > 1:
            return None
        shared[key] = json.loads(values.pop()) if values else None
    return shared


def runs_to_do(runs: list[Run], current: dict[str, Any]) -> list[Run]:
    """Of ``runs``, those still to train. The variants of a seed are paired, so they must share one stage one
    (training split, trunk, cache). A seed whose runs all have records under their params, on one stage one and
    the current code, is done, wherever it ran; otherwise each of its runs is done only if its record is on the
    current inputs (another machine's stage one differs in rounding), and the others run here."""
    todo = []
    for seed in dict.fromkeys(run.seed for run in runs):
        block = [run for run in runs if run.seed == seed]
        records = [finished_record(run.run_dir, run.params) for run in block]
        if all(r is not None for r in records):
            shared = block_inputs(records)  # type: ignore[arg-type]
            if shared is not None and canonical(shared["code"]) == canonical(current["code"]):
                continue
        todo += [
            run
            for run, r in zip(block, records, strict=True)
            if r is None or not agrees(r["inputs"], current)
        ]
    return todo


def stage_ones(
    records: dict[str, dict[str, Any]], seeds: list[int], variants: list[str]
) -> list[dict[str, Any]]:
    """The stage ones (training split, trunk, teacher cache) the seeds ran on, each with its seeds and its
    teacher's AP; ``records`` maps ``variant/seed<k>`` to its record. Refuses a seed whose runs differ and runs
    of different code."""
    groups: dict[str, dict[str, Any]] = {}
    codes = set()
    for seed in seeds:
        block = [records[f"{variant}/seed{seed}"] for variant in variants]
        shared = block_inputs(block)
        if shared is None:
            raise SystemExit(
                f"the runs of seed {seed} did not all train on one stage one (code, data, trunk, cache)"
            )
        codes.add(shared.pop("code"))
        group = groups.setdefault(
            canonical(shared),
            {"inputs": shared, "seeds": [], "teacher_ap_r40_strict": block[0]["teacher_ap_r40_strict"]},
        )
        group["seeds"].append(seed)
    if len(codes) > 1:
        raise SystemExit(f"the runs ran {len(codes)} versions of the student's code: {sorted(codes)}")
    return list(groups.values())


def summarise(out: Path, seeds: list[int], variants: list[str] | None = None) -> dict[str, Any]:
    """Per variant: AP mean/std over seeds, paired Car 3D moderate gain over gt_only, kept shares, run times;
    the stage ones the seeds ran on (inputs, seeds, teacher AP), all from the runs' records
    (``out/<variant>/seed<k>/run.json``). Refuses a seed whose runs did not share one stage one, and runs of
    different code.

    ``variants`` (default :data:`DEFAULT_VARIANTS`; taken in :data:`VARIANTS` order) must include ``gt_only``,
    the baseline of the gains.
    """
    chosen = [v for v in VARIANTS if v in (DEFAULT_VARIANTS if variants is None else variants)]
    if "gt_only" not in chosen:
        raise SystemExit("the summary needs the gt_only baseline among the variants")
    records: dict[str, dict[str, Any]] = {}
    for variant in chosen:
        for seed in seeds:
            record = finished_record(out / variant / f"seed{seed}")
            if record is None:
                path = out / variant / f"seed{seed}" / RECORD_NAME
                raise SystemExit(
                    f"{path}: missing or incomplete — the run {variant}/seed{seed} did not finish"
                )
            records[f"{variant}/seed{seed}"] = record
    summary: dict[str, Any] = {
        "seeds": seeds,
        "stage_ones": stage_ones(records, seeds, chosen),
        "variants": {},
    }
    machines: dict[str, int] = {}  # where the runs ran -> how many
    for record in records.values():
        where = record.get("machine", "not recorded")
        machines[where] = machines.get(where, 0) + 1
    for variant in chosen:
        per_seed = [records[f"{variant}/seed{seed}"] for seed in seeds]
        ap_table = {
            cls: {
                metric: {
                    d: mean_std([r["ap_r40_strict"][cls][metric][d] for r in per_seed]) for d in DIFFICULTIES
                }
                for metric in METRICS
            }
            for cls in CLASSES
        }
        raw = [r["car_3d_moderate_last_weights"] for r in per_seed]
        summary["variants"][variant] = {
            "ap_r40_strict": ap_table,
            "car_3d_moderate_last_weights": None if None in raw else mean_std(raw),
            "xgd_kept_share": {
                n: mean_std([r["xgd_kept_share"][n] for r in per_seed]) for n in per_seed[0]["xgd_kept_share"]
            },
            "run_seconds": [r["seconds"] for r in per_seed],
        }
    moderate = {
        v: e["ap_r40_strict"]["Car"]["3d"]["moderate"]["values"] for v, e in summary["variants"].items()
    }

    def gain(variant: str, baseline: str) -> dict[str, Any]:
        return mean_std([v - b for v, b in zip(moderate[variant], moderate[baseline], strict=True)])

    for variant, entry in summary["variants"].items():
        entry["car_3d_moderate_gain_over_gt_only"] = gain(variant, "gt_only")
        if "imitation" in summary["variants"]:
            entry["car_3d_moderate_gain_over_imitation"] = gain(variant, "imitation")
    summary["contrasts"] = {
        f"car_3d_moderate_gain_{variant}_over_{baseline}": gain(variant, baseline)
        for variant, baseline in CONTRASTS
        if variant in summary["variants"] and baseline in summary["variants"]
    }
    summary["machines"] = machines
    summary["run_hours"] = sum(s for e in summary["variants"].values() for s in e["run_seconds"]) / 3600
    # The teacher of each seed's stage one, averaged over seeds (one teacher when every seed ran on one).
    teachers = [records[f"{chosen[0]}/seed{seed}"]["teacher_ap_r40_strict"] for seed in seeds]
    summary["teacher_ap_r40_strict"] = {
        cls: {
            metric: {d: statistics.fmean(t[cls][metric][d] for t in teachers) for d in DIFFICULTIES}
            for metric in METRICS
        }
        for cls in CLASSES
    }
    return summary


def markdown(summary: dict[str, Any]) -> str:
    def cell(entry: dict[str, Any]) -> str:
        return f"{entry['mean']:.2f}" if entry["std"] is None else f"{entry['mean']:.2f} ± {entry['std']:.2f}"

    lines = []
    for cls in CLASSES:
        lines += [
            f"**{cls}** — AP R40 (strict IoU), mean ± std over seeds {summary['seeds']}",
            "",
            "| variant | 3D easy | 3D moderate | 3D hard | BEV easy | BEV moderate | BEV hard |",
            "|---|---|---|---|---|---|---|",
        ]
        teacher = summary["teacher_ap_r40_strict"][cls]
        lines.append(
            f"| teacher (LiDAR{', mean of the stage ones' if len(summary['stage_ones']) > 1 else ''}) | "
            + " | ".join(f"{teacher[m][d]:.2f}" for m in METRICS for d in DIFFICULTIES)
            + " |"
        )
        for variant, entry in summary["variants"].items():
            table = entry["ap_r40_strict"][cls]
            lines.append(
                f"| {variant} | "
                + " | ".join(cell(table[m][d]) for m in METRICS for d in DIFFICULTIES)
                + " |"
            )
        lines.append("")

    def interval(entry: dict[str, Any]) -> str:
        if entry["ci95"] is None:
            return "— (one seed)"
        low, high = entry["ci95"]
        return f"[{low:+.2f}, {high:+.2f}]"

    lines += [
        "**Car 3D moderate**: per seed, with the last (not averaged) weights where the runs average them, and the "
        "gain over gt_only (paired by seed, 95 % CI of the mean); **XGD kept-positive share** (mean over steps)",
        "",
        "| variant | per seed | last weights | gain (mean ± std) | gain 95 % CI | p | kept share | minutes per run "
        "(median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, entry in summary["variants"].items():
        gain = entry["car_3d_moderate_gain_over_gt_only"]
        kept = ", ".join(f"{n} {v['mean']:.3f}" for n, v in entry["xgd_kept_share"].items()) or "—"
        # The median: a run resumed after a stop records only its last sitting's time.
        minutes = statistics.median(entry["run_seconds"]) / 60
        moderate = entry["ap_r40_strict"]["Car"]["3d"]["moderate"]
        per_seed = ", ".join(f"{v:.2f}" for v in moderate["values"])
        raw = entry["car_3d_moderate_last_weights"]
        last = "—" if raw is None else f"{cell(raw)} ({', '.join(f'{v:.2f}' for v in raw['values'])})"
        lines.append(
            f"| {variant} | {per_seed} | {last} | {cell(gain)} | {interval(gain)} | {p_value(gain)} | {kept} "
            f"| {minutes:.1f} |"
        )
    over_imitation = {
        variant: entry["car_3d_moderate_gain_over_imitation"]
        for variant, entry in summary["variants"].items()
        if variant != "imitation" and "car_3d_moderate_gain_over_imitation" in entry
    }
    if over_imitation:
        lines += [
            "",
            "**Gain over imitation** (LIGA-Stereo's own distillation), Car 3D moderate (same seeds, 95 % CI of the "
            "mean, two-sided p of a zero mean)",
            "",
            "| variant | mean ± std | 95 % CI | p |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {variant} | {cell(entry)} | {interval(entry)} | {p_value(entry)} |"
            for variant, entry in over_imitation.items()
        ]
    if summary["contrasts"]:
        lines += [
            "",
            "**Paired contrasts**, Car 3D moderate (same seeds, 95 % CI of the mean, two-sided p of a zero mean)",
            "",
            "| contrast | mean ± std | 95 % CI | p |",
            "|---|---|---|---|",
        ]
        for name, entry in summary["contrasts"].items():
            label = name.removeprefix("car_3d_moderate_gain_").replace("_over_", " − ")
            lines.append(f"| {label} | {cell(entry)} | {interval(entry)} | {p_value(entry)} |")
    lines += [
        "",
        f"**Runs**: {summary['run_hours']:.1f} hours of recorded run time in all (a run resumed after a stop "
        "records only its last sitting), on",
    ]
    lines += [f"- {where}: {count} runs" for where, count in summary["machines"].items()]
    lines += ["", "**Stage ones** (each seed's variants share one training split, trunk and teacher cache)"]
    for group in summary["stage_ones"]:
        inputs, car = group["inputs"], group["teacher_ap_r40_strict"]["Car"]["3d"]["moderate"]
        teacher = ((inputs["cache"] or {}).get("teacher") or {}).get("sha256") or "—"
        lines.append(
            f"- trunk {str(inputs['trunk'])[:12]}, teacher {teacher[:12]}, teacher Car 3D moderate {car:.2f}: "
            f"seeds {', '.join(str(seed) for seed in group['seeds'])}"
        )
    return "\n".join(lines) + "\n"


def p_value(entry: dict[str, Any]) -> str:
    return "—" if entry["p"] is None else f"{entry['p']:.3f}"


def paired_gains(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The figure's rows, top to bottom: each variant's gain over gt_only, then the contrasts."""
    rows = [
        (f"{variant} − gt_only", entry["car_3d_moderate_gain_over_gt_only"])
        for variant, entry in summary["variants"].items()
        if variant != "gt_only"
    ]
    rows += [
        (name.removeprefix("car_3d_moderate_gain_").replace("_over_", " − "), entry)
        for name, entry in summary["contrasts"].items()
    ]
    return rows


def write_figure(summary: dict[str, Any], path: Path) -> None:
    """A PNG of the per-seed paired gains (dots), their mean (bar) and 95 % CI (whiskers), one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = paired_gains(summary)
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.4), dpi=120)
    for y, (_, entry) in enumerate(rows):
        values = entry["values"]
        offsets = [0.18 * ((i % 5) - 2) / 2 for i in range(len(values))]  # spread the dots of one row
        ax.scatter(values, [y + o for o in offsets], s=12, color="0.55", zorder=2)
        if entry["ci95"] is not None:
            low, high = entry["ci95"]
            color = "tab:blue" if low > 0 or high < 0 else "tab:orange"
            ax.errorbar(
                entry["mean"],
                y,
                xerr=[[entry["mean"] - low], [high - entry["mean"]]],
                fmt="none",
                ecolor=color,
                elinewidth=2,
                capsize=4,
                zorder=3,
            )
        ax.plot([entry["mean"]] * 2, [y - 0.3, y + 0.3], color="black", linewidth=2, zorder=4)
    ax.axvline(0.0, color="0.3", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("paired difference, Car 3D moderate AP R40 (strict)")
    ax.set_title(
        f"Paired gains over {len(summary['seeds'])} seeds: mean (bar), 95 % CI (blue: excludes 0), seeds (dots)",
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--epochs", type=int, default=12, help="the ablation preset's schedule length")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params.yaml entry for every run (dotted key, YAML value); repeatable",
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=Path("ablation"))
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument(
        "--figure", type=Path, help="write the paired-gain figure (PNG, needs matplotlib) here"
    )
    parser.add_argument("--no-repro", action="store_true", help="do not bring stage one up to date first")
    args = parser.parse_args()

    from stereodistill.params import parse_params

    base = apply_overrides(read_params_yaml(Path(args.params).read_text()), args.overrides)
    parse_params(base)  # a bad params file or override fails here, before any run
    if not args.no_repro:
        if shutil.which("dvc") is None:
            raise SystemExit(
                "dvc is not on PATH: activate the environment StereoDistill is installed in "
                "(e.g. `. .venv/bin/activate`); the pipeline's stages also run its `python`"
            )
        subprocess.run(["dvc", "repro", "cache_teacher", "evaluate_teacher", "pretrain_student"], check=True)
    # Seed-major order: after the first len(variants) runs every variant has a result.
    runs = [
        Run(
            v,
            s,
            run_params(base, v, s, args.epochs, args.out / v / f"seed{s}"),
            args.out / v / f"seed{s}",
            args.threads,
        )
        for s in args.seeds
        for v in args.variants
    ]
    todo = runs_to_do(runs, current_inputs(parse_params(base)))
    print(f"{len(runs) - len(todo)} of {len(runs)} runs finished already; {len(todo)} to run", flush=True)
    start = time.perf_counter()
    failed = []
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.jobs, maxtasksperchild=1) as pool:
        results = [pool.apply_async(execute, (run,)) for run in todo]
        for run, result in tqdm(zip(todo, results, strict=True), total=len(todo), desc="ablation runs"):
            try:
                variant, seed, seconds = result.get()
                tqdm.write(f"{variant}/seed{seed}: {seconds / 60:.1f} min")
            except Exception as err:  # noqa: BLE001 - report every failed run, then exit non-zero
                failed.append(f"{run.variant}/seed{run.seed}: {err}")
                tqdm.write(f"FAILED {failed[-1]}")
    if failed:
        print("failed runs:\n" + "\n".join(failed), file=sys.stderr)
        return 1
    if "gt_only" not in args.variants:
        print("no gt_only baseline among the variants: no summary", file=sys.stderr)
        return 0
    summary = summarise(args.out, args.seeds, args.variants)
    summary["epochs"] = args.epochs
    summary["wall_minutes"] = (time.perf_counter() - start) / 60
    summary["command"] = " ".join(["python", *sys.argv])
    table = markdown(summary)
    print(table)
    print(f"wall: {summary['wall_minutes']:.1f} min for {len(runs)} runs, {args.jobs} at a time")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    if args.figure:
        write_figure(summary, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())

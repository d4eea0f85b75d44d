"""`dvc repro` on a fresh clone: wall time and peak RSS per stage, then a `dvc repro` with nothing changed.

Clones ``--repo`` (default: this checkout's HEAD) into ``--workdir``, runs every stage of dvc.yaml in pipeline
order with ``dvc repro --single-item STAGE`` (so each stage is timed on its own: wall seconds, and the peak RSS of
the stage's process tree from ``wait4``), then times ``dvc repro`` again, which must find nothing to do. The clone's
own package is imported (``PYTHONPATH`` points at it), not an installed copy.

    python benchmarks/bench_pipeline.py [--repo .] [--workdir /tmp/bench_pipeline] [--json OUT] [--keep]

On the CPU default params this is the whole pipeline: about 35-45 minutes on 2 cores. Exits non-zero when a
stage fails or the no-op repro reruns anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml


def timed(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[int, float, float]:
    """Run ``args``; (exit status, wall seconds, peak RSS MiB of its whole process tree)."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(args)}\n")
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, seconds, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", default=".", help="git repository (or URL) to clone")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_pipeline"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the clone and its outputs")
    args = parser.parse_args()

    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    subprocess.run(["git", "clone", "--quiet", args.repo, str(args.workdir)], check=True)
    clone = args.workdir
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True
    ).stdout.strip()
    stages = list(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])
    env = {**os.environ, "PYTHONPATH": str(clone)}
    log = args.workdir.parent / f"{args.workdir.name}.log"
    log.write_text("")
    dvc = [sys.executable, "-m", "dvc"]
    rows = []
    for stage in stages:
        status, seconds, rss = timed([*dvc, "repro", "--single-item", stage], clone, env, log)
        rows.append({"stage": stage, "seconds": seconds, "peak_rss_mib": rss, "status": status})
        print(f"{stage}: {seconds:.1f} s, peak RSS {rss:.0f} MiB", flush=True)
        if status != 0:
            print(f"stage {stage} failed (exit {status}); see {log}", file=sys.stderr)
            return 1
    status, noop_seconds, _ = timed([*dvc, "repro"], clone, env, log)
    reran = "Running stage" in log.read_text().rsplit("$ ", 1)[-1]
    if status != 0 or reran:
        print(f"the no-op `dvc repro` {'failed' if status else 'reran a stage'}; see {log}", file=sys.stderr)
        return 1
    total = sum(r["seconds"] for r in rows)
    result = {
        "commit": commit,
        "stages": rows,
        "total_seconds": total,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in rows),
        "noop_repro_seconds": noop_seconds,
        "cpus": os.cpu_count(),
        "command": " ".join(["python", *sys.argv]),
    }
    print("| stage | wall (min) | peak RSS (MiB) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['seconds'] / 60:.1f} | {r['peak_rss_mib']:.0f} |")
    print(f"| all stages | {total / 60:.1f} | {result['peak_rss_mib']:.0f} |")
    print(f"\nno-op `dvc repro`: {noop_seconds:.1f} s (commit {commit[:10]})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(clone)
    return 0


if __name__ == "__main__":
    sys.exit(main())

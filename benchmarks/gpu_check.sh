#!/usr/bin/env bash
# The GPU check in one command, within TOTAL_S seconds (default 480) on a lent GPU machine with no network:
# unpacks the kit (.gpu/, built here by benchmarks/gpu_kit.sh and carried with the working tree) onto PYTHONPATH,
# then runs benchmarks/gpu_check.py with the time left. Results: $OUT/gpu_check.{json,md} (OUT defaults to
# ./gpu_check_out), the driver's log in $OUT/gpu_check.log.
#
#     bash benchmarks/gpu_check.sh [gpu_check.py options ...]          # on the GPU machine
#     bash benchmarks/gpu_check.sh --device cpu --small                 # here, to test it
#
# Without .gpu/spconv-cp312.tar.xz the spconv already importable is used. The driver gets the time left minus a
# margin as its budget, and `timeout` ends it at TOTAL_S whatever it is doing; it rewrites its results after every
# step, so they survive that.
set -uo pipefail

START=$(date +%s)
TOTAL_S=${TOTAL_S:-480}
MARGIN_S=${MARGIN_S:-30}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu_check_out}
SITE=${GPU_SITE:-${TMPDIR:-/tmp}/stereodistill_gpu_site}
export OUT
mkdir -p "$OUT"

"$PYTHON" "$REPO/benchmarks/gpu_site.py" --kit "$REPO/.gpu" --site "$SITE" --check 2>&1 | tee "$OUT/gpu_site.log"
status=${PIPESTATUS[0]}
if [[ $status -ne 0 ]]; then
    echo "unpacking the kit failed (exit $status); see $OUT/gpu_site.log" >&2
    exit "$status"
fi
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    > "$OUT/nvidia-smi.csv" 2>&1

left=$((TOTAL_S - ($(date +%s) - START)))
budget=$((left - MARGIN_S))
echo "kit unpacked in $((TOTAL_S - left)) s; driver budget ${budget} s, hard limit ${left} s"
timeout --signal=TERM --kill-after=10 "$left" \
    "$PYTHON" "$REPO/benchmarks/gpu_check.py" --out "$OUT" --budget-s "$budget" "$@" 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
echo "gpu_check.py exit $status after $(($(date +%s) - START)) s; results in $OUT"
exit "$status"

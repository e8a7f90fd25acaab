#!/usr/bin/env bash
# The GPU check: what has never run without a GPU (NCCL, AMP, GPU resources), on one GPU in
# under 8 minutes, its figures in OUT_DIR.
#
#   benchmarks/gpu_check.sh OUT_DIR
#
# Steps, each under its own timeout and all under one 470 s deadline, so one hang cannot eat the
# run; a failed or timed-out step is recorded and the next one runs:
#   1. gpu_tests     the `gpu`-marked tests (pytest -m gpu)
#   2. train_bf16    `tauray train` on 1 GPU in bf16: steps/s, peak GPU memory
#   3. loss_memory   benchmarks/loss_memory.py --device cuda, one rank, global batch 16k, 64k,
#                    256k: the tiled loss at all three in one run, open_clip at 16k and 64k in
#                    runs of their own (an out-of-memory there ends only that run); open_clip at
#                    256k is not run: one 262,144^2 float32 logit matrix alone is 256 GiB
#   4. sweep_packed  a 4-trial `tauray tune` with --gpus-per-worker 0.25 (four trials at once
#                    on one GPU): wall time, trials completed, most GPU processes at once
# OUT_DIR gets each step's log, loss_memory_*.json, gpu_memory_*.csv (nvidia-smi samples every
# 200 ms) and summary.txt (one line per step: status, seconds, figures).
#
# Without a GPU (no working `nvidia-smi -L`, or torch.cuda.is_available() false) it prints one
# line saying so, then the commands it would run, creates nothing, and exits 0.
# Exit codes: 0 every step passed (or no GPU), 1 a step failed or timed out, 2 usage.
#
# Environment: PYTHON (default .venv/bin/python if present, else python3), TAURAY (default the
# `tauray` beside PYTHON, else on PATH), GPU_CHECK_DEADLINE_S (default 470).
set -u -o pipefail

if [[ $# -ne 1 || -z "$1" || "$1" == -* ]]; then
    echo "usage: benchmarks/gpu_check.sh OUT_DIR" >&2
    exit 2
fi
OUT=$(realpath -m -- "$1")
if [[ "$OUT" =~ [[:space:]] ]]; then
    echo "gpu_check: OUT_DIR must not contain whitespace, got '$OUT'" >&2
    exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [[ -z "${TAURAY:-}" ]]; then
    TAURAY="$(dirname "$PYTHON")/tauray"
    [[ -x "$TAURAY" ]] || TAURAY=tauray
fi
DEADLINE_S=${GPU_CHECK_DEADLINE_S:-470}
TRAIN_BATCH=128

# name | own timeout (s) | command (OUT_DIR substituted)
STEPS=(
    "gpu_tests|90|$PYTHON -m pytest -m gpu -q -p no:cacheprovider --junitxml $OUT/gpu_tests.xml tests"
    "train_bf16|120|$TAURAY train --method simclr --workers 1 --gpus-per-worker 1 --set precision=bf16 --set epochs=3 --set batch_size_per_worker=$TRAIN_BATCH --set data.loader_workers=2 --storage-path $OUT/train_storage --name gpu-check-bf16"
    "loss_memory_tiled|150|$PYTHON benchmarks/loss_memory.py --device cuda --world-size 1 --batch-sizes 16384 65536 262144 --implementations ours-tiled --repeats 2 --json $OUT/loss_memory_tiled.json"
    "loss_memory_open_clip_16k|45|$PYTHON benchmarks/loss_memory.py --device cuda --world-size 1 --batch-sizes 16384 --implementations open_clip --repeats 2 --json $OUT/loss_memory_open_clip_16k.json"
    "loss_memory_open_clip_64k|60|$PYTHON benchmarks/loss_memory.py --device cuda --world-size 1 --batch-sizes 65536 --implementations open_clip --repeats 2 --json $OUT/loss_memory_open_clip_64k.json"
    "sweep_packed|180|$TAURAY tune --space simclr-temperature --trials 4 --workers-per-trial 1 --gpus-per-worker 0.25 --max-concurrent-trials 4 --scheduler none --confirm-top 0 --set epochs=2 --experiment gpu-check --storage-path $OUT/sweep --tracking-uri sqlite:///$OUT/mlflow.db"
)

gpu_missing_reason() {
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        echo "nvidia-smi not found"
    elif ! nvidia-smi -L >/dev/null 2>&1; then
        echo "nvidia-smi -L failed"
    elif ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        >/dev/null 2>&1; then
        echo "torch.cuda.is_available() is false for $PYTHON"
    fi
}

reason=$(gpu_missing_reason)
if [[ -n "$reason" ]]; then
    echo "gpu_check: no GPU ($reason); nothing run. On one GPU it would run:"
    for step in "${STEPS[@]}"; do
        IFS='|' read -r name limit command <<<"$step"
        echo "  $name (timeout ${limit}s): $command"
    done
    exit 0
fi

mkdir -p "$OUT" || exit 2
SUMMARY=$OUT/summary.txt
START=$(date +%s)
FAILED=0
{
    echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/# GPU: /'
    "$PYTHON" -c 'import torch; print("# torch", torch.__version__, "CUDA", torch.version.cuda)'
} >"$SUMMARY"

# Samples the GPU's used memory and compute processes until killed.
start_sampler() {
    nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 200 \
        >"$OUT/gpu_memory_$1.csv" 2>/dev/null &
    SAMPLER=$!
    (while true; do
        nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null | wc -l
        sleep 1
    done) >"$OUT/gpu_processes_$1.txt" &
    PROCESS_SAMPLER=$!
}

stop_sampler() {
    kill "$SAMPLER" "$PROCESS_SAMPLER" 2>/dev/null
    wait "$SAMPLER" "$PROCESS_SAMPLER" 2>/dev/null
}

peak_memory_mib() {
    awk -F', ' 'NR == 1 {base = $2} $2 > peak {peak = $2} END {printf "%d MiB (%d before)", peak, base}' \
        "$OUT/gpu_memory_$1.csv"
}

figures() {
    local name=$1 log=$OUT/$1.log
    case $name in
        gpu_tests)
            tail -n 1 "$log" | tr -d '='
            ;;
        train_bf16)
            awk -v batch="$TRAIN_BATCH" '/perf\/samples_per_second:/ {
                printf "%.1f steps/s (%.0f samples/s at batch %d), ", $2 / batch, $2, batch}' "$log"
            echo "peak GPU memory used $(peak_memory_mib "$name")"
            ;;
        loss_memory_*)
            grep -E '^ +[0-9]+ +(ours-tiled|open_clip)' "$log" |
                awk '{printf "%s%s batch %s: peak %s MiB, %s s", (NR > 1 ? "; " : ""), $2, $1, $3, $5}'
            grep -q -i 'out of memory' "$log" && printf ' (out of memory)'
            echo
            ;;
        sweep_packed)
            grep -E '^Sweep .* finished' "$log" | head -n 1 | tr -d '\n'
            echo "; at most $(sort -n "$OUT/gpu_processes_$name.txt" | tail -n 1) GPU processes at once, peak GPU memory used $(peak_memory_mib "$name")"
            ;;
    esac
}

for step in "${STEPS[@]}"; do
    IFS='|' read -r name limit command <<<"$step"
    left=$((DEADLINE_S - ($(date +%s) - START)))
    if ((left < 10)); then
        echo "$name: not run (the ${DEADLINE_S}s deadline is spent)" | tee -a "$SUMMARY"
        FAILED=1
        continue
    fi
    ((limit > left)) && limit=$left
    echo "== $name (timeout ${limit}s): $command"
    start_sampler "$name"
    began=$(date +%s)
    # shellcheck disable=SC2086  # the command is a word list by design
    timeout --kill-after=10 "$limit" $command >"$OUT/$name.log" 2>&1
    rc=$?
    seconds=$(($(date +%s) - began))
    stop_sampler
    if ((rc == 0)); then
        status=ok
    elif ((rc == 124 || rc == 137)); then
        status="TIMEOUT (limit ${limit}s)"
        FAILED=1
    else
        status="FAILED (exit $rc)"
        FAILED=1
    fi
    echo "$name: $status in ${seconds}s; $(figures "$name")" | tee -a "$SUMMARY"
done
echo "open_clip at 262144: not run (one 262144 x 262144 float32 logit matrix is 256 GiB)" |
    tee -a "$SUMMARY"
# Tiled against open_clip at the batches both ran (from loss_memory.py's --json files).
"$PYTHON" - "$OUT" <<'PY' 2>/dev/null | tee -a "$SUMMARY"
import json, pathlib, sys

rows = {}
for path in pathlib.Path(sys.argv[1]).glob("loss_memory_*.json"):
    for row in json.loads(path.read_text()):
        rows[(row["global_batch"], row["implementation"])] = row
for batch in sorted({b for b, _ in rows}):
    tiled, reference = rows.get((batch, "ours-tiled")), rows.get((batch, "open_clip"))
    if tiled and reference:
        print(
            f"batch {batch}: tiled/open_clip peak memory "
            f"{tiled['peak_mib'] / reference['peak_mib']:.3f}, time "
            f"{tiled['time_s'] / reference['time_s']:.2f}x"
        )
PY
echo "total $(($(date +%s) - START))s; summary in $SUMMARY"
exit "$FAILED"

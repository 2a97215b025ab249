#!/usr/bin/env bash
# The GPU half of the project, checked in one prepared run (issue 18) on a machine with CuPy, a
# CUDA device and, for the comparison, PyTorch with CUDA. Needs no install step: it runs from the
# repository root with PYTHONPATH=. (`pip install --no-deps -e .` works too).
#
#   bash bench/gpu_check.sh [OUT_DIR]        (default: $OUT, else ./gpu_check_out)
#
# It runs, each part time-boxed so that the whole stays under 8 minutes:
#   1. the GPU tests:                       python -m pytest -m gpu -x -q
#   2. every workload at quick sizes:       python bench/run.py --device gpu --suite all --quick
#   3. the app workloads at full size with the PyTorch CUDA twin in the same run (both layouts for
#      the convolutional ones): DeepDream schedule 400x600, 200 style-transfer SGD steps at 400x600
#      (run.py's estimates line extrapolates them to the book's 4,000), the DCGAN step at batch 32,
#      the VAE step, the char-LSTM step, the Transformer step at batch 256.
# Everything measured goes to OUT_DIR/gpu_check.jsonl (bench/run.py's JSON lines, and one
# {"part": ...} line per part saying ok, failed, timed_out or skipped), the output to
# OUT_DIR/gpu_check.log. A part that runs out of time is recorded as such; the rest still run.
#
# Without CuPy or a CUDA device it says so in one line, runs the CPU-side checks (the CUDA
# kernels' NumPy references, and that every workload is still registered) and exits 0: CI runs
# it that way (tests/test_gpu_check.py), so it cannot rot.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python}
OUT_DIR=${1:-${OUT:-gpu_check_out}}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
JSONL="$OUT_DIR/gpu_check.jsonl"
: >"$LOG"
START=$(date +%s)

# part NAME LIMIT_S COMMAND...: run COMMAND under `timeout`, unless less than LIMIT_S of the budget
# is left; append its output to the log and one JSON line to the results.
part() {
  local name=$1 limit=$2 status rc
  shift 2
  local left=$(( BUDGET_S - ($(date +%s) - START) ))
  if (( left < limit )); then
    echo "{\"part\": \"$name\", \"status\": \"skipped\", \"reason\": \"${left}s of the ${BUDGET_S}s budget left, the part needs ${limit}s\"}" >>"$JSONL"
    echo "== $name: skipped (${left}s left)" | tee -a "$LOG"
    return
  fi
  echo "== $name (at most ${limit}s): $*" | tee -a "$LOG"
  local t0=$(date +%s)
  timeout --signal=INT --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status=timed_out ;; *) status=failed ;; esac
  echo "{\"part\": \"$name\", \"status\": \"$status\", \"exit_code\": $rc, \"seconds\": $(( $(date +%s) - t0 )), \"limit_s\": $limit}" >>"$JSONL"
  echo "== $name: $status (exit $rc, $(( $(date +%s) - t0 ))s)" | tee -a "$LOG"
}

if ! "$PYTHON" -c "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0" >/dev/null 2>&1; then
  echo "gpu_check: no CuPy with a CUDA device here; ran the CPU-side checks only (install cupy-cuda12x or cupy-cuda13x on a machine with an NVIDIA GPU for the rest)"
  part cpu_side_kernel_references 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_kernels.py
  part cpu_side_workload_list 60 "$PYTHON" bench/run.py --list
  if grep -q '"status": "failed"\|"status": "timed_out"' "$JSONL"; then
    echo "gpu_check: a CPU-side check failed; see $LOG" >&2
    exit 1
  fi
  exit 0
fi

"$PYTHON" - >>"$LOG" 2>&1 <<'PY'
import cupy
props = cupy.cuda.runtime.getDeviceProperties(0)
print("device:", props["name"], "cupy", cupy.__version__, "CUDA runtime", cupy.cuda.runtime.runtimeGetVersion())
PY
RUN=("$PYTHON" bench/run.py --device gpu --out "$JSONL")
part gpu_tests 100 "$PYTHON" -m pytest -m gpu -x -q -p no:cacheprovider
part bench_quick 60 "${RUN[@]}" --suite all --quick
part deepdream_schedule 70 "${RUN[@]}" --only deepdream_schedule_400x600
part style_transfer_sgd200 80 "${RUN[@]}" --only style_transfer_eval --repeat 200
part dcgan_step 40 "${RUN[@]}" --only dcgan_step
part vae_step 30 "${RUN[@]}" --only vae_step
part char_lstm_step 30 "${RUN[@]}" --only char_lstm_step
part transformer_lm_step_b256 40 "${RUN[@]}" --only transformer_lm_step_b256
echo "gpu_check: done in $(( $(date +%s) - START ))s; results in $JSONL, output in $LOG"
"$PYTHON" bench/run.py --markdown "$JSONL" >"$OUT_DIR/gpu_check.md" 2>>"$LOG" || true

#!/usr/bin/env bash
# Kernel tests, both kernel benchmarks and the end-to-end pruned-model comparison, on one GPU.
#   bash benchmarks/kernels/run_gpu.sh [RESULTS_DIR]      (default: $OUT/results, else results)
# Each step is its own process; a failing step prints its traceback and the next one runs.
set -u
R="${1:-${OUT:-.}/results}"
PROFILE="${PROFILE:-h100}"
mkdir -p "$R"
step() { echo; echo "=== $* ==="; "$@" || echo "!!! step failed (exit $?): $*"; }
step python -m pytest -q -p no:cacheprovider tests/kernels
step python benchmarks/kernels/semi_structured.py --results "$R" --profile "$PROFILE"
step python benchmarks/kernels/spmm.py --results "$R" --profile "$PROFILE"
step python -m sparsebench.benchgpu --models shape:llama-3.1-8b --methods dense magnitude wanda \
    --kernel fast --prefill-lengths 512 2048 --decode-context 512 --results "$R" --profile "$PROFILE"
echo; echo "records under $R:"; find "$R" -name '*.json' | sort

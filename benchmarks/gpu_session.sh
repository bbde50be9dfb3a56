#!/usr/bin/env bash
# One GPU lease, many steps: install, then each named step under its own time limit, every
# output (records, logs) gathered into one archive under $OUT (the lease returns few files).
#   bash benchmarks/gpu_session.sh STEP...      steps: tests t:OP copy two4 spmm spmmncu gemv dgemv sdattn int4 deq ncu bsa topk probe e2e kv prefill stages
#   (t:OP = only tests/kernels/test_OP.py; INT4_ARGS, GEMV_ARGS, SPMM_ARGS: more int4 / sparse GEMV / SpMM benchmark options; E2E_METHODS, E2E_PATH (one or more decode paths) choose the end-to-end runs;
#   E2E_PREFILL: their prefill lengths (default 512 2048); E2E_ARGS: more benchgpu options; NCU_CONFIGS, NCU_SHAPE: the int4 kernel configs ncu reads; PROBE_ARGS, PROBE_LIMIT: the decode probe's options and
#   time limit; the GPU's clocks, temperature and power are sampled every 250 ms into clocks.csv)
# Records land in W/results/{runs,kernels}; copy them into results/ after checking them.
# The GPU machine has no network: pydantic and its deps travel as wheels in .whl/ (see
# benchmarks/NOTES.md for the pip download line).
set -u
export PYTHONUNBUFFERED=1
OUTDIR="${OUT:-/tmp/sparsebench-gpu}"
W="$OUTDIR/w"
R="$W/results"
mkdir -p "$R"
LOG="$W/log.txt"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
# --upgrade: on a machine kept warm from an earlier call, replace that call's install
python3 -m pip install -q --no-deps --no-build-isolation --no-index --upgrade --target /tmp/site . >/dev/null || exit 3
export PYTHONPATH=/tmp/site
PROFILE="${PROFILE:-auto}"
step() {  # step SECONDS CMD...: run, log, never abort the session
    local lim=$1; shift
    echo "=== $(date +%T) [$lim s] $*" | tee -a "$LOG"
    timeout "$lim" "$@" >>"$LOG" 2>&1
    local rc=$?
    echo "=== $(date +%T) rc=$rc" | tee -a "$LOG"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee -a "$LOG"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,temperature.gpu,power.draw,clocks_throttle_reasons.active \
    --format=csv -lms 250 >>"$W/clocks.csv" 2>&1 &
CLOCKS=$!
for s in "$@"; do
    case "$s" in
        t:*) step ${T_LIMIT:-150} python3 -m pytest -q -p no:cacheprovider "tests/kernels/test_${s#t:}.py" ;;
        tests) for f in tests/kernels/test_*.py; do step 120 python3 -m pytest -q -p no:cacheprovider "$f"; done ;;
        two4) step 150 python3 benchmarks/kernels/semi_structured.py --results "$R" --profile "$PROFILE" \
                  --ms 1 16 256 1024 2048 4096 8192 --shapes q_o gate_up down gate_up_fused ;;
        spmm) step ${SPMM_LIMIT:-240} python3 benchmarks/kernels/spmm.py --results "$R" --profile "$PROFILE" ${SPMM_ARGS:-} ;;
        gemv) step ${GEMV_LIMIT:-180} python3 benchmarks/kernels/sparse_gemv.py --results "$R" ${GEMV_ARGS:-} ;;
        int4) step ${INT4_LIMIT:-180} python3 benchmarks/kernels/int4_matmul.py --results "$R" ${INT4_ARGS:-} ;;
        deq) step ${DEQ_LIMIT:-120} python3 benchmarks/kernels/int4_dequant.py --results "$R" ;;
        bsa) step ${BSA_LIMIT:-420} python3 benchmarks/kernels/block_sparse_attn.py --results "$R" ;;
        topk) step ${TOPK_LIMIT:-240} python3 benchmarks/kernels/topk_decode_attn.py --results "$R" ;;
        copy) step 90 python3 benchmarks/copy_ceiling.py --repeats 3 --rounds 5
              PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True step 90 python3 benchmarks/copy_ceiling.py --repeats 3 --rounds 5 ;;
        kv) step ${KV_LIMIT:-300} python3 benchmarks/kv_decode.py --results "$R" --profile "$PROFILE" ;;
        prefill) step ${PREFILL_LIMIT:-420} python3 benchmarks/sparse_prefill.py --results "$R" --profile "$PROFILE" ${PREFILL_ARGS:-} ;;
        stages) step ${STAGES_LIMIT:-120} python3 benchmarks/minference_stages.py --results "$R" --profile "$PROFILE" ;;
        dgemv) step ${DGEMV_LIMIT:-240} python3 benchmarks/kernels/dense_gemv.py --results "$R" --profile "$PROFILE" \
                   --best-to "$W/dense_gemv_best.txt"
               if [ -z "${SPARSEBENCH_DENSE_GEMV_CONFIG:-}" ] && [ -s "$W/dense_gemv_best.txt" ]; then
                   export SPARSEBENCH_DENSE_GEMV_CONFIG="$(cat "$W/dense_gemv_best.txt")"  # for later steps
                   echo "SPARSEBENCH_DENSE_GEMV_CONFIG=$SPARSEBENCH_DENSE_GEMV_CONFIG" | tee -a "$LOG"
               fi ;;
        sdattn) step ${SDATTN_LIMIT:-90} python3 benchmarks/static_decode_attention.py --best-to "$W/static_decode_best.txt"
                if [ -z "${SPARSEBENCH_DECODE_CONFIG:-}" ] && [ -s "$W/static_decode_best.txt" ]; then
                    export SPARSEBENCH_DECODE_CONFIG="$(cat "$W/static_decode_best.txt")"  # for later steps
                    echo "SPARSEBENCH_DECODE_CONFIG=$SPARSEBENCH_DECODE_CONFIG" | tee -a "$LOG"
                fi ;;
        probe) step ${PROBE_LIMIT:-240} python3 benchmarks/decode_probe.py --json "$W/probe.json" ${PROBE_ARGS:-} ;;
        e2e) for path in ${E2E_PATH:-graph}; do  # several paths: one run each
                 step ${E2E_LIMIT:-300} python3 -m sparsebench.benchgpu --models shape:llama-3.1-8b \
                     --methods ${E2E_METHODS:-dense rtn teal magnitude wanda} --kernel fast \
                     --decode-path "$path" \
                     --prefill-lengths ${E2E_PREFILL:-512 2048} --decode-context 512 --results "$R" --profile "$PROFILE" ${E2E_ARGS:-}
             done ;;
        ncu) for cfg in ${NCU_CONFIGS:-w8,s4}; do  # hardware counters of one CUDA int4 call per config
                 step ${NCU_LIMIT:-90} ncu --clock-control none -k w4_mma -s 2 -c 1 --section SpeedOfLight \
                     --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis \
                     python3 benchmarks/kernels/int4_profile.py --shape ${NCU_SHAPE:-down_proj} --config "$cfg"
             done ;;
        spmmncu) for cfg in ${SPMM_NCU_CONFIGS:-r=16,w=8,k=1,d=8}; do  # hardware counters of one CUDA SpMM call
                     step ${NCU_LIMIT:-90} ncu --clock-control none -k spmm_decode -s 2 -c 1 --section SpeedOfLight \
                         --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis \
                         --section InstructionStats --section LaunchStats \
                         python3 benchmarks/kernels/spmm_profile.py --shape ${NCU_SHAPE:-gate_up} --config "$cfg"
                 done ;;
        *) echo "unknown step $s" | tee -a "$LOG" ;;
    esac
done
kill $CLOCKS 2>/dev/null
tar czf "$OUTDIR/session.tgz" -C "$W" .
tail -c 6000 "$LOG"

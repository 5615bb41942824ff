#!/usr/bin/env bash
# One-go check on a machine with an NVIDIA GPU and CuPy: the GPU and emulation test suites,
# compute-sanitizer (memcheck, racecheck, initcheck, synccheck) over a driver that launches every
# kernel, the op and train-step benchmarks against PyTorch/cuDNN, and the bandwidth (ops vs the
# device's copy) and compile (cold kernel compile, warm first step) goals. Each step logs to $OUT/<step>.log
# (OUT defaults to ./out); a failing step does not stop the others; the summary is printed at the
# end and written to $OUT/summary.txt. Exit status: 0 only if every step that ran passed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-./out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
summary=()
failed=0

step() {  # step NAME COMMAND...: run COMMAND, log to $OUT/NAME.log, record PASS/FAIL
    local name=$1
    shift
    echo "== $name: $*"
    if "$@" >"$OUT/$name.log" 2>&1; then
        summary+=("PASS $name")
    else
        summary+=("FAIL $name (exit $?, see $OUT/$name.log)")
        failed=1
    fi
    tail -n 3 "$OUT/$name.log"
}

step device nvidia-smi
step compile bash scripts/compile_kernels.sh
step tests "$PYTHON" -m pytest -m "gpu or emu" -ra  # includes cuda vs cuda-emu
default_sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
sanitizer=${SANITIZER:-$default_sanitizer}
if [ -x "$sanitizer" ]; then
    for tool in memcheck racecheck initcheck synccheck; do
        step "sanitizer-$tool" "$sanitizer" --tool "$tool" --error-exitcode 1 \
            "$PYTHON" scripts/launch_all_kernels.py --device cuda
    done
else
    summary+=("FAIL sanitizer (no compute-sanitizer on PATH or in /usr/local/cuda/bin)")
    failed=1
fi
step bench-ops "$PYTHON" -m gpucnn bench --suite ops --device cuda --json "$OUT/bench_ops.json"
step bench-step "$PYTHON" -m gpucnn bench --suite step --device cuda --json "$OUT/bench_step.json"
step bench-bandwidth "$PYTHON" -m gpucnn bench --suite bandwidth --device cuda \
    --json "$OUT/bench_bandwidth.json"
step bench-compile "$PYTHON" -m gpucnn bench --suite compile --device cuda \
    --json "$OUT/bench_compile.json"

{
    echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null)"
    printf '%s\n' "${summary[@]}"
} | tee "$OUT/summary.txt"
exit $failed

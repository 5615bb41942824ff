#!/usr/bin/env bash
# One-go check on a machine with an NVIDIA GPU and CuPy: the GPU and emulation test suites,
# compute-sanitizer (memcheck, racecheck, initcheck, synccheck) over a driver that launches every
# kernel, the op and train-step benchmarks against PyTorch/cuDNN, and the bandwidth (ops vs the
# device's copy) and compile (cold kernel compile, warm first step) goals, and, given DATA_DIR (a
# folder with the Fashion-MNIST IDX files), the epoch benchmark and the zoo models' accuracy runs
# (tutorial-mnist also with --cuda-graph).
# Each step logs to $OUT/<step>.log (OUT defaults to ./out); a failing step does not stop the
# others; the summary is printed at the end and written to $OUT/summary.txt. Exit status: 0 only
# if every step that ran passed. ONLY="tests sanitizer bench train" (any of them) runs just those
# groups, so the whole check can be split over several calls of a time-limited machine.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-./out}
PYTHON=${PYTHON:-python3}
ONLY=${ONLY:-tests sanitizer bench train}
DATA_DIR=${DATA_DIR:-}
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

wanted() { [[ " $ONLY " == *" $1 "* ]]; }

step device nvidia-smi
step compile bash scripts/compile_kernels.sh
if wanted tests; then
    step tests "$PYTHON" -m pytest -m "gpu or emu" -ra  # includes cuda vs cuda-emu
fi
if wanted sanitizer; then
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
fi
if wanted bench; then
    for suite in ops step bandwidth compile; do
        step "bench-$suite" "$PYTHON" -m gpucnn bench --suite "$suite" --device cuda \
            --json "$OUT/bench_$suite.json"
    done
    if [ -n "$DATA_DIR" ]; then
        step bench-epoch "$PYTHON" -m gpucnn bench --suite epoch --device cuda \
            --data-dir "$DATA_DIR" --json "$OUT/bench_epoch.json"
    fi
fi
if wanted train && [ -n "$DATA_DIR" ]; then
    for model in tutorial-mnist fashion-net; do  # each with its recipe; metrics.json has the times
        step "train-$model" "$PYTHON" -m gpucnn train --dataset fashion-mnist --model "$model" \
            --device cuda --data-dir "$DATA_DIR" --out "$OUT/train-$model" --no-progress
    done
    step train-tutorial-mnist-graph "$PYTHON" -m gpucnn train --dataset fashion-mnist \
        --model tutorial-mnist --device cuda --cuda-graph --data-dir "$DATA_DIR" \
        --out "$OUT/train-tutorial-mnist-graph" --no-progress
fi

{
    echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null)"
    printf '%s\n' "${summary[@]}"
} | tee "$OUT/summary.txt"
exit $failed

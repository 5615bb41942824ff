#!/usr/bin/env bash
# One-go check on a machine with an NVIDIA GPU and CuPy, in this order:
#   0. the device (nvidia-smi) and whether gpucnn's cuda backend can use it (cuda-backend);
#   1. the GPU test suite (parity, cuda vs cuda-emu, captured step, > 2^31 elements; a cuda
#      backend that cannot be created fails it, GPUCNN_REQUIRE_GPU=1), first, since a figure
#      from a wrong kernel means nothing; side by side with it, given DATA_DIR, the zoo models'
#      accuracy runs (tutorial-mnist also with --cuda-graph) in the background;
#   2. the benchmarks, alone on the GPU: train step, ops and epoch against PyTorch/cuDNN (the
#      epoch on the Fashion-MNIST IDX files in DATA_DIR if given, else on random images),
#      bandwidth (ops vs the device's copy), compile (cold kernel compile, warm first step), and
#      the host time of each backend call of a step (scripts/profile_step.py);
#   3. compute-sanitizer (memcheck, racecheck, initcheck, synccheck) over a driver that launches
#      every kernel, and the nvcc build report;
#   4. fashion-net's train step against PyTorch (bench-step-fashion-net: batch norm, dropout),
#      then the ops suite's conv rows with Winograd forced wherever the window allows
#      (bench-ops-winograd), then the device memory fashion-net's first steps take in a new
#      process against PyTorch's (bench-memory), the lowest priority.
# Each step logs to $OUT/<step>.log (OUT defaults to the checkout's out/; a relative OUT,
# DATA_DIR, or PYTHON, SANITIZER or NVCC path is from the caller's folder); a failing step does
# not stop the others; the summary (with each step's end time) is printed at the end and written
# to $OUT/summary.txt. Exit status: 0 only if every step that ran passed. ONLY="bench train tests
# sanitizer" (any of them) runs just those groups, to split the check over several calls.
# DEADLINE_S=N (whole seconds) starts no step after N seconds (each is listed as SKIP) and
# interrupts a step still running then (SIGINT, so pytest still prints its failures; TIMEOUT), so
# that a time-limited call still ends with its summary. TESTS_MAX_S=N (whole seconds) likewise
# caps the tests step alone, so that a hung test cannot take the benchmarks' time as well. A
# DATA_DIR that is not a folder, or has
# no Fashion-MNIST IDX files, is a FAIL line; the epoch then runs on random images and no
# training run starts.
set -u
absolute() {  # absolute NAME...: each variable NAME that is set, as an absolute path
    local name
    for name in "$@"; do
        if [ -n "${!name:-}" ]; then printf -v "$name" %s "$(realpath -ms -- "${!name}")"; fi
    done
}
# Paths as named from the caller's folder, before the cd (links kept: a venv's python stays the
# venv's); a command given by name alone (no '/') is still looked up on PATH.
absolute OUT DATA_DIR
for command in PYTHON SANITIZER NVCC; do
    if [[ ${!command:-} == */* ]]; then absolute "$command"; fi
done
cd "$(dirname "$0")/.."
OUT=${OUT:-./out}
PYTHON=${PYTHON:-python3}
# ONLY's groups split on any white space (a tab, a newline too) and never globbed, then joined
# by single spaces, as wanted() below looks for " NAME ".
set -f
# shellcheck disable=SC2206
groups=(${ONLY:-})
set +f
asked=${groups[*]}  # the groups named, if any (by default every group, train only given DATA_DIR)
ONLY=${asked:-bench train tests sanitizer}
DATA_DIR=${DATA_DIR:-}
DEADLINE_S=${DEADLINE_S:-}
TESTS_MAX_S=${TESTS_MAX_S:-}
for group in ${groups[@]+"${groups[@]}"}; do
    case $group in
    bench | train | tests | sanitizer) ;;
    *) echo "gpu_check.sh: ONLY names '$group'; the groups are bench train tests sanitizer" >&2; exit 2 ;;
    esac
done
for seconds in DEADLINE_S TESTS_MAX_S; do
    if [ -n "${!seconds}" ] && [[ ! ${!seconds} =~ ^[1-9][0-9]*$ ]]; then
        echo "gpu_check.sh: $seconds='${!seconds}'; expected a positive whole number of seconds" \
            "(e.g. 600)" >&2
        exit 2
    fi
done
if [[ " $asked " == *" train "* ]] && [ -z "$DATA_DIR" ]; then
    echo "gpu_check.sh: ONLY names train, which needs DATA_DIR (the Fashion-MNIST folder)" >&2
    exit 2
fi
start=$(date +%s)  # DEADLINE_S counts from here, the DATA_DIR check included
mkdir -p "$OUT"
: >"$OUT/steps.txt"
export PYTHONUNBUFFERED=1
# The scripts run as `python scripts/x.py` import gpucnn from this checkout, installed or not.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export GPUCNN_DEBUG=1  # an error's whole traceback in the step's log, not its one-line summary
export GPUCNN_REQUIRE_GPU=1  # tests/conftest.py: an unusable cuda backend fails, not skips
# A DATA_DIR without the IDX files (where gpucnn looks: it or its fashion-mnist subfolder) is
# dropped like one that is not a folder, rather than failing the epoch and every training.
find_idx='import sys; from gpucnn.data.datasets import find_idx_files as f; f(*sys.argv[1:])'
why=
if [ -n "$DATA_DIR" ] && [ ! -d "$DATA_DIR" ]; then
    why="is not a folder"
elif [ -n "$DATA_DIR" ] && ! "$PYTHON" -c "$find_idx" fashion-mnist "$DATA_DIR" \
    >"$OUT/data-dir.log" 2>&1; then
    why="holds no Fashion-MNIST IDX files, see $OUT/data-dir.log"
fi
if [ -n "$why" ]; then
    echo "FAIL data-dir (DATA_DIR=$DATA_DIR $why: epoch on random images, no training)" \
        >>"$OUT/steps.txt"
    DATA_DIR=
fi

step() {  # [MAX_S=N] step NAME COMMAND...: run COMMAND (for at most N s), log to
    # $OUT/NAME.log, record PASS/FAIL/SKIP
    local name=$1
    shift
    local limit=() left=0 until=""
    if [ -n "$DEADLINE_S" ]; then
        left=$((DEADLINE_S - ($(date +%s) - start)))
        if [ "$left" -le 0 ]; then
            echo "SKIP $name (past DEADLINE_S=$DEADLINE_S s)" >>"$OUT/steps.txt"
            return
        fi
        limit=(timeout -s INT -k 10 "$left")
        until="DEADLINE_S=$DEADLINE_S s"
    fi
    if [ -n "${MAX_S:-}" ] && { [ -z "$until" ] || [ "$MAX_S" -lt "$left" ]; }; then
        limit=(timeout -s INT -k 10 "$MAX_S")
        until="its cap of $MAX_S s"
    fi
    echo "== $name: $*"
    local status=0
    ${limit[@]+"${limit[@]}"} "$@" >"$OUT/$name.log" 2>&1 || status=$?
    local at="done at $(($(date +%s) - start)) s"
    if [ "$status" = 0 ]; then
        echo "PASS $name ($at)" >>"$OUT/steps.txt"
    elif [ ${#limit[@]} -gt 0 ] && { [ "$status" = 124 ] || [ "$status" = 137 ]; }; then
        echo "FAIL $name (TIMEOUT: stopped at $until, see $OUT/$name.log)" \
            >>"$OUT/steps.txt"
    else
        echo "FAIL $name (exit $status, $at, see $OUT/$name.log)" >>"$OUT/steps.txt"
    fi
    tail -n 3 "$OUT/$name.log"
}

wanted() { [[ " $ONLY " == *" $1 "* ]]; }

step device nvidia-smi
step cuda-backend "$PYTHON" -c "from gpucnn.backend import get_backend; print(get_backend('cuda'))"
if wanted train && [ -n "$DATA_DIR" ]; then
    train() {  # train NAME OPTIONS...: one zoo run with its recipe; metrics.json has the times
        local name=$1
        shift
        step "train-$name" "$PYTHON" -m gpucnn train --dataset fashion-mnist --device cuda \
            --data-dir "$DATA_DIR" --out "$OUT/train-$name" --no-progress "$@"
    }
    train fashion-net --model fashion-net &
    train tutorial-mnist --model tutorial-mnist &
    train tutorial-mnist-graph --model tutorial-mnist --cuda-graph &
    # tests/test_bench_memory.py: the device's memory count now includes the trainings'
    export GPUCNN_GPU_SHARED=1
fi
if wanted tests; then
    MAX_S=$TESTS_MAX_S step tests "$PYTHON" -m pytest -m gpu -ra -p no:cacheprovider tests
fi
wait
if wanted bench; then
    # The suites with the most goals first, in case the lease runs out; the epoch on the real
    # images given DATA_DIR, else on random ones of the same size (the time is the same).
    for suite in step ops epoch bandwidth compile; do
        options=()
        [ "$suite" = epoch ] && [ -n "$DATA_DIR" ] && options=(--data-dir "$DATA_DIR")
        step "bench-$suite" "$PYTHON" -m gpucnn bench --suite "$suite" --device cuda \
            ${options[@]+"${options[@]}"} --json "$OUT/bench_$suite.json"
    done
    # Host time of each backend call of an eager b64 step (the launch overhead the step pays).
    step profile-host "$PYTHON" scripts/profile_step.py --device cuda --batch-size 64 --top 40
fi
if wanted sanitizer; then
    default_sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    sanitizer=${SANITIZER:-$default_sanitizer}
    if command -v "$sanitizer" >/dev/null; then  # a path, or a name on PATH
        for tool in memcheck racecheck initcheck synccheck; do
            step "sanitizer-$tool" "$sanitizer" --tool "$tool" --error-exitcode 1 \
                "$PYTHON" scripts/launch_all_kernels.py --device cuda
        done
    else
        echo "FAIL sanitizer (no compute-sanitizer on PATH or in /usr/local/cuda/bin)" \
            >>"$OUT/steps.txt"
    fi
    NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
    export NVCC  # scripts/compile_kernels.sh's compiler
    if command -v "$NVCC" >/dev/null; then
        step nvcc-report bash scripts/compile_kernels.sh
    else
        echo "SKIP nvcc-report (no nvcc on PATH or in /usr/local/cuda/bin)" >>"$OUT/steps.txt"
    fi
fi
if wanted bench; then
    # No goal of its own: the zoo's batch-norm and dropout net's step, eager and captured.
    step bench-step-fashion-net "$PYTHON" -m gpucnn bench --suite step --device cuda \
        --model fashion-net --json "$OUT/bench_step_fashion_net.json"
    # Last, the lowest priority: every conv row of the ops suite with Winograd wherever the
    # window allows (the tutorial net's 3x3 stride-1 layers too), against the direct kernels
    # and cuDNN, captured graphs only: where Winograd pays.
    step bench-ops-winograd "$PYTHON" -m gpucnn bench --suite ops --device cuda --cases conv \
        --conv-algorithm winograd --json "$OUT/bench_ops_winograd.json" \
        --peers gpucnn-cuda-graph,gpucnn-cuda-baseline-graph,pytorch-cuda-graph
    # No goal either: one new process per peer (the count is the driver's, so once is enough).
    step bench-memory "$PYTHON" -m gpucnn bench --suite memory --device cuda --model fashion-net \
        --batch-size 128 --repeats 1 --json "$OUT/bench_memory.json"
fi
{
    echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null)"
    cat "$OUT/steps.txt"
} | tee "$OUT/summary.txt"
! grep -q '^FAIL' "$OUT/steps.txt"

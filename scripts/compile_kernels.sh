#!/usr/bin/env bash
# Compile CUDA kernel sources with nvcc for every architecture in $ARCHS (default "80 90") and
# read ptxas's report: fails on a compile error or warning, on a source that instantiates no
# kernel, and on any register spill. Usage: scripts/compile_kernels.sh [file.cu ...]
# (default: every kernels_cuda/*.cu). $NVCC overrides the compiler. Used by CI and by
# tests/test_kernels_compile.py.
set -u
files=()
for src in "$@"; do files+=("$(realpath "$src")"); done  # as named from the caller's folder
cd "$(dirname "$0")/.."
archs=${ARCHS:-"80 90"}
nvcc=${NVCC:-nvcc}
if [ $# -eq 0 ]; then files=(kernels_cuda/*.cu); fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for src in "${files[@]}"; do
    for arch in $archs; do
        log="$tmp/ptxas.log"
        if ! "$nvcc" -std=c++17 -cubin -arch="sm_$arch" -Xptxas -v -Werror all-warnings \
            -I kernels_cuda -o "$tmp/out.cubin" "$src" >"$log" 2>&1; then
            cat "$log"
            echo "FAIL $src sm_$arch: compile error"
            status=1
            continue
        fi
        cat "$log"
        kernels=$(grep -c "Compiling entry function" "$log")
        spills=$(grep -Eo "[0-9]+ bytes spill (stores|loads)" "$log" | grep -vc "^0 ")
        if [ "$kernels" -eq 0 ]; then
            echo "FAIL $src sm_$arch: no kernel instantiated (explicit template instantiations?)"
            status=1
        elif [ "$spills" -ne 0 ]; then
            echo "FAIL $src sm_$arch: register spills ($spills nonzero spill counts above)"
            status=1
        else
            echo "OK   $src sm_$arch: $kernels kernels, no spills"
        fi
    done
done
exit $status

"""Launch every CUDA kernel once, float32 and float64, on small shapes, and fail if one was missed.

The driver for compute-sanitizer (see scripts/gpu_check.sh): on ``--device cuda`` CuPy's memory pool
is switched off, so each array is its own allocation and memcheck sees any access past its end.
``--device cuda-emu`` runs the same launches through the CPU emulation (guard zones on).

    python scripts/launch_all_kernels.py [--device cuda|cuda-emu]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from gpucnn.backend import get_backend, kernels
from gpucnn.backend.launchers.winograd import convolution_algorithm
from gpucnn.cli import run_reporting_errors

# conv2d.cu's GEMM kernels, each with two tiles (a `narrow` flag, their last argument).
GEMM_KERNELS = ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight")


class RecordingRunner:
    """Wraps a kernel runner and records every kernel name the launchers fetch, and which tiles
    the GEMM kernels ran with."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.fetched: set[str] = set()
        self.tiles: set[tuple[str, bool]] = set()  # (GEMM kernel, narrow)

    def module(self, family: str, names: Any) -> Any:
        module, fetched, tiles = self.runner.module(family, names), self.fetched, self.tiles

        class Recorded:
            def get_function(self, name: str) -> Any:
                fetched.add(name)
                kernel, base = module.get_function(name), name.split("<")[0]
                if base not in GEMM_KERNELS:
                    return kernel

                def launch(grid: Any, block: Any, args: Any, **options: Any) -> Any:
                    tiles.add((base, bool(args[-1])))
                    return kernel(grid, block, args, **options)

                return launch

        return Recorded()


def launch_all(backend: Any, dt: type) -> None:
    """Every launcher once; the conv shapes make the weight gradient split (sum_partials)."""
    rng = np.random.default_rng(0)

    def arr(*shape: int) -> Any:
        return backend.asarray(rng.standard_normal(shape).astype(dt))

    # Three convolutions, so that each GEMM kernel runs both its tiles (see gemm_tile; main
    # checks): the forward and the input gradient narrow in the first and third, square in the
    # second; the weight gradient square in the first two, narrow in the third (split, 2 groups).
    convolutions = (
        (arr(4, 6, 40, 40), arr(8, 3, 3, 3), ((2, 1), ((1, 0), (1, 2)), (1, 2), 2)),
        (arr(2, 20, 10, 10), arr(24, 20, 3, 3), ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)),
        (arr(2, 16, 12, 12), arr(16, 8, 3, 3), ((1, 1), ((1, 1), (1, 1)), (1, 1), 2)),
    )
    for cx, cw, geometry in convolutions:
        b = arr(cw.shape[0])
        y = backend.conv2d_forward(cx, cw, b, *geometry)
        backend.conv2d_forward(cx, cw, b, *geometry, relu=True)
        gy = arr(*y.shape)
        backend.conv2d_backward_input(gy, cw, cx.shape, *geometry)
        backend.conv2d_backward_weight(gy, cx, cw.shape, *geometry)
        backend.conv2d_backward_params(gy, cx, cw.shape, *geometry)  # the bias as a column
    backend.conv2d_backward_bias(gy)
    # winograd.cu's kernels, on the second convolution's 3x3 stride-1 window (odd sizes: tiles
    # half outside), which is too small for Winograd to be chosen by itself.
    wx, ww, geometry = arr(2, 20, 9, 7), convolutions[1][1], convolutions[1][2]
    with convolution_algorithm("winograd"):
        wy = backend.conv2d_forward(wx, ww, arr(ww.shape[0]), *geometry, relu=True)
        backend.conv2d_backward_input(wy, ww, wx.shape, *geometry)
        backend.conv2d_backward_params(wy, wx, ww.shape, *geometry)
    x = convolutions[0][0]
    pool = ((3, 3), (2, 2), (1, 1))
    p, argmax = backend.max_pool2d_forward(x, *pool)
    backend.max_pool2d_backward(arr(*p.shape), argmax, x.shape, *pool)
    backend.max_pool2d_backward(arr(*p.shape), argmax, x.shape, *pool, relu_y=p)
    backend.avg_pool2d_backward(backend.avg_pool2d_forward(x, *pool), x.shape, *pool)
    backend.global_avg_pool2d_backward(backend.global_avg_pool2d_forward(x), x.shape)
    backend.relu_backward(gy, backend.relu_forward(y))
    backend.bias_relu_forward(x, arr(6))
    calls = backend.asarray(np.array([7], np.uint64))  # a layer's call counter, on the device
    backend.dropout_mask(x.shape, 0.25, 42, dt, calls)
    backend.dropout_forward(x, 0.25, 42, calls)
    gamma, beta, var = arr(6), arr(6), backend.asarray(rng.random(6).astype(dt) + 0.5)
    _, mean, invstd = backend.batch_norm2d_forward_train(x, gamma, beta, 1e-5)
    running = (arr(6), backend.asarray(rng.random(6).astype(dt) + 0.5))
    backend.batch_norm2d_forward_train(x, gamma, beta, 1e-5, *running, 0.1)  # updates them too
    backend.batch_norm2d_forward_eval(x, gamma, beta, mean, var, 1e-5)
    backend.batch_norm2d_backward(arr(*x.shape), x, gamma, mean, invstd)
    logits, labels = arr(5, 10), backend.asarray(rng.integers(0, 10, 5))
    _, probs = backend.softmax_cross_entropy_forward(logits, labels)
    backend.softmax_cross_entropy_backward(probs, labels)
    backend.softmax_cross_entropy_train(logits, labels, 0.1)
    # Ten parameters of different sizes: two launches of the 8-slot optimizer kernels.
    sizes = (300, 1, 7, 1000, 3, 5, 64, 2, 9, 257)
    params, grads, ms = ([arr(n) for n in sizes] for _ in range(3))
    vs = [backend.asarray(rng.random(n).astype(dt)) for n in sizes]
    clock = backend.asarray(np.array([2.0, 1e-3]))  # an optimizer's {step, lr}, on the device
    backend.sgd_update_many(params, grads, ms, clock, 0.9, True, 1e-4, False)
    backend.adam_update_many(params, grads, ms, vs, clock, 0.9, 0.999, 1e-8, 1e-2, True)
    backend.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cuda-emu"])
    args = parser.parse_args(argv)
    backend = get_backend(args.device)  # first: names a missing GPU or CuPy in one line
    if args.device == "cuda":
        import cupy

        cupy.cuda.set_allocator(None)  # one cudaMalloc per array: exact bounds for memcheck
    backend.runner = recorder = RecordingRunner(backend.runner)
    for dt in (np.float32, np.float64):
        launch_all(backend, dt)
    expected = {n for f in kernels.families() for n in kernels.name_expressions(f)}
    missed = sorted(expected - recorder.fetched)
    one_tile = [
        k for k in GEMM_KERNELS for narrow in (False, True) if (k, narrow) not in recorder.tiles
    ]
    print(f"{args.device}: launched {len(recorder.fetched)} of {len(expected)} kernels")
    if missed:
        print("never launched: " + ", ".join(missed), file=sys.stderr)
    if one_tile:
        print("a tile never launched by: " + ", ".join(one_tile), file=sys.stderr)
    return 1 if missed or one_tile else 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors("launch_all_kernels.py", main))

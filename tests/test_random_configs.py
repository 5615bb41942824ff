"""Random configurations, fresh each run, against the reference and PyTorch.

Every run draws new shapes, strides, paddings (asymmetric for conv), dilations, groups, kernels,
bias or not, and dtypes for the sliding-window ops, and new shapes for the reductions (batch
norm's statistics, global average pooling, the loss over rows and classes: the kernels split
these across threads, warps and blocks by size), builds an op case from each (the same
:mod:`op_cases` factories the parity table uses) and compares the backend's forward and every
gradient with each oracle: the reference loops always, PyTorch where it is installed (skipped
with the reason where not). Failures are collected and reported together with their
configurations and the run's seed.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from op_cases import (
    assert_outputs_close,
    avg_pool_case,
    batch_norm_train_case,
    conv_case,
    global_avg_pool_case,
    max_pool_case,
    xent_case,
)

try:
    import torch
except ImportError:
    torch = None
HAVE_TORCH = torch is not None
ORACLES = [
    pytest.param("reference", id="reference"),
    pytest.param(
        "torch",
        id="torch",
        marks=[
            pytest.mark.torch,
            pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed"),
        ],
    ),
]

# Configurations per run, backend and oracle; the emulator runs CUDA kernels on the CPU, so it
# gets fewer.
COUNTS = {
    "conv": 1000, "winograd": 1000, "max_pool": 300, "avg_pool": 300,
    "batch_norm": 600, "global_avg_pool": 600, "xent": 300,
}  # fmt: skip
EMU_SHARE = 0.1


def _pick(rng, values):
    return values[int(rng.integers(len(values)))]


def random_conv(rng, index: int):
    """A conv case: groups, channels, kernel, stride, asymmetric padding, dilation, bias, size."""
    groups = _pick(rng, [1, 1, 1, 2, 3])
    kernel = tuple(int(k) for k in rng.integers(1, 5, 2))
    dilation = tuple(_pick(rng, [1, 1, 2, 3]) for _ in range(2))
    stride = tuple(int(s) for s in rng.integers(1, 4, 2))
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    # Up to 3 per side, but no more than a window: rows of pure padding prove little.
    padding = tuple(tuple(int(p) for p in rng.integers(0, min(3, span) + 1, 2)) for span in spans)
    size = [
        max(1, span - sum(pad) + int(rng.integers(0, 7)))
        for span, pad in zip(spans, padding, strict=True)
    ]
    x_shape = (int(rng.integers(1, 4)), groups * int(rng.integers(1, 4)), *size)
    w_shape = (groups * int(rng.integers(1, 4)), x_shape[1] // groups, *kernel)
    bias = bool(rng.random() < 0.7)
    name = f"random{index}_x{x_shape}_w{w_shape}_s{stride}_p{padding}_d{dilation}_g{groups}_b{bias}"
    return conv_case(name, x_shape, w_shape, stride, padding, dilation, groups, bias)


def random_winograd(rng, index: int):
    """A 3x3 stride-1 conv case run as Winograd on the kernel devices, whatever its size:
    asymmetric padding, channels in and out past one block's 32 rows and not a multiple of the
    8-channel slab, plane sides odd and even (a half-filled 2x2 output tile)."""
    padding = tuple(tuple(int(p) for p in rng.integers(0, 4, 2)) for _ in range(2))
    size = [max(1, 3 - sum(pad) + int(rng.integers(0, 9))) for pad in padding]
    x_shape = (int(rng.integers(1, 3)), int(rng.integers(1, 41)), *size)
    w_shape = (int(rng.integers(1, 41)), x_shape[1], 3, 3)
    bias = bool(rng.random() < 0.7)
    name = f"winograd{index}_x{x_shape}_w{w_shape}_p{padding}_b{bias}"
    return conv_case(name, x_shape, w_shape, (1, 1), padding, bias=bias, algorithm="winograd")


def random_pool(rng, index: int, factory):
    """A pool case: kernel, stride, padding up to half the kernel (as torch allows), size."""
    kernel = tuple(int(k) for k in rng.integers(1, 5, 2))
    stride = tuple(int(s) for s in rng.integers(1, 4, 2))
    padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
    size = tuple(
        max(1, k - 2 * p + int(rng.integers(0, 7))) for k, p in zip(kernel, padding, strict=True)
    )
    x_shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), *size)
    name = f"random{index}_x{x_shape}_k{kernel}_s{stride}_p{padding}"
    return factory(name, x_shape, kernel, stride, padding)


def random_batch_norm(rng, index: int):
    """Training-mode batch norm: planes from a pixel to 40 x 40, so a channel's N*H*W runs from
    3 to thousands. (At 2 the input gradient is zero whatever x, the two normalised values
    being -1 and 1: both sides would be rounding alone, nothing to compare.) At least 3
    channels: errors are measured against an output's largest value, and a lone channel's gamma
    gradient or running mean (sums of terms of either sign) can cancel to a hundredth of its
    terms' size, leaving rounding that is no error of ours."""
    n, c = int(rng.integers(1, 5)), int(rng.integers(3, 9))
    h, w = (int(s) for s in rng.integers(1, 41, 2))
    shape = (n, c, h, max(w, -(-3 // (n * h))))
    return batch_norm_train_case(f"batch_norm{index}_x{shape}", shape)


def random_global_avg_pool(rng, index: int):
    """Planes from a pixel to 48 x 48 (a kernel thread sums several pixels past 256)."""
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 6)), *rng.integers(1, 49, 2).tolist())
    return global_avg_pool_case(f"global_avg_pool{index}_x{shape}", shape, 1.0)


def random_xent(rng, index: int):
    """The loss over 1 to 300 rows (the GPU's one-block path up to 128, three kernels past it) of
    2 to 64 classes, logits of any scale, label smoothing or not."""
    shape = (int(rng.integers(1, 301)), int(rng.integers(2, 65)))
    scale, smoothing = float(10.0 ** rng.uniform(-1, 3)), _pick(rng, [0.0, 0.0, 0.1, 0.3])
    name = f"xent{index}_{shape}_scale{scale:.3g}_smoothing{smoothing}"
    return xent_case(name, scale, smoothing=smoothing, shape=shape)


FAMILIES = {
    "conv": random_conv,
    "winograd": random_winograd,
    "max_pool": lambda rng, i: random_pool(rng, i, max_pool_case),
    "avg_pool": lambda rng, i: random_pool(rng, i, avg_pool_case),
    "batch_norm": random_batch_norm,
    "global_avg_pool": random_global_avg_pool,
    "xent": random_xent,
}


@contextmanager
def _one_torch_thread():
    """Tiny tensors are faster on one thread, and a loaded 2-core machine is not oversubscribed."""
    if not HAVE_TORCH:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("oracle", ORACLES)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_random_configurations_match_oracle(family, oracle, backend, rng):
    """Forward and every gradient of many random configurations agree with the oracle."""
    if family == "winograd" and backend.name == "cpu":
        pytest.skip("the CPU backend has no Winograd path: its 3x3 convolutions are conv's")
    count = COUNTS[family]
    if backend.name == "cuda-emu":
        count = int(count * EMU_SHARE)
    failures = []
    with _one_torch_thread():
        for index in range(count):
            case = FAMILIES[family](rng, index)
            dtype = np.float32 if rng.random() < 0.3 else np.float64
            inputs = case.sample(rng, dtype)
            want = case.torch(inputs) if oracle == "torch" else case.reference(inputs)
            try:
                got = case.run(backend, inputs)
                assert_outputs_close(got, want, case, dtype, f"{backend.name} vs {oracle}", True)
            except (AssertionError, ValueError, TypeError, IndexError) as err:
                failures.append(
                    f"{case.name} [{np.dtype(dtype).name}]: {type(err).__name__}: {err}"
                )
    shown = "\n".join(failures[:5])
    assert not failures, f"{len(failures)} of {count} {family} configurations failed:\n{shown}"

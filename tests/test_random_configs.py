"""Random conv and pool configurations, fresh each run, against the reference and PyTorch.

Every run draws new shapes, strides, paddings (asymmetric for conv), dilations, groups, kernels,
bias or not, and dtypes, builds an op case from each (the same :mod:`op_cases` factories the
parity table uses) and compares the backend's forward and every gradient with each oracle: the
reference loops always, PyTorch where it is installed (skipped with the reason where not). Failures
are collected and reported together with their configurations and the run's seed.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from op_cases import assert_outputs_close, avg_pool_case, conv_case, max_pool_case

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
COUNTS = {"conv": 1000, "winograd": 1000, "max_pool": 300, "avg_pool": 300}
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


FAMILIES = {
    "conv": random_conv,
    "winograd": random_winograd,
    "max_pool": lambda rng, i: random_pool(rng, i, max_pool_case),
    "avg_pool": lambda rng, i: random_pool(rng, i, avg_pool_case),
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

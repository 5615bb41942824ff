"""The ``bandwidth`` suite's ops: memory-bound backend ops on one large float32 tensor, each with the
bytes it must move, so its speed reads as a fraction of the device's copy measured in the same run.

The benchmark issue's goal: pooling and elementwise kernels at >= 85% of the copy bandwidth on
tensors over 200 MB (the default, 64x64x128x128, is 268 MB). The copy is the driver's memory copy
(cudaMemcpyAsync device to device on a GPU), the fastest way to move the bytes, into a newly
allocated array as every op allocates its result, so both pay the same allocator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import ops
from .report import Result

GOAL = 0.85  # of the copy's bandwidth
PLANE = 128  # H = W; a 128 x 128 float32 plane is 1/16 MiB
MAX_CHANNELS = 64
DROPOUT_P, BN_EPS = 0.5, 1e-5

# The least each op must move, in units of x's bytes (float32, N*C*H*W): every argument read once,
# every result written once. Pooling is 2x2 with stride 2, so pooled tensors are x/4; the argmax is
# int32 and dropout's mask float32, both 4 bytes a value like x.
TRAFFIC = {
    "copy": 2.0,  # read x; write the copy
    "max-pool forward": 1.5,  # read x; write y and argmax (x/4 each)
    "max-pool backward": 1.5,  # read gy and argmax (x/4 each); write gx
    "avg-pool forward": 1.25,  # read x; write y (x/4)
    "avg-pool backward": 1.25,  # read gy (x/4); write gx
    "relu forward": 2.0,  # read x; write y
    "relu backward": 3.0,  # read gy and y; write gx
    "dropout forward": 3.0,  # read x; write y and the mask
    "batch-norm forward": 2.0,  # train mode: read x; write y (the (C,) statistics are negligible;
    # a kernel that reads x once for the statistics and again to normalise moves 3)
}


def shape(mebibytes: float) -> tuple[int, int, int, int]:
    """(N, C, 128, 128) of about ``mebibytes`` MiB of float32: up to 64 channels, then more images
    (256 -> 64x64x128x128)."""
    planes = max(1, round(mebibytes * 16))
    channels = min(MAX_CHANNELS, planes)
    return planes // channels, channels, PLANE, PLANE


def case_name(x_shape: tuple[int, ...]) -> str:
    """The report's case label: the tensor's shape, dtype and size in MiB."""
    return f"{'x'.join(map(str, x_shape))} float32 ({4 * math.prod(x_shape) / 2**20:.4g} MiB)"


def bytes_moved(op: str, x_shape: tuple[int, ...]) -> int:
    """The least bytes one call of ``op`` moves on a float32 x of ``x_shape`` (:data:`TRAFFIC`)."""
    return round(TRAFFIC[op] * 4 * math.prod(x_shape))


def device_copy(backend, x: Any) -> Any:
    """A new array holding ``x``: the driver's device-to-device copy under CuPy, else NumPy's."""
    out = backend.xp.empty_like(x)
    if hasattr(out.data, "copy_from_device_async"):  # a CuPy MemoryPointer
        out.data.copy_from_device_async(x.data, x.nbytes)
    else:
        out[...] = x
    return out


def gpucnn_ops(backend, x_shape: tuple[int, int, int, int]) -> dict[str, Callable[[], Any]]:
    """Each op of :data:`TRAFFIC` as a call of ``backend`` on device arrays made once."""
    case = ops.Case("bandwidth", "pool", *x_shape)
    device = {k: backend.asarray(v) for k, v in ops.inputs(case, np.random.default_rng(0)).items()}
    x, c = device["x"], x_shape[1]
    y = backend.relu_forward(x)
    gamma = backend.asarray(np.ones(c, np.float32))
    beta = backend.asarray(np.zeros(c, np.float32))
    calls = {
        "copy": lambda: device_copy(backend, x),
        **ops.gpucnn_ops(backend, case, device),
        "relu forward": lambda: backend.relu_forward(x),
        "relu backward": lambda: backend.relu_backward(x, y),  # x stands in for gy (same shape)
        "dropout forward": lambda: backend.dropout_forward(x, DROPOUT_P, 0)[0],
        "batch-norm forward": lambda: backend.batch_norm2d_forward_train(x, gamma, beta, BN_EPS)[0],
    }
    return {op: calls[op] for op in TRAFFIC}


def add_copy_fractions(rows: list[Result]) -> None:
    """Set ``copy_fraction`` of one peer's rows (the copy's own is 1) and note the goal."""
    (copy,) = [r for r in rows if r.op == "copy"]
    for r in rows:
        if r.gb_per_s is None or copy.gb_per_s is None or r.device != copy.device:
            continue
        r.copy_fraction = r.gb_per_s / copy.gb_per_s
        if r is copy:
            r.annotate("the reference")
        else:
            verdict = "met" if r.copy_fraction >= GOAL else "missed"
            r.annotate(f"goal >= {GOAL:.0%} of copy: {verdict}")

"""Stateless ops with PyTorch's argument conventions, validated, dispatched on the input's device.

Inputs are NumPy arrays on the CPU and CuPy arrays on the GPU; the result is where the input is.
Bad input (wrong rank, dtype, channel count, device, or a window that does not fit) raises a
``ValueError``/``TypeError`` naming the problem and the shapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import Backend, backend_of
from .errors import device_mismatch
from .shapes import (
    check_pool_padding,
    conv_padding,
    integer,
    is_real,
    pair,
    positive_int,
    positive_pair,
)

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype: Any, name: str) -> np.dtype:
    """``dtype`` as a NumPy dtype; a TypeError naming ``name`` unless it is float32 or float64
    (None too, which NumPy would read as float64)."""
    try:
        got = np.dtype(dtype) if dtype is not None else None
    except TypeError:  # NumPy's "data type 'x' not understood" names no argument
        got = None
    if got is None or got not in FLOAT_DTYPES:  # (not `in` alone: NumPy has None == float64)
        what = repr(dtype) if got is None else f"dtype {got}"
        raise TypeError(f"{name} must be float32 or float64, got {what}")
    return got


def check_float_array(x: Any, name: str, ndim: int | None = None) -> Backend:
    """Backend of ``x`` after checking it is a float32/float64 array of rank ``ndim``."""
    backend = backend_of(x, name)
    if x.dtype not in FLOAT_DTYPES:  # first: every op asks, and this test is 10x cheaper
        float_dtype(x.dtype, name)
    if ndim is not None and x.ndim != ndim:
        layout = {4: "(N, C, H, W)", 2: "(N, features)", 1: "(features,)"}.get(ndim, "")
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(x.shape)}")
    return backend


def check_flag(value: Any, name: str) -> None:
    """TypeError unless ``value`` is a bool: a string such as "no" would be taken as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def check_same_device(backend: Backend, **weights: Any) -> None:
    """Raise DeviceMismatchError when any of ``weights`` lives outside the device of the input,
    ``backend``; its hint is to move the input to the weights' (the model's) device."""
    for name, w in weights.items():
        if w is not None and not backend.owns(w):
            raise device_mismatch(
                name, backend_of(w, name).name, "the input", backend.name, move_input=True
            )


def check_same_dtype(x: Any, **arrays: Any) -> None:
    """Raise TypeError when any of ``arrays`` has a dtype other than ``x``'s."""
    for name, a in arrays.items():
        if a is not None and a.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but the input has dtype {x.dtype}")


def conv2d_arguments(x, weight, bias, stride, padding, dilation, groups):
    """Validate conv2d inputs; returns (backend, stride, padding, dilation) normalised."""
    backend = check_float_array(x, "conv2d input", 4)
    check_float_array(weight, "conv2d weight", 4)
    check_same_device(backend, weight=weight, bias=bias)
    check_same_dtype(x, weight=weight, bias=bias)
    groups = positive_int(groups, "groups")
    if 0 in weight.shape:  # an empty batch is fine (an empty output), an empty filter is not
        raise ValueError(
            f"conv2d: weight {tuple(weight.shape)} has a zero size; output channels, input "
            "channels per group and kernel sizes must be >= 1"
        )
    k, cg, kh, kw = weight.shape
    if x.shape[1] != cg * groups:
        raise ValueError(
            f"conv2d: input has {x.shape[1]} channels but weight {tuple(weight.shape)} with "
            f"groups={groups} expects {cg * groups}"
        )
    if k % groups:
        raise ValueError(f"conv2d: {k} output channels are not divisible by groups={groups}")
    if bias is not None and tuple(bias.shape) != (k,):
        raise ValueError(f"conv2d: bias must have shape ({k},), got {tuple(bias.shape)}")
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    padding = conv_padding(padding, (kh, kw), dilation, stride)
    return backend, stride, padding, dilation


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation. x: (N, C, H, W), weight: (K, C/groups, R, S), bias: (K,).

    Returns (N, K, Ho, Wo).

    ``padding`` is an int, a pair, "valid" or "same"; ``stride`` and ``dilation`` ints or pairs.
    """
    backend, stride, padding, dilation = conv2d_arguments(
        x, weight, bias, stride, padding, dilation, groups
    )
    return backend.conv2d_forward(x, weight, bias, stride, padding, dilation, int(groups))


def pool2d_geometry(kernel_size, stride, padding, what: str):
    """Validate a pooling window; returns (kernel, stride, padding) as pairs.

    ``stride=None`` means stride = kernel size; padding may be at most half the kernel (as PyTorch).
    """
    kernel = positive_pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else positive_pair(stride, "stride")
    pad = pair(padding, "padding")
    check_pool_padding(pad, kernel, what)
    return kernel, stride, pad


def pool2d_arguments(x, kernel_size, stride, padding, what: str):
    """Validate pooling inputs; returns (backend, kernel, stride, padding) as pairs."""
    backend = check_float_array(x, f"{what} input", 4)
    return (backend, *pool2d_geometry(kernel_size, stride, padding, what))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling over windows (padding is never chosen). x: (N, C, H, W) -> (N, C, Ho, Wo)."""
    backend, kernel, stride, pad = pool2d_arguments(x, kernel_size, stride, padding, "max_pool2d")
    return backend.max_pool2d_forward(x, kernel, stride, pad)[0]


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling; padded zeros count in the mean (divisor kh*kw). x: (N, C, H, W)."""
    backend, kernel, stride, pad = pool2d_arguments(x, kernel_size, stride, padding, "avg_pool2d")
    return backend.avg_pool2d_forward(x, kernel, stride, pad)


def global_avg_pool2d_arguments(x, what: str):
    """Validate a global average pooling input; returns its backend. An empty plane (H or W 0)
    is refused: its mean would be NaN."""
    backend = check_float_array(x, f"{what} input", 4)
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"{what}: empty planes in input of shape {tuple(x.shape)}")
    return backend


def global_avg_pool2d(x):
    """Mean over each channel's H x W plane. x: (N, C, H, W) -> (N, C)."""
    backend = global_avg_pool2d_arguments(x, "global_avg_pool2d")
    return backend.global_avg_pool2d_forward(x)


def relu(x):
    """max(x, 0), elementwise, on x's device."""
    return check_float_array(x, "relu input").relu_forward(x)


def linear(x, weight, bias=None, relu: bool = False):
    """x @ weight.T + bias. x: (N, in), weight: (out, in) like PyTorch, bias: (out,) -> (N, out).

    ``relu``: max(., 0) of the result, fused where the device can."""
    check_flag(relu, "relu")
    backend = check_float_array(x, "linear input", 2)
    check_float_array(weight, "linear weight", 2)
    check_same_device(backend, weight=weight, bias=bias)
    check_same_dtype(x, weight=weight, bias=bias)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"linear: input has {x.shape[1]} features but weight {tuple(weight.shape)} "
            f"expects {weight.shape[1]}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"linear: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}"
        )
    return backend.linear_forward(x, weight, bias, relu)


def check_labels(backend: Backend, logits, labels, check_range: bool = True) -> Any:
    """Labels as an int64 array on the logits' device, checked for shape and range [0, K).
    ``check_range`` off skips the range on a GPU, where it reads the device (a bad label then
    gives a NaN loss); on the CPU it costs no such read, and a label out of range would index
    another class silently, so it is always checked there."""
    if not backend.owns(labels):
        got = backend_of(labels, "labels").name
        raise device_mismatch("labels", got, "the loss's input (logits)", backend.name)
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape ({logits.shape[0]},) for logits {tuple(logits.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    if not check_range and backend.name != "cpu":
        return labels.astype(backend.xp.int64, copy=False)
    lo, hi = (int(v) for v in backend.to_numpy(backend.xp.stack([labels.min(), labels.max()])))
    if lo < 0 or hi >= logits.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {logits.shape[1]}) for {logits.shape[1]} classes, "
            f"got values from {lo} to {hi}"
        )
    return labels.astype(backend.xp.int64, copy=False)


def check_label_smoothing(label_smoothing: float, name: str = "label_smoothing") -> None:
    """TypeError, naming ``name``, unless ``label_smoothing`` is a number (not a bool), ValueError
    unless it lies in [0, 1] (NaN does not)."""
    if not is_real(label_smoothing):
        raise TypeError(f"{name} must be a number, got {label_smoothing!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {label_smoothing}")


def cross_entropy_arguments(logits, labels, label_smoothing: float = 0.0, check_range: bool = True):
    """Validate softmax cross-entropy inputs; returns (backend, labels as int64)."""
    check_label_smoothing(label_smoothing)
    backend = check_float_array(logits, "logits", 2)
    if logits.shape[0] == 0:
        raise ValueError("softmax cross-entropy of an empty batch: logits have 0 rows")
    return backend, check_labels(backend, logits, labels, check_range)


def softmax_cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Mean cross-entropy of softmax(logits) against integer labels; returns (loss 0-d, probs).

    logits: (N, K) float, labels: (N,) int in [0, K). Numerically stable (max subtracted). With
    ``label_smoothing`` e the target is (1 - e) * onehot(labels) + e / K, as in PyTorch.
    """
    backend, labels = cross_entropy_arguments(logits, labels, label_smoothing)
    return backend.softmax_cross_entropy_forward(logits, labels, label_smoothing)


def check_dropout_probability(p: float) -> None:
    """TypeError unless ``p`` is a number (not a bool), ValueError unless it lies in [0, 1)."""
    if not is_real(p):
        raise TypeError(f"dropout probability must be a number, got {p!r}")
    if not 0.0 <= p < 1.0:  # NaN too
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")


def dropout(x, p: float, seed: int):
    """Inverted dropout with a counter-based mask (same mask for the same seed on every device)."""
    check_dropout_probability(p)
    seed = integer(seed, "seed")  # int() would take 1.7 as the seed 1
    if not 0 <= seed < 2**64:  # the mask takes it mod 2**64: -1 would draw 2**64 - 1's mask
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return check_float_array(x, "dropout input").dropout_forward(x, p, seed)[0]

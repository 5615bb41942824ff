"""Argument normalisation and output-size arithmetic shared by every op and both devices."""

from __future__ import annotations

import math
import numbers
import operator
import os
import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

Pair = tuple[int, int]
Padding2d = tuple[Pair, Pair]  # ((top, bottom), (left, right))


def integer(value: int, name: str) -> int:
    """``value`` as an int; a float (even 3.0), a bool or anything else is refused by name, since
    int() would truncate 2.7 to 2 and take True for 1."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{name} must be an int, got {value!r}")


def is_real(value) -> bool:
    """A real number, not a bool (True would pass for 1)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_non_negative(**values: float) -> None:
    """A TypeError naming the first value that is not a number (a str, a bool), a ValueError
    naming the first that is negative, NaN or infinite, or past a float's range (10**400: an
    int below math.inf that float() refuses)."""
    for name, value in values.items():
        if not is_real(value):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not (0 <= value and _fits_a_float(value)):  # NaN and inf too
            raise ValueError(f"{name} must be non-negative and finite, got {value}")


def _fits_a_float(value: numbers.Real) -> bool:
    """Whether ``value`` is a finite float (an int past 1.8e308 is not one)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def scalar(value: Any) -> Any:
    """A 0-d array, NumPy's or CuPy's (a mean computed on the GPU), as its Python number, which
    :func:`is_real` can judge; anything else as it is. (``np.asarray`` of a CuPy array raises.)"""
    return value.item() if getattr(value, "ndim", None) == 0 else value


def _int_at_least(value: int, name: str, least: int) -> int:
    """:func:`integer`, and a ValueError naming ``name`` below ``least``."""
    v = integer(value, name)
    if v < least:
        raise ValueError(f"{name} must be >= {least}, got {v}")
    return v


def positive_int(value: int, name: str) -> int:
    """Like :func:`integer`, but it must be >= 1 (a layer's sizes, channel and group counts)."""
    return _int_at_least(value, name, 1)


def non_negative_int(value: int, name: str) -> int:
    """Like :func:`integer`, but it must be >= 0 (a counter)."""
    return _int_at_least(value, name, 0)


def file_path(value: str | os.PathLike, name: str) -> Path:
    """``value`` as a Path; anything but a str or an os.PathLike (None, a number, bytes) is a
    TypeError naming ``name``, where pathlib's words ("expected str, bytes or os.PathLike
    object, not NoneType") name neither the argument nor the call."""
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {reprlib.repr(value)}")
    return Path(value)


def make_rng(rng: np.random.Generator | int | None, name: str = "rng") -> np.random.Generator:
    """A NumPy Generator from a Generator (taken as it is), a seed (an int >= 0 or a sequence of
    them) or None (fresh entropy). Anything else is refused naming ``name``, as NumPy's words
    ("SeedSequence expects int ...") do not, and so is a bool, which NumPy would take for 0 or 1."""
    if not isinstance(rng, (bool, np.bool_)):
        try:
            return np.random.default_rng(rng)
        except TypeError:
            pass
        except ValueError:  # NumPy's "expected non-negative integer"
            raise ValueError(f"{name}: a seed must be >= 0, got {rng!r}") from None
    raise TypeError(f"{name} must be a NumPy Generator, an int seed >= 0 or None, got {rng!r}")


def pair(value: int | Sequence[int], name: str) -> Pair:
    """Turn an int or a 2-sequence of ints into ``(h, w)``; reject anything else by name."""
    if isinstance(value, (bool,)) or value is None:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, (int,)) or (hasattr(value, "__index__") and not hasattr(value, "__len__")):
        v = int(value)
        return (v, v)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        try:  # whole numbers only: int() would truncate 2.7 to 2, and True would pass for 1
            return (integer(value[0], name), integer(value[1], name))
        except TypeError:
            pass
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def positive_pair(value: int | Sequence[int], name: str) -> Pair:
    """Like :func:`pair`, but every entry must be >= 1 (strides, dilations, kernel sizes)."""
    p = pair(value, name)
    if min(p) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return p


def conv_output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1) -> int:
    """Output length of a sliding window: ``floor((size + pad_total - dilation*(kernel-1) - 1) / stride) + 1``.

    The one formula every op and both devices use (the tutorial's ``(W - K + 2P) / S + 1``); the
    ops call its unchecked core, :func:`_window_length`, with arguments they have checked.
    Returns a value < 1 when the (dilated) window does not fit in the padded input. Each argument
    is checked (a public function: 8.5 gave 6.0, a stride of 0 a ZeroDivisionError).
    """
    for name, value in (("kernel", kernel), ("stride", stride), ("dilation", dilation)):
        positive_int(value, name)
    non_negative_int(size, "size")
    non_negative_int(pad_total, "pad_total")
    return _window_length(size, kernel, stride, pad_total, dilation)


def _window_length(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """:func:`conv_output_size` of arguments the ops have checked already (every forward asks:
    the checks would cost it about 1 us a call)."""
    span = dilation * (kernel - 1) + 1
    return (size + pad_total - span) // stride + 1


def conv_padding(
    padding: int | Sequence[int] | str, kernel: Pair, dilation: Pair, stride: Pair
) -> Padding2d:
    """Normalise conv padding (int, pair, "valid" or "same") to ``((top, bottom), (left, right))``.

    "same" follows PyTorch: only for stride 1; any odd extra pixel goes to the bottom/right.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
            out = []
            for k, d in zip(kernel, dilation, strict=True):
                total = d * (k - 1)
                out.append((total // 2, total - total // 2))
            return (out[0], out[1])
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return ((ph, ph), (pw, pw))


def window_output_shape(
    in_hw: Pair, kernel: Pair, stride: Pair, padding: Padding2d, dilation: Pair, what: str
) -> Pair:
    """``(Ho, Wo)`` of a sliding window over ``in_hw``; a clear ValueError if it would be empty."""
    ho = _window_length(in_hw[0], kernel[0], stride[0], sum(padding[0]), dilation[0])
    wo = _window_length(in_hw[1], kernel[1], stride[1], sum(padding[1]), dilation[1])
    if ho < 1 or wo < 1:
        raise ValueError(
            f"{what}: kernel {kernel} (dilation {dilation}) does not fit the input of size {in_hw} "
            f"with padding {padding}: the output would be {ho}x{wo}"
        )
    return (ho, wo)


def symmetric(padding: Pair) -> Padding2d:
    """Pool padding ``(ph, pw)`` as ``((ph, ph), (pw, pw))``."""
    return ((padding[0], padding[0]), (padding[1], padding[1]))


def check_pool_padding(padding: Pair, kernel: Pair, what: str) -> None:
    """ValueError unless each padding lies in [0, kernel // 2], as PyTorch's pooling: past it a
    window may lie wholly in the padding, where max pooling has no input pixel to choose."""
    if min(padding) < 0 or padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(
            f"{what}: padding {padding} must be non-negative and at most half the kernel {kernel}"
        )


def pool_output_shape(x_shape, kernel: Pair, stride: Pair, padding: Pair, what: str) -> Pair:
    """``(Ho, Wo)`` of pooling (N, C, H, W) with symmetric ``padding``; ValueError if empty, if
    the planes are empty (every window would lie in the padding), or if the padding is refused
    by :func:`check_pool_padding`."""
    check_pool_padding(padding, kernel, what)
    if 0 in x_shape[2:4]:
        raise ValueError(f"{what}: empty planes in input of shape {tuple(x_shape)}")
    return window_output_shape(x_shape[2:], kernel, stride, symmetric(padding), (1, 1), what)

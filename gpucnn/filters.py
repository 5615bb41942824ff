"""The tutorial's classic 3x3 kernels (edges, Gaussian blur, sharpen), applied with ``F.conv2d``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import functional as F
from .backend import get_backend

KERNELS: dict[str, np.ndarray] = {
    "horizontal-edge": np.array([[-1, -1, -1], [0, 0, 0], [1, 1, 1]], dtype=np.float32),
    "vertical-edge": np.array([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]], dtype=np.float32),
    "gaussian-blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 16,
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float32),
}


def filter_bank(names: str | Sequence[str] | None = None) -> np.ndarray:
    """Conv weights (K, 1, 3, 3) float32 of the named kernels (all of them by default; one name
    alone is that kernel, K = 1)."""
    try:
        names = [names] if isinstance(names, str) else list(KERNELS if names is None else names)
    except TypeError:  # "'int' object is not iterable"
        raise TypeError(f"names must be a kernel name or a list of them, got {names!r}") from None
    if not names:
        raise ValueError(f"no kernel named; available: {', '.join(KERNELS)}")
    unknown = [n for n in names if not isinstance(n, str) or n not in KERNELS]  # a list: hashed
    if unknown:
        raise ValueError(f"unknown kernel(s) {unknown}; available: {', '.join(KERNELS)}")
    return np.stack([KERNELS[n] for n in names])[:, None]


def apply_filters(
    image: np.ndarray,
    names: str | Sequence[str] | None = None,
    device: str = "cpu",
    padding: int = 0,
) -> np.ndarray:
    """Cross-correlate a 2-D image with each named kernel (or the one named) on ``device`` ->
    host (K, Ho, Wo)."""
    image = np.asarray(image)
    # Refused here: conv2d would name the (1, 1, ...) array made of it, and a complex image
    # would be cast to real (a NumPy warning), a str be float()'s words.
    if image.dtype.kind not in "biuf":
        raise TypeError(f"apply_filters: image must hold real numbers, got dtype {image.dtype}")
    if image.ndim != 2:
        raise ValueError(f"apply_filters: image must be 2-D (H, W), got shape {image.shape}")
    backend = get_backend(device)
    x = backend.asarray(image.astype(np.float32)[None, None])
    y = F.conv2d(x, backend.asarray(filter_bank(names)), padding=padding)
    return backend.to_numpy(y)[0]

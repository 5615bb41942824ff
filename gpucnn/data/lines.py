"""The tutorial's synthetic task: 8x8 images with one vertical (label 0) or horizontal (1) line."""

from __future__ import annotations

import numpy as np

from ..shapes import check_non_negative, integer, make_rng

CLASSES = ("vertical", "horizontal")


def generate_lines(
    n: int, rng: np.random.Generator | int | None = 0, size: int = 8, noise: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 1, size, size) float32 and labels (n,) int64, alternating 0, 1, 0, ...

    As in the tutorial: Gaussian noise of std ``noise``, and one full line of ones at a random
    row/column in ``[1, size - 1)``. Seeded by ``rng`` (a Generator or an int seed).
    """
    n, size = integer(n, "lines: n"), integer(size, "lines: size")  # 2.5 images is no count
    if n < 1 or size < 3:
        raise ValueError(f"lines needs n >= 1 and size >= 3, got n={n}, size={size}")
    check_non_negative(noise=noise)  # NaN made every image NaN; "0.1" gave NumPy's ufunc words
    rng = make_rng(rng)
    images = rng.standard_normal((n, size, size)) * noise
    labels = np.arange(n, dtype=np.int64) % 2
    where = rng.integers(1, size - 1, size=n)
    vertical = labels == 0
    images[vertical, :, where[vertical]] = 1.0
    images[~vertical, where[~vertical], :] = 1.0
    return images[:, None].astype(np.float32), labels

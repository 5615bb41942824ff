"""Mini-batches from arrays resident on the device: seeded shuffling, normalisation, augmentation.

The batch arithmetic is written once against the backend's array module, so it runs unchanged on
NumPy and CuPy. Random draws come from one NumPy ``Generator`` on the host (small index arrays), so
both devices see the same batches and a checkpointed generator state resumes the same stream.
The images are normalised once, when the loader is made, and an epoch's shuffled order goes to the
device once: a batch without augmentation is then two gathers, with no upload (on a GPU, each
operation per batch is a launch the training step waits behind).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..backend import Backend, get_backend
from ..functional import check_flag
from ..shapes import integer, is_real, make_rng, positive_int, scalar


def random_shift(x: Any, offsets: Any, shift: int, xp: Any, fill: float = 0.0) -> Any:
    """Translate each image by its own offset, filling with ``fill`` (a random crop of a padded
    image). x: (N, C, H, W); offsets: (N, 2) ints in ``[0, 2*shift]`` (``shift``: no movement).
    """
    n, c, h, w = x.shape
    padded = xp.full((n, c, h + 2 * shift, w + 2 * shift), fill, dtype=x.dtype)
    padded[:, :, shift : shift + h, shift : shift + w] = x
    rows = offsets[:, 0:1] + xp.arange(h)  # (N, H)
    cols = offsets[:, 1:2] + xp.arange(w)  # (N, W)
    # Advanced indices split by a slice put their broadcast dims first: (N, H, W, C).
    out = padded[xp.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return xp.ascontiguousarray(out.transpose(0, 3, 1, 2))


def random_flip(x: Any, mask: Any, xp: Any) -> Any:
    """Mirror the images where ``mask`` (N,) is true, left to right. x: (N, C, H, W)."""
    return xp.where(mask[:, None, None, None], x[..., ::-1], x)


def _integer_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` (N,) as int64; a ValueError for one that is not a whole number (not truncated)
    or another shape (an (N, 1) column failed only at the loss), a TypeError for text."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "buif":  # bools are the labels 0 and 1
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {labels.shape}")
    as_int = labels.astype(np.int64)
    bad = np.flatnonzero(as_int != labels)
    if bad.size:
        raise ValueError(f"labels must be whole numbers, got {labels[bad[0]]}")
    return as_int


def _resident(backend: Backend, array: np.ndarray) -> Any:
    """``array`` on the device, or left on the host when the device has no room for it."""
    try:
        return backend.asarray(array)
    except MemoryError:
        return array


def _number(value: Any, name: str) -> float:
    """``value`` (a Python or NumPy number, a 0-d NumPy or CuPy array) as a float; a TypeError
    naming it for None, a string, a bool, a complex number or an array of several, where Python's
    and NumPy's words ("must be real number", "only 0-dimensional arrays") name nothing."""
    number = scalar(value)
    if not is_real(number):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(number)


class DataLoader:
    """Batches (images (B, C, H, W) float32, labels (B,) int64) on ``device``.

    ``mean``/``std`` normalise raw values; ``shift``/``flip`` augment (training only); ``rng`` seeds
    shuffling and augmentation (a Generator, shared with the caller, or an int seed).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        device: str | Backend = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        rng: np.random.Generator | int | None = None,
        mean: float = 0.0,
        std: float = 1.0,
        shift: int = 0,
        flip: bool = False,
    ):
        images = np.asarray(images)
        if images.ndim < 1 or images.dtype.kind not in "biuf":  # complex ones were cast to real
            raise TypeError(
                f"images must be an array (N, ...) of real numbers, got dtype {images.dtype} of "
                f"shape {images.shape}"
            )
        labels = _integer_labels(labels)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        batch_size = positive_int(batch_size, "batch_size")
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last), ("flip", flip)):
            check_flag(flag, name)  # drop_last="no" would be true
        if integer(shift, "shift") < 0:
            raise ValueError(f"shift must be >= 0 pixels, got {shift}")
        if (shift or flip) and np.ndim(images) != 4:
            raise ValueError(f"shift and flip need images (N, C, H, W), got {np.shape(images)}")
        mean, std = _number(mean, "mean"), _number(std, "std")
        if not 0 < std < math.inf:  # NaN too
            raise ValueError(f"std must be positive and finite, got {std}")
        if not math.isfinite(mean):
            raise ValueError(f"mean must be finite, got {mean}")
        self.backend = get_backend(device)
        # Normalised as each batch used to be (float32 x * scale + offset): the same values.
        scale, self.offset = np.float32(1.0 / std), np.float32(-mean / std)
        normalised = images.astype(np.float32)  # a copy: scaled in place
        normalised *= scale
        normalised += self.offset
        self.images = _resident(self.backend, normalised)
        self.labels = _resident(self.backend, labels)
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rng = make_rng(rng)
        self.shift, self.flip = shift, flip

    def __len__(self) -> int:
        n, b = len(self.labels), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def num_samples(self) -> int:
        """Samples per pass (fewer than the dataset when drop_last cuts a partial batch)."""
        return min(len(self.labels), len(self) * self.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        n = len(self.labels)
        order = self._order(n)
        for start in range(0, self.num_samples, self.batch_size):
            stop = min(start + self.batch_size, n)
            index = slice(start, stop) if order is None else order[start:stop]
            yield self._batch(index), self._take(self.labels, index)

    def _order(self, n: int) -> Any:
        """This epoch's shuffled order (None: in order), on the device when the data is there."""
        if not self.shuffle:
            return None
        order = self.rng.permutation(n)
        on_device = self.backend.owns(self.images) and self.backend.owns(self.labels)
        return self.backend.asarray(order) if on_device else order

    def _take(self, array: Any, index: Any) -> Any:
        """``array[index]`` on the device, gathering on whichever side ``array`` lives (a device
        order only comes with data that is all on the device, see :meth:`_order`)."""
        if not isinstance(index, slice) and self.backend.owns(array):
            index = self.backend.asarray(index)
        return self.backend.asarray(array[index])

    def _batch(self, index: Any) -> Any:
        xp = self.backend.xp
        x = self._take(self.images, index)
        if self.shift:
            offsets = self.rng.integers(0, 2 * self.shift + 1, size=(len(x), 2))
            # The padding is a raw 0, as when batches were normalised after the shift.
            x = random_shift(x, self.backend.asarray(offsets), self.shift, xp, fill=self.offset)
        if self.flip:
            x = random_flip(x, self.backend.asarray(self.rng.random(len(x)) < 0.5), xp)
        return x

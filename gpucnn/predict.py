"""Classify image files (PNG, JPEG, PGM, anything Pillow reads) with a trained checkpoint."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from typing import BinaryIO

import numpy as np

from .checkpoint import load_checkpoint
from .shapes import file_path

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # "I": how older Pillows open them


def load_image(path: str | os.PathLike, shape: Sequence[int]) -> np.ndarray:
    """An image file as (C, H, W) float32 in [0, 1]: converted to C channels, resized to H x W.

    The image is turned upright by its EXIF orientation; 16-bit images are divided by 65535
    (Pillow's 8-bit conversion would clip them to black and white), float images are clipped to
    [0, 1], and transparent pixels are laid on black, the background of the training images.
    """
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError as err:
        raise ImportError(
            f"reading images needs Pillow ({err}): pip install 'gpucnn[cli]'"
        ) from err

    c, h, w = shape
    try:
        with warnings.catch_warnings():
            # Pillow warns from half its limit on pixels (it refuses past the limit): the image
            # is read once and scaled down, so the warning would only clutter the output
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)  # as a viewer shows it (portraits)
                pixels = _pixels(Image, upright, c, (w, h))
    except UnidentifiedImageError as err:
        raise ValueError(f"{path}: not an image Pillow can read") from err
    # A truncated or damaged file (OSError; a broken PNG chunk is a SyntaxError), or more pixels
    # than Pillow's limit (a decompression bomb)
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: {err}") from err
    return pixels[None] if c == 1 else pixels.transpose(2, 0, 1)


def _pixels(Image, image, channels: int, size: tuple[int, int]) -> np.ndarray:  # noqa: N803
    """(H, W) for one channel, else (H, W, 3), float32 in [0, 1], at ``size`` (w, h)."""
    if image.mode in (*_SIXTEEN_BIT, "F"):
        scale = 65535.0 if image.mode in _SIXTEEN_BIT else 1.0
        values = np.asarray(image)
        gray = np.clip(values.astype(np.float32) / scale, 0.0, 1.0)
        if "transparency" in image.info:  # one value that marks transparent pixels
            gray[values == image.info["transparency"]] = 0.0
        gray = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR))
        return gray if channels == 1 else np.repeat(gray[..., None], 3, axis=2)
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def _is_open_file(value) -> bool:
    """An open binary file (or io.BytesIO), which Pillow reads as it reads a path."""
    return callable(getattr(value, "read", None))


def predict_files(
    checkpoint: str | os.PathLike,
    paths: str | os.PathLike | BinaryIO | Sequence[str | os.PathLike | BinaryIO],
    device: str = "cpu",
) -> list[tuple[str, str, float]]:
    """(path, class name, probability) of the most likely class for each image file (a path, or
    a file open for binary reading, named by its ``name`` where it has one).

    Pixels are scaled to the training data's range and normalised as in training. One path
    alone is that image (a str was taken letter by letter: "/: Is a directory").
    """
    file_path(checkpoint, "predict_files: checkpoint")
    if isinstance(paths, str | os.PathLike) or _is_open_file(paths):
        paths = [paths]  # an open file was read line by line
    elif not isinstance(paths, Iterable):  # None: "'NoneType' object is not iterable"
        raise TypeError(f"predict_files: paths must be a path or paths, got {paths!r}")
    paths = list(paths)
    for path in paths:  # an int was Pillow's "'int' object has no attribute 'read'"
        if not _is_open_file(path):
            file_path(path, "predict_files: each of paths")
    if not paths:  # NumPy's "need at least one array to stack" otherwise
        raise ValueError("predict_files: no image paths given")
    ckpt = load_checkpoint(checkpoint)
    meta = ckpt.meta
    model = ckpt.build_model(device).eval()
    backend = model.backend
    shape = ckpt.spec["input_shape"]
    batch = np.stack([load_image(p, shape) for p in paths]) * meta.get("input_range", 1.0)
    batch = (batch - meta.get("mean", 0.0)) / meta.get("std", 1.0)
    with model.inference():
        logits = model(backend.asarray(batch.astype(np.float32)))
    xp = backend.xp
    probs = xp.exp(logits - logits.max(axis=1, keepdims=True))
    probs = backend.to_numpy(probs / probs.sum(axis=1, keepdims=True))
    classes = meta.get("classes") or [str(i) for i in range(probs.shape[1])]
    best = probs.argmax(axis=1)
    return [
        (str(getattr(p, "name", p) if _is_open_file(p) else p), classes[k], float(probs[i, k]))
        for i, (p, k) in enumerate(zip(paths, best, strict=True))
    ]

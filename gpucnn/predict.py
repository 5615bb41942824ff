"""Classify image files (PNG, JPEG, PGM, anything Pillow reads) with a trained checkpoint."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .checkpoint import load_checkpoint


def load_image(path: str | os.PathLike, shape: Sequence[int]) -> np.ndarray:
    """An image file as (C, H, W) float32 in [0, 1]: converted to C channels, resized to H x W."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:
        raise ImportError(
            f"reading images needs Pillow ({err}): pip install 'gpucnn[cli]'"
        ) from err

    c, h, w = shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if c == 1 else "RGB")
            if image.size != (w, h):
                image = image.resize((w, h), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except UnidentifiedImageError as err:
        raise ValueError(f"{path}: not an image Pillow can read") from err
    return pixels[None] if c == 1 else pixels.transpose(2, 0, 1)


def predict_files(
    checkpoint: str | os.PathLike, paths: Sequence[str | os.PathLike], device: str = "cpu"
) -> list[tuple[str, str, float]]:
    """(path, class name, probability) of the most likely class for each image file.

    Pixels are scaled to the training data's range and normalised as in training.
    """
    ckpt = load_checkpoint(checkpoint)
    meta = ckpt.meta
    model = ckpt.build_model(device).eval()
    backend = model.backend
    shape = ckpt.spec["input_shape"]
    batch = np.stack([load_image(p, shape) for p in paths]) * meta.get("input_range", 1.0)
    batch = (batch - meta.get("mean", 0.0)) / meta.get("std", 1.0)
    logits = model(backend.asarray(batch.astype(np.float32)))
    xp = backend.xp
    probs = xp.exp(logits - logits.max(axis=1, keepdims=True))
    probs = backend.to_numpy(probs / probs.sum(axis=1, keepdims=True))
    classes = meta.get("classes") or [str(i) for i in range(probs.shape[1])]
    best = probs.argmax(axis=1)
    return [
        (str(p), classes[k], float(probs[i, k]))
        for i, (p, k) in enumerate(zip(paths, best, strict=True))
    ]

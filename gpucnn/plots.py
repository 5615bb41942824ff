"""Pictures with matplotlib (Agg, no display needed): training curves, filters, image grids."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .shapes import positive_int


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # an optional dependency (extra "cli"): say how to get it
        raise ImportError(f"pictures need matplotlib ({err}): pip install 'gpucnn[cli]'") from err

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Sequence[dict], path: str | os.PathLike) -> None:
    """Loss and accuracy per epoch (train and test) side by side."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for split in ("train", "test"):
            ax.plot(epochs, [h[f"{split}_{metric}"] for h in history], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_images(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | os.PathLike,
    cols: int = 8,
    cmap: str = "gray",
    symmetric: bool = False,
) -> None:
    """A grid of 2-D arrays with titles; ``symmetric`` centres the colour scale on zero."""
    titles = list(titles)
    if not len(images):  # matplotlib's "Number of rows must be a positive integer"
        raise ValueError("plot_images: no images to plot")
    if len(titles) < len(images):  # images past the titles went undrawn
        raise ValueError(f"plot_images: {len(images)} images but {len(titles)} titles")
    cols = positive_int(cols, "cols")  # 0 was a ZeroDivisionError
    plt = _pyplot()
    rows = -(-len(images) // cols)
    cols = min(cols, len(images))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):  # more axes than images
        limit = float(np.abs(image).max()) or 1.0
        bounds = {"vmin": -limit, "vmax": limit} if symmetric else {}
        ax.imshow(image, cmap=cmap, interpolation="nearest", **bounds)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_filters(weight: np.ndarray, path: str | os.PathLike) -> None:
    """A first conv layer's filters, weight (K, C, kh, kw): one tile per (filter, input channel)."""
    k, c = weight.shape[:2]
    tiles = [weight[i, j] for i in range(k) for j in range(c)]
    titles = [f"filter {i}" + (f" ch {j}" if c > 1 else "") for i in range(k) for j in range(c)]
    plot_images(tiles, titles, path, cols=min(8, len(tiles)), cmap="bwr", symmetric=True)

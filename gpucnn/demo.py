"""``gpucnn demo``: the tutorial's walk-through, run through gpucnn's ops on a chosen device.

Parameter savings, the classic kernels on an image, the output-size table and pooling's translation
invariance; pictures go to PNG files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import functional as F
from .backend import get_backend
from .filters import KERNELS, apply_filters
from .shapes import conv_output_size, file_path


def dense_parameters(n_in: int, n_out: int) -> int:
    """Weights and biases of a fully connected layer."""
    return n_in * n_out + n_out


def conv_parameters(filters: int, kernel: int, channels: int) -> int:
    """Weights and biases of a convolution layer with square kernels."""
    return filters * (kernel * kernel * channels + 1)


def parameter_comparison() -> str:
    """The tutorial's fully-connected vs convolution parameter counts, as text."""
    rows = [
        ("28x28x1 image, Dense(128)", "784*128+128", dense_parameters(28 * 28, 128)),
        ("28x28x1 image, Conv 16 x 3x3", "16*(9+1)", conv_parameters(16, 3, 1)),
        ("224x224x3 image, Dense(256)", "150528*256+256", dense_parameters(224 * 224 * 3, 256)),
        ("224x224x3 image, Conv 64 x 3x3x3", "64*(27+1)", conv_parameters(64, 3, 3)),
    ]
    lines = ["Fully connected vs convolution (weights + biases):"]
    lines += [f"  {what:<34}{formula:>16} = {n:>12,}" for what, formula, n in rows]
    for dense, conv in ((rows[0], rows[1]), (rows[2], rows[3])):
        lines.append(
            f"  {dense[0].split(',')[0]}: the convolution has {dense[2] / conv[2]:,.0f}x fewer"
        )
    return "\n".join(lines)


def demo_image(size: int = 32) -> np.ndarray:
    """A test picture: a bright square with a grey centre (the tutorial's, scaled up) and a bar."""
    image = np.zeros((size, size), dtype=np.float32)
    q = size // 5
    image[q : 4 * q, q : 4 * q] = 1.0
    image[2 * q : 3 * q, 2 * q : 3 * q] = 0.5
    image[size - q // 2 - 2 : size - 2, 2 : size - 2] = 0.75
    return image


def kernels_section(device: str, out: Path) -> str:
    """Apply every classic kernel to the demo image; save kernels.png."""
    from .plots import plot_images

    image = demo_image()
    results = apply_filters(image, device=device)
    lines = [
        f"Classic kernels on a {image.shape[0]}x{image.shape[1]} image (valid cross-correlation):"
    ]
    for name, r in zip(KERNELS, results, strict=True):
        lines.append(
            f"  {name:<16} output {r.shape}  range [{r.min():+.2f}, {r.max():+.2f}]  "
            f"non-zero {np.count_nonzero(np.abs(r) > 1e-6)}"
        )
    plot_images([image, *results], ["input", *KERNELS], out / "kernels.png", cols=5)
    return "\n".join(lines) + f"\n  -> {out / 'kernels.png'}"


def output_size_section(device: str) -> str:
    """The tutorial's output-size table, the formula checked against real conv2d outputs."""
    backend = get_backend(device)
    x = backend.asarray(np.zeros((1, 1, 8, 8), dtype=np.float32))
    w = backend.asarray(np.full((1, 1, 3, 3), 1 / 9, dtype=np.float32))
    lines = ["Output size = floor((W - K + 2P) / S) + 1, input 8x8, kernel 3x3:"]
    for stride, pad, name in (
        (1, 0, "valid"),
        (1, 1, "same"),
        (2, 0, "stride 2"),
        (2, 1, "stride 2, pad 1"),
    ):
        size = conv_output_size(8, 3, stride, 2 * pad)
        shape = tuple(F.conv2d(x, w, stride=stride, padding=pad).shape[2:])
        lines.append(
            f"  {name:<16} S={stride} P={pad}  (8 - 3 + 2*{pad}) // {stride} + 1 = {size}"
            f"  conv2d -> {shape}"
        )
    return "\n".join(lines)


def pooling_section(device: str, out: Path) -> str:
    """Max pooling of a pattern and of the same pattern shifted: the pooled peak stays put."""
    from .plots import plot_images

    backend = get_backend(device)
    original = np.zeros((6, 6), dtype=np.float32)
    original[0:2, 4:6] = [[5, 8], [7, 3]]
    shifted = np.zeros_like(original)
    shifted[1:3, 3:5] = [[5, 8], [7, 3]]
    maps = backend.asarray(np.stack([original, shifted])[:, None])
    pooled = backend.to_numpy(F.max_pool2d(maps, 2))[:, 0]
    averaged = backend.to_numpy(F.avg_pool2d(maps, 2))[:, 0]
    same = pooled[0, 0, 2] == pooled[1, 0, 2]
    plot_images(
        [original, pooled[0], averaged[0], shifted, pooled[1], averaged[1]],
        ["original", "max pool 2x2", "avg pool 2x2", "shifted", "max pool 2x2", "avg pool 2x2"],
        out / "pooling.png",
        cols=3,
    )
    return (
        "Translation invariance of max pooling (2x2, stride 2):\n"
        f"  original pooled top-right {pooled[0, 0, 2]:.0f}, shifted pooled top-right "
        f"{pooled[1, 0, 2]:.0f}: same = {bool(same)}\n  -> {out / 'pooling.png'}"
    )


def run_demo(device: str = "cpu", out: str | Path = "runs/demo") -> Path:
    """Run every section on ``device``, print it, and save the PNGs into ``out``."""
    backend = get_backend(device)  # no usable GPU: refused before the folder is made
    out = file_path(out, "run_demo: out")
    out.mkdir(parents=True, exist_ok=True)
    print(f"gpucnn demo on device {backend.name!r}\n")
    for section in (
        parameter_comparison(),
        kernels_section(device, out),
        output_size_section(device),
        pooling_section(device, out),
    ):
        print(section + "\n")
    return out

"""``summarize``: a model's per-layer output shapes and parameter counts, as a printable table."""

from __future__ import annotations

import numpy as np

from ..shapes import positive_int
from .module import Module


def count_parameters(module: Module) -> int:
    """Number of trainable scalars in ``module`` (weights and biases)."""
    return sum(int(np.prod(p.shape)) for p in module.parameters())


def _layer_output(index: int, layer: Module, x):
    """``layer(x)``; a ValueError or TypeError from it names the layer and the input shape it
    got, which the op's own message does not (a model has many convolutions); at the first
    layer, the summary's input shape and the form it takes."""
    try:
        return layer(x)
    except (ValueError, TypeError) as err:
        kind = TypeError if isinstance(err, TypeError) else ValueError
        given, form = f"its input of shape {tuple(x.shape)}", ""
        if index == 0:
            given = f"input_shape {tuple(x.shape[1:])} as a batch of one, {tuple(x.shape)}"
            form = (
                "; input_shape is one input's shape, without the batch axis: (C, H, W) for images, "
                "(features,) for a fully connected model"
            )
        raise kind(
            f"summary: layer {index} ({type(layer).__name__}) cannot take {given}: {err}{form}"
        ) from err


def _sizes(input_shape) -> tuple[int, ...]:
    """``input_shape`` as a tuple of ints >= 1; a TypeError or ValueError naming it otherwise."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(
            f"summary: input_shape must be a tuple of sizes such as (C, H, W), got {input_shape!r}"
        ) from None
    return tuple(positive_int(size, f"summary: input_shape {shape}: a size") for size in shape)


def summarize(model: Module, input_shape: tuple[int, ...]) -> str:
    """Table of each top-level layer's output shape and parameters for one (C, H, W) input.

    Runs one forward pass on a zero batch of size 1, in eval mode, on the model's device.
    """
    input_shape = _sizes(input_shape)
    backend = model.backend
    dtype = next((p.data.dtype for p in model.parameters()), np.float32)
    x = backend.xp.zeros((1, *input_shape), dtype=dtype)
    layers = list(model) if hasattr(model, "__iter__") else [model]
    modes = [(m, m.training) for _, m in model.named_modules()]  # each layer's own, restored
    model.eval()
    rows = [("input", tuple(input_shape), 0)]
    try:
        for i, layer in enumerate(layers):
            x = _layer_output(i, layer, x)
            rows.append(
                (f"{i}: {type(layer).__name__}", tuple(x.shape[1:]), count_parameters(layer))
            )
    finally:
        for module, training in modes:
            object.__setattr__(module, "training", training)
        model.release_forward()  # the probe's arrays: a backward after it would read them
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'layer':<{width}}{'output shape':<22}{'parameters':>12}"]
    lines += [f"{name:<{width}}{str(shape):<22}{n:>12,}" for name, shape, n in rows]
    lines.append(f"{'total':<{width}}{'':<22}{count_parameters(model):>12,}")
    return "\n".join(lines)

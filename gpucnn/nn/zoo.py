"""Models by name, each a JSON-able spec (layer names and arguments) plus a training recipe.

A spec rebuilds its model anywhere (checkpoints store it), so a checkpoint does not depend on the
zoo's current contents. ``tutorial-lines`` and ``tutorial-mnist`` are the tutorial's networks;
``fashion-net`` is a stronger two-convolution net (64 and 128 filters, batch norm, dropout) with
AdamW, a cosine schedule, label smoothing and horizontal flips over 50 epochs (flips cost accuracy
in 25 epochs and win in 50; benchmarks/RESULTS.md has the search).
"""

from __future__ import annotations

import copy
import reprlib
from dataclasses import dataclass

import numpy as np

from ..shapes import make_rng
from . import activation, container, conv, linear, norm, pooling
from .module import Module

LAYERS = {
    cls.__name__: cls
    for cls in (
        conv.Conv2d, linear.Linear, linear.Flatten, activation.ReLU, activation.Dropout,
        norm.BatchNorm2d, pooling.MaxPool2d, pooling.AvgPool2d, pooling.GlobalAvgPool2d,
    )
}  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """Training defaults for a model (each one can be overridden on the command line)."""

    dataset: str
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "none"  # "none" | "cosine" | "step"
    augment: str = "none"  # "none", or augmentations joined by "+": "shift", "flip", "shift+flip"
    label_smoothing: float = 0.0


def _conv_bn_relu_pool(cin: int, cout: int) -> list:
    return [
        ["Conv2d", {"in_channels": cin, "out_channels": cout, "kernel_size": 3, "padding": 1,
                    "bias": False}],
        ["BatchNorm2d", {"num_features": cout}],
        ["ReLU", {}],
        ["MaxPool2d", {"kernel_size": 2}],
    ]  # fmt: skip


MODELS: dict[str, tuple[dict, Recipe]] = {
    "tutorial-lines": (
        {
            "input_shape": [1, 8, 8],
            "num_classes": 2,
            "layers": [
                ["Conv2d", {"in_channels": 1, "out_channels": 4, "kernel_size": 3}],
                ["ReLU", {}],
                ["MaxPool2d", {"kernel_size": 2}],
                ["Flatten", {}],
                ["Linear", {"in_features": 36, "out_features": 2}],
            ],
        },
        Recipe("lines", epochs=5, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9),
    ),
    "tutorial-mnist": (
        {
            "input_shape": [1, 28, 28],
            "num_classes": 10,
            "layers": [
                ["Conv2d", {"in_channels": 1, "out_channels": 16, "kernel_size": 3}],
                ["ReLU", {}],
                ["MaxPool2d", {"kernel_size": 2}],
                ["Conv2d", {"in_channels": 16, "out_channels": 32, "kernel_size": 3}],
                ["ReLU", {}],
                ["MaxPool2d", {"kernel_size": 2}],
                ["Flatten", {}],
                ["Linear", {"in_features": 800, "out_features": 128}],
                ["ReLU", {}],
                ["Linear", {"in_features": 128, "out_features": 10}],
            ],
        },
        Recipe("fashion-mnist", epochs=15, batch_size=64, optimizer="adamw", lr=1e-3,
               weight_decay=0.05, schedule="cosine", label_smoothing=0.1),
    ),
    "fashion-net": (
        {
            "input_shape": [1, 28, 28],
            "num_classes": 10,
            "layers": [
                *_conv_bn_relu_pool(1, 64),
                *_conv_bn_relu_pool(64, 128),
                ["Flatten", {}],
                ["Dropout", {"p": 0.25}],
                ["Linear", {"in_features": 128 * 7 * 7, "out_features": 256}],
                ["ReLU", {}],
                ["Dropout", {"p": 0.5}],
                ["Linear", {"in_features": 256, "out_features": 10}],
            ],
        },
        Recipe("fashion-mnist", epochs=50, batch_size=128, optimizer="adamw", lr=1e-3,
               weight_decay=0.05, schedule="cosine", augment="flip", label_smoothing=0.1),
    ),
}  # fmt: skip


def model_names() -> list[str]:
    """The zoo's model names (``--model``), sorted."""
    return sorted(MODELS)


def _entry(name: str) -> tuple[dict, Recipe]:
    if not isinstance(name, str) or name not in MODELS:  # a list: not "unhashable type"
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")
    return MODELS[name]


def model_spec(name: str) -> dict:
    """The JSON-able spec of zoo model ``name``: name, input_shape, num_classes, layers."""
    return {"name": name, **copy.deepcopy(_entry(name)[0])}


def recipe(name: str) -> Recipe:
    """Training defaults of zoo model ``name``."""
    return _entry(name)[1]


def build_from_spec(
    spec: dict, rng: np.random.Generator | int | None = None
) -> container.Sequential:
    """A Sequential of the spec's layers; weights (and dropout seeds) drawn from ``rng``.

    A malformed spec is a TypeError or ValueError naming the layer entry at fault, where
    Python's words ("'NoneType' object is not subscriptable", "unhashable type") named none.
    """
    rng = make_rng(rng)
    entries = spec.get("layers") if isinstance(spec, dict) else None
    if not isinstance(entries, list | tuple):
        raise TypeError(f"a model spec is a dict with a 'layers' list, got {reprlib.repr(spec)}")
    layers: list[Module] = []
    for index, entry in enumerate(entries):
        where = f"model spec layer {index} ({reprlib.repr(entry)})"
        if not (isinstance(entry, list | tuple) and len(entry) == 2):
            raise TypeError(f"{where}: expected a [name, arguments] pair")
        kind, kwargs = entry
        if not isinstance(kind, str) or kind not in LAYERS:
            raise ValueError(f"{where}: unknown layer; known: {', '.join(LAYERS)}")
        if not isinstance(kwargs, dict):
            raise TypeError(f"{where}: its arguments must be a dict")
        kwargs = dict(kwargs)
        if kind in ("Conv2d", "Linear"):
            kwargs["rng"] = rng
        elif kind == "Dropout":
            kwargs["seed"] = int(rng.integers(2**62))
        try:
            layers.append(LAYERS[kind](**kwargs))
        except TypeError as err:
            raise TypeError(f"{where}: {err}") from err
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
    return container.Sequential(*layers)


def build_model(name: str, rng: np.random.Generator | int | None = None) -> container.Sequential:
    """Zoo model ``name`` with weights drawn from ``rng`` (a Generator or an int seed)."""
    return build_from_spec(model_spec(name), rng)

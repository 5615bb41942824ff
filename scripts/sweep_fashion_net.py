"""Train one variant of fashion-net (an architecture change plus recipe overrides) for a recipe search.

The zoo's fashion-net is what ``gpucnn train --model fashion-net`` trains; this script trains a
variant of it under the name ``fashion-net-ARCH`` without changing the zoo, so several candidates
can run side by side (one process each) and the winner can then become the zoo's recipe:

    python scripts/sweep_fashion_net.py --arch conv-dropout --epochs 50 --augment flip \\
        --device cuda --data-dir DIR --out runs/conv-dropout-flip50

Architectures: ``base`` (the zoo's net), ``conv-dropout`` (dropout 0.25 after each max pool
too, the last one included, so two dropouts of 0.25 then meet around the Flatten: about 0.44 there),
``k5`` (5x5 kernels). Unset recipe options come from fashion-net's recipe. ``--resume`` continues
a run in ``--out`` after an interruption, and ``--overwrite`` starts one over, as in ``gpucnn train``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

from gpucnn.cli import (
    add_data_dir_argument,
    add_device_argument,
    add_recipe_arguments,
    resume_hint,
    run_reporting_errors,
)
from gpucnn.nn import zoo
from gpucnn.train import TrainConfig, fit


def _with_conv_dropout(layers: list) -> list:
    out = []
    for kind, kwargs in layers:
        out.append([kind, kwargs])
        if kind == "MaxPool2d":
            out.append(["Dropout", {"p": 0.25}])
    return out


def _with_kernel(layers: list, size: int) -> list:
    return [
        [
            kind,
            {**kwargs, "kernel_size": size, "padding": size // 2} if kind == "Conv2d" else kwargs,
        ]
        for kind, kwargs in layers
    ]


ARCHS = {
    "base": lambda layers: layers,
    "conv-dropout": _with_conv_dropout,
    "k5": lambda layers: _with_kernel(layers, 5),
}


def register(arch: str) -> str:
    """Adds ``fashion-net-ARCH`` to the zoo (fashion-net's recipe) and returns its name."""
    spec, recipe = zoo.MODELS["fashion-net"]
    variant = copy.deepcopy(spec)
    variant["layers"] = ARCHS[arch](variant["layers"])
    name = f"fashion-net-{arch}"
    zoo.MODELS[name] = (variant, recipe)
    return name


def parse_args() -> dict:
    """The command line's options, by name."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="base")
    add_recipe_arguments(parser)
    add_device_argument(parser)
    add_data_dir_argument(parser)
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/model.npz")
    parser.add_argument("--overwrite", action="store_true", help="start over in an OUT with a run")
    return vars(parser.parse_args())


def main(args: dict) -> None:
    """Train the variant ``args`` names and print its result as one JSON line."""
    model = register(args.pop("arch"))
    config = TrainConfig(dataset="fashion-mnist", model=model, progress=False, **args)
    metrics = fit(config, log=lambda line: print(f"[{Path(args['out']).name}] {line}", flush=True))
    best = max(h["test_accuracy"] for h in metrics["history"])
    print(json.dumps({"out": args["out"], "test_accuracy": metrics["test_accuracy"], "best": best,
                      "train_seconds": round(metrics["train_seconds"], 1)}))  # fmt: skip


if __name__ == "__main__":
    args = parse_args()
    sys.exit(
        run_reporting_errors(
            "sweep_fashion_net.py", lambda: main(args), lambda: resume_hint(args["out"])
        )
    )

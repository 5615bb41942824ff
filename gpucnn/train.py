"""The training loop behind ``gpucnn train``: data, model, optimizer, progress, checkpoints.

``fit(TrainConfig(...))`` trains a zoo model on a dataset, evaluates on the test split after every
epoch, checkpoints to ``OUT/model.npz`` (so ``resume=True`` continues exactly where it stopped) and
writes ``OUT/metrics.json``, ``OUT/curves.png`` and ``OUT/filters.png``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import nn
from .atomic import atomic_write, check_writable_folder, interrupts_held
from .backend import get_backend
from .captured_step import CapturedStep
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data.datasets import Dataset, SubsetTooLargeError, dataset_info, load_dataset
from .data.loader import DataLoader
from .nn.summary import count_parameters
from .nn.zoo import build_from_spec, model_spec
from .plots import plot_curves, plot_filters
from .run_config import (
    TrainConfig,
    make_optimizer,
    make_scheduler,
    resolve,
    resume_config,
    stored_settings,
)

AUGMENTATIONS = ("shift", "flip")
# Test-set batches: fashion-net's 10000 test images took 7.0 s on 2 CPU cores in batches of 1000
# (its first layers' 100-200 MB outputs come from fresh, page-faulted memory each batch), 5.3 s
# in batches of 250 or 128; on a GPU either size is a few dozen launches.
EVAL_BATCH = 250
RUN_FILES = ("model.npz", "metrics.json", "curves.png", "filters.png")  # what a run writes to OUT


def fits(spec: dict, data: Dataset) -> bool:
    """Whether the model's input shape and class count are the dataset's."""
    return (tuple(spec["input_shape"]), spec["num_classes"]) == (data.input_shape, data.num_classes)


def check_compatible(spec: dict, data: Dataset, hint: str = "") -> None:
    """A clear error, ending with ``hint``, when the model's input shape or class count does
    not fit the dataset."""
    if not fits(spec, data):
        raise ValueError(
            f"model {spec['name']!r} takes inputs {tuple(spec['input_shape'])} with "
            f"{spec['num_classes']} classes, but dataset {data.name!r} has {data.input_shape} "
            f"with {data.num_classes}{hint}"
        )


class _NoBar:
    """Stands in for a tqdm bar when progress is off or tqdm is not installed."""

    def update(self, n: int) -> None: ...

    def set_postfix(self, **kwargs: Any) -> None: ...

    def close(self) -> None: ...


def _progress_bar(total: int, desc: str, enabled: bool):
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            return _NoBar()
        return tqdm(
            total=total, desc=desc, unit="sample", unit_scale=True, leave=False, disable=None
        )
    return _NoBar()


def _count(logits: Any, labels: Any, loss: Any, sums: list) -> None:
    """Add the batch's summed loss and correct predictions into ``sums`` (kept on the device)."""
    sums[0] = sums[0] + loss * len(labels)
    sums[1] = sums[1] + (logits.argmax(axis=1) == labels).sum()


def training_loss(label_smoothing: float) -> nn.CrossEntropyLoss:
    """The loss of a training step, without per-step device reads: the datasets' labels were
    checked when loaded, and :func:`train_epoch` checks the loss each time it reads it back."""
    return nn.CrossEntropyLoss(label_smoothing, check_finite=False, check_labels=False)


def _require_samples(seen: int, loader: DataLoader) -> None:
    """A ValueError when a pass over ``loader`` gave no samples (no mean of nothing)."""
    if seen == 0:
        raise ValueError(
            f"the data loader gave no samples ({len(loader.labels)} in it, batch size "
            f"{loader.batch_size}, drop_last={loader.drop_last}): need at least one full batch"
        )


def _mean_loss(total: Any, seen: int, step: int) -> float:
    """The running mean loss, or a ValueError once it is NaN or infinite."""
    loss = float(total) / seen
    if not np.isfinite(loss):
        raise ValueError(
            f"the training loss became {loss} by step {step} of this epoch (try a lower learning "
            "rate); the checkpoint of the last finished epoch is intact"
        )
    return loss


def train_step(model, loss_fn, optimizer) -> Callable[[Any, Any], tuple[Any, Any]]:
    """The update of one batch, ``step(x, labels) -> (logits, loss)``, all on the model's device:
    forward, loss, backward (no input gradient) and the optimizer's step."""

    def step(x, labels):
        logits = model(x)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        optimizer.step()
        return logits, loss

    return step


def train_epoch(model, loss_fn, optimizer, loader: DataLoader, bar, step=None):
    """One pass over ``loader`` with an update per batch; returns (mean loss, accuracy).

    ``step`` runs an update (default :func:`train_step`; a ``CapturedStep`` of it replays a CUDA
    graph). A diverging run is reported once, by :func:`_mean_loss`, not by NumPy's overflow
    warnings.
    """
    model.train()
    step = step or train_step(model, loss_fn, optimizer)
    sums, seen, index = [0.0, 0], 0, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for index, (x, y) in enumerate(loader, 1):
            logits, loss = step(x, y)
            _count(logits, y, loss, sums)
            seen += len(y)
            bar.update(len(y))
            if index % 20 == 0:  # reading the sums back synchronises a GPU: not every step
                mean = _mean_loss(sums[0], seen, index)
                bar.set_postfix(loss=f"{mean:.4f}", acc=f"{int(sums[1]) / seen:.4f}")
    _require_samples(seen, loader)
    return _mean_loss(sums[0], seen, index), int(sums[1]) / seen


def evaluate(model, loader: DataLoader) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` in eval mode over ``loader``. Weights that diverged
    are reported once, by the loss's check of its values, not by NumPy's overflow warnings."""
    if not isinstance(model, nn.Module):  # None was "has no attribute 'training'"
        raise TypeError(f"evaluate: model must be a gpucnn Module, got {type(model).__name__}")
    loss_fn = nn.CrossEntropyLoss().eval()  # the loss alone, no gradient
    was_training = model.training
    model.eval()
    sums, seen = [0.0, 0], 0
    try:
        # inference(): no backward, so each layer's arrays go as soon as it is done
        with model.inference(), np.errstate(over="ignore", invalid="ignore"):
            for x, y in loader:
                logits = model(x)
                _count(logits, y, loss_fn(logits, y), sums)
                seen += len(y)
    finally:  # an error (or Ctrl-C) leaves the model in the mode it came in
        model.train(was_training)
    _require_samples(seen, loader)
    return float(sums[0]) / seen, int(sums[1]) / seen


def augmentations(requested: str, data: Dataset) -> dict:
    """The loader's ``shift``/``flip`` for ``requested`` ("none" or names joined by "+").

    Only augmentations that keep the dataset's labels valid are accepted (no flips of digits).
    """
    names = [] if requested == "none" else requested.split("+")
    allowed = [name for name in AUGMENTATIONS if data.augment.get(name)]
    refused = [name for name in names if name not in allowed]
    if refused:
        raise ValueError(
            f"augmentation {'+'.join(refused)!r} is not available for dataset {data.name!r}; "
            f"it allows: {', '.join(['none', *allowed])} (--augment; the model's recipe may set it)"
        )
    return {"shift": data.augment["shift"] if "shift" in names else 0, "flip": "flip" in names}


def _loaders(cfg: TrainConfig, data: Dataset, device, rng, mean: float, std: float):
    common = {"device": device, "mean": mean, "std": std}
    train = DataLoader(
        data.train_x,
        data.train_y,
        cfg.batch_size,
        shuffle=True,
        rng=rng,
        **augmentations(cfg.augment, data),
        **common,
    )
    return train, DataLoader(data.test_x, data.test_y, EVAL_BATCH, **common)


def _meta(cfg: TrainConfig, data: Dataset, norm: tuple[float, float], history: list) -> dict:
    return {
        "config": stored_settings(cfg),
        "dataset": data.name,
        "classes": list(data.classes),
        "mean": norm[0],
        "std": norm[1],
        "input_range": 255.0 if data.train_x.dtype == np.uint8 else 1.0,
        "history": history,
    }


def refuse_existing_run(out: Path, overwrite: bool) -> None:
    """A new (not resumed) run into ``out`` is refused while an earlier run's checkpoint is
    there, unless ``overwrite`` (then :func:`remove_previous_run` clears it once the new run's
    settings, data and model have all been checked)."""
    checkpoint = out / "model.npz"
    if checkpoint.is_file() and not overwrite:
        raise FileExistsError(
            f"{out} already holds a training run ({checkpoint}): continue it with --resume, "
            "start it over with --overwrite, or choose another --out"
        )


def remove_previous_run(out: Path) -> None:
    """Remove an earlier run's outputs from ``out``, so that neither ``--resume`` nor the Ctrl-C
    hint takes its checkpoint for the new run's, nor its pictures go with the new checkpoint."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


def fit(
    config: TrainConfig,
    callback: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train as ``config`` says; returns the metrics also written to ``OUT/metrics.json``
    (rewritten with each epoch's checkpoint, so an interrupted run's describes its checkpoint).

    ``callback(epoch, record)`` runs after each epoch's checkpoint and metrics.json are written.
    """
    start_time = time.perf_counter()
    if callback is not None and not callable(callback):  # now, not after the first epoch
        raise TypeError(f"callback must be a function (epoch, record), got {callback!r}")
    cfg, ckpt = resolve(config), None  # first: it checks that resume and overwrite are bools
    if config.resume and config.overwrite:
        raise ValueError(
            "--resume continues the run in --out, --overwrite starts it over: not both"
        )
    if config.resume:
        cfg, ckpt = resume_config(config, Path(cfg.out) / "model.npz")
    if config.momentum is not None and cfg.optimizer != "sgd":  # given, but it would do nothing
        raise ValueError(f"--momentum is SGD's; optimizer {cfg.optimizer!r} has none")
    out = Path(cfg.out)
    check_writable_folder(out, "--out")  # before any data is loaded or epoch trained
    if not config.resume:
        refuse_existing_run(out, config.overwrite)
    backend = get_backend(cfg.device)
    # Made now, so that the cpu device (which has no graphs) is refused before the data is loaded.
    session = backend.graph_session() if cfg.cuda_graph else None
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.seed, cfg.train_size, cfg.test_size)
    log(
        f"{data.name}: {len(data.train_y)} training, {len(data.test_y)} test images ({data.source})"
    )
    spec = ckpt.spec if ckpt else model_spec(cfg.model)
    default = model_spec(dataset_info(data.name).default_model)
    suggest = not ckpt and default["name"] != spec["name"] and fits(default, data)
    check_compatible(spec, data, f"; try --model {default['name']}" if suggest else "")
    model = ckpt.build_model(backend) if ckpt else build_from_spec(spec, [cfg.seed, 2]).to(backend)
    optimizer = make_optimizer(cfg, model.parameters())
    scheduler = make_scheduler(cfg, optimizer)
    rng = np.random.default_rng([cfg.seed, 3])
    history: list[dict] = []
    if ckpt:
        try:
            optimizer.load_state_dict(ckpt.optimizer_state)
            if scheduler is not None:
                scheduler.load_state_dict(ckpt.scheduler_state)
            rng.bit_generator.state = ckpt.rng_state
            history = ckpt.meta["history"]
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(
                f"{ckpt.path}: its training state cannot be resumed ({err!r})"
            ) from err
        log(f"resuming {ckpt.path} after epoch {ckpt.epoch} of {cfg.epochs}")
    norm = (ckpt.meta["mean"], ckpt.meta["std"]) if ckpt else (data.mean, data.std)
    train_loader, test_loader = _loaders(cfg, data, backend, rng, *norm)
    loss_fn = training_loss(cfg.label_smoothing)
    step = train_step(model, loss_fn, optimizer)
    if session is not None:
        step = CapturedStep(step, session=session)
    if config.overwrite:
        remove_previous_run(out)
    metrics = None
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        bar = _progress_bar(train_loader.num_samples, f"epoch {epoch}/{cfg.epochs}", cfg.progress)
        try:
            train_loss, train_acc = train_epoch(model, loss_fn, optimizer, train_loader, bar, step)
        finally:  # also on Ctrl-C or an error: their one line must not land on the bar's line
            bar.close()
        seconds = time.perf_counter() - t0
        test_loss, test_acc = evaluate(model, test_loader)
        record = {
            "epoch": epoch,
            "lr": optimizer.lr,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "seconds": seconds,
            "samples_per_s": train_loader.num_samples / seconds,
        }
        if scheduler is not None:
            scheduler.step()
        history.append(record)
        log(
            f"epoch {epoch}/{cfg.epochs}  loss {train_loss:.4f}  train acc {train_acc:.4f}  "
            f"test acc {test_acc:.4f}  ({seconds:.1f} s, {record['samples_per_s']:,.0f} samples/s)"
        )
        with interrupts_held():  # so that after Ctrl-C the two describe the same epochs
            save_checkpoint(
                out / "model.npz",
                model,
                spec,
                optimizer=optimizer,
                scheduler=scheduler,
                epoch=epoch,
                rng=rng,
                meta=_meta(cfg, data, norm, history),
            )
            metrics = _write_metrics(cfg, model, backend.name, history, out, start_time)
        if callback is not None:
            callback(epoch, record)
    if metrics is None:  # resumed with every epoch done: nothing trained, metrics.json rewritten
        metrics = _write_metrics(cfg, model, backend.name, history, out, start_time)
    _draw(model, history, out)
    return metrics


def _write_metrics(
    cfg: TrainConfig, model, device: str, history: list, out: Path, start_time: float
) -> dict:
    """Write metrics.json (atomically) for the epochs in ``history``; returns the metrics.

    ``train_seconds`` sums every epoch's training pass (evaluation not included), those of the
    sessions before a resume too; ``wall_seconds`` is this session's, from ``start_time`` (when
    :func:`fit` started) until now, its latest checkpoint, so after a resume it can be the smaller.
    """
    metrics = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "device": device,
        "epochs": cfg.epochs,
        "test_accuracy": history[-1]["test_accuracy"],
        "test_loss": history[-1]["test_loss"],
        "train_seconds": sum(h["seconds"] for h in history),
        "wall_seconds": time.perf_counter() - start_time,
        "parameters": count_parameters(model),
        "config": dataclasses.asdict(cfg),
        "history": history,
    }
    text = json.dumps(metrics, indent=2).encode()
    atomic_write(out / "metrics.json", lambda f: f.write(text))
    return metrics


def _draw(model, history: list, out: Path) -> None:
    """curves.png and the first convolution's filters.png, if matplotlib is installed."""
    convs = [m for _, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        plot_curves(history, out / "curves.png")
        if convs:
            plot_filters(model.backend.to_numpy(convs[0].weight.data), out / "filters.png")
    except ImportError as err:  # matplotlib is optional (extra "cli")
        print(f"gpucnn: no pictures: {err}", file=sys.stderr)


def evaluate_checkpoint(
    path: str, dataset: str | None = None, data_dir: str | None = None, device: str = "cpu"
) -> tuple[float, float, Dataset]:
    """(test loss, test accuracy, dataset) of a checkpoint, normalised as in its training run."""
    ckpt = load_checkpoint(path)
    cfg = ckpt.meta.get("config", {})
    name = dataset or ckpt.meta.get("dataset") or "lines"
    same = name == ckpt.meta.get("dataset")
    try:
        data = load_dataset(
            name,
            data_dir,
            cfg.get("seed", 0) if same else 0,
            test_size=cfg.get("test_size") if same else None,
        )
    except SubsetTooLargeError as error:  # eval has no --test-size: the size is the run's
        raise ValueError(
            f"{path} was tested on the first {error.size} test images (its run's --test-size), "
            f"but {error.path} has only {error.available}"
        ) from None
    trained_on = ckpt.meta.get("dataset")
    check_compatible(ckpt.spec, data, f"; it was trained on {trained_on}" if trained_on else "")
    model = ckpt.build_model(device)
    mean, std = (
        (ckpt.meta["mean"], ckpt.meta["std"]) if "mean" in ckpt.meta else (data.mean, data.std)
    )
    loader = DataLoader(data.test_x, data.test_y, EVAL_BATCH, device=device, mean=mean, std=std)
    return (*evaluate(model, loader), data)

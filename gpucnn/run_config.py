"""What to train and how: :class:`TrainConfig`, filled from the model's recipe and checked, the
optimizer and schedule it names, and the configuration a resumed run goes on with."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import functional as F
from . import optim
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .data.datasets import dataset_info
from .nn.zoo import recipe
from .shapes import check_non_negative, file_path, integer

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine", "step")
AUGMENT_CHOICES = ("none", "shift", "flip", "shift+flip")
# Settings that a resumed run takes from the command line rather than from the checkpoint
# (epochs too, when given).
_RUN_FIELDS = ("device", "out", "resume", "overwrite", "data_dir", "progress", "cuda_graph")


@dataclasses.dataclass
class TrainConfig:
    """What to train and how; ``None`` fields take the model's recipe (see ``gpucnn.nn.zoo``)."""

    dataset: str | None = None
    model: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    augment: str | None = None
    label_smoothing: float | None = None
    device: str = "cpu"
    seed: int | None = None  # 0 when unset
    out: str | None = None
    resume: bool = False
    overwrite: bool = False  # start over in an ``out`` that holds a run's checkpoint
    data_dir: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    progress: bool = True
    cuda_graph: bool = False


def resolve(config: TrainConfig) -> TrainConfig:
    """Fill unset fields: dataset and model from each other, the rest from the model's recipe."""
    if not isinstance(config, TrainConfig):  # a dict or None would fail on an attribute
        raise TypeError(f"expected a TrainConfig, got {type(config).__name__}")
    for name in ("out", "data_dir"):  # out=0 was taken as unset, 5 was pathlib's TypeError
        value = getattr(config, name)
        if value is not None:
            file_path(value, _option(name))
    dataset, model = config.dataset, config.model
    if model is None:
        dataset = dataset or "lines"
        model = dataset_info(dataset).default_model
    defaults = dataclasses.asdict(recipe(model))
    filled = {k: defaults[k] for k in defaults if getattr(config, k) is None}
    cfg = dataclasses.replace(config, model=model, **filled)
    cfg.dataset = dataset or defaults["dataset"]
    cfg.out = cfg.out or f"runs/{cfg.dataset}-{cfg.model}"
    cfg.seed = 0 if cfg.seed is None else cfg.seed
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
        )
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if cfg.augment not in AUGMENT_CHOICES:
        raise ValueError(
            f"unknown augmentation {cfg.augment!r}; choose one of {', '.join(AUGMENT_CHOICES)}"
        )
    for name in ("resume", "overwrite", "progress", "cuda_graph"):  # resume="no" would resume
        option = "progress (--no-progress)" if name == "progress" else _option(name)
        F.check_flag(getattr(cfg, name), option)
    _check_numbers(cfg)
    return cfg


def _option(field: str) -> str:
    """The command-line option that sets :class:`TrainConfig` field ``field``."""
    return f"--{field.replace('_', '-')}"


def _check_numbers(cfg: TrainConfig) -> None:
    """Refuse numbers out of range now, naming their options, rather than once the data is
    loaded (the optimizer's and the loss's own checks name their Python arguments)."""
    check_non_negative(
        **{_option(name): getattr(cfg, name) for name in ("lr", "momentum", "weight_decay")}
    )
    F.check_label_smoothing(cfg.label_smoothing, _option("label_smoothing"))
    for name, least in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
        if integer(getattr(cfg, name), _option(name)) < least:  # 2.5 epochs or True are no count
            raise ValueError(f"{_option(name)} must be >= {least}, got {getattr(cfg, name)}")


def make_optimizer(cfg: TrainConfig, params: list) -> optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` (SGD uses Nesterov momentum when momentum > 0)."""
    if cfg.optimizer == "sgd":
        return optim.SGD(
            params,
            cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    kind = optim.Adam if cfg.optimizer == "adam" else optim.AdamW
    return kind(params, cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, optimizer: optim.Optimizer) -> optim.LRScheduler | None:
    """Cosine annealing over all epochs, a step decay (x0.1 every third of them), or none."""
    if cfg.schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return optim.StepLR(optimizer, step_size=max(1, cfg.epochs // 3))
    return None


def resume_config(config: TrainConfig, path: Path) -> tuple[TrainConfig, Checkpoint]:
    """The stored run's configuration, with this run's device, folders and switches (and more
    epochs, if asked), and its checkpoint."""
    ckpt = load_checkpoint(path)
    stored = ckpt.meta.get("config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: has no training configuration to resume from")
    stored_config = TrainConfig(**stored)
    _check_resumable(config, stored_config, ckpt.epoch)
    run = {k: getattr(config, k) for k in _RUN_FIELDS}
    cfg = dataclasses.replace(stored_config, **run)
    cfg.epochs = config.epochs or cfg.epochs
    return resolve(cfg), ckpt


def _check_resumable(config: TrainConfig, stored: TrainConfig, epochs_done: int) -> None:
    """A resumed run goes on with the stored recipe: an option given now that would change it
    (other than more epochs) is refused, rather than silently ignored."""
    default = TrainConfig()
    changed = [
        f"{_option(field.name)} {getattr(config, field.name)} "
        f"(the run's: {getattr(stored, field.name)})"
        for field in dataclasses.fields(TrainConfig)
        if field.name not in (*_RUN_FIELDS, "epochs")
        and getattr(config, field.name) != getattr(default, field.name)
        and getattr(config, field.name) != getattr(stored, field.name)
    ]
    if changed:
        raise ValueError(
            f"--resume goes on with the run's own settings, but these differ: {', '.join(changed)}; "
            "drop them, or start a new run with another --out"
        )
    if config.epochs is not None and config.epochs < epochs_done:
        raise ValueError(
            f"--resume --epochs {config.epochs}: the run has already done {epochs_done} epochs"
        )


def stored_settings(cfg: TrainConfig) -> dict:
    """What a checkpoint keeps of ``cfg``: every setting but the run's own (device, folders,
    switches), which a resumed run takes from its command line."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RUN_FIELDS}

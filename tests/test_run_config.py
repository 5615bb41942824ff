"""The training configuration: the recipe filled in and checked, the optimizer and the
learning-rate schedule that a configuration names, and the configuration a resumed run goes on
with."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

import gpucnn.train
from gpucnn import optim
from gpucnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gpucnn.nn.module import Parameter
from gpucnn.nn.zoo import build_model, model_spec
from gpucnn.run_config import (
    TrainConfig,
    make_optimizer,
    make_scheduler,
    resolve,
    resume_config,
)
from gpucnn.train import fit


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The checkpoint of a finished two-epoch lines run."""
    out = tmp_path_factory.mktemp("run")
    fit(
        TrainConfig(epochs=2, lr=0.05, train_size=64, test_size=32, out=str(out), progress=False),
        log=lambda line: None,
    )
    return out / "model.npz"


@pytest.mark.parametrize(
    "name, momentum, by_hand",
    [
        ("sgd", 0.9, lambda p, wd: optim.SGD(p, 0.1, momentum=0.9, nesterov=True, weight_decay=wd)),
        ("sgd", 0.0, lambda p, wd: optim.SGD(p, 0.1, weight_decay=wd)),
        ("adam", 0.0, lambda p, wd: optim.Adam(p, 0.1, weight_decay=wd)),
        ("adamw", 0.0, lambda p, wd: optim.AdamW(p, 0.1, weight_decay=wd)),
    ],
)
def test_the_optimizer_a_configuration_names(name, momentum, by_hand):
    """SGD with momentum is Nesterov's (as the recipe says), without it plain; adam and adamw
    (whose weight decays differ) are not swapped: a few steps on the same gradients move the
    weights exactly as the optimizer built by hand does."""
    rng = np.random.default_rng()
    start, grads = rng.standard_normal((3, 4)), rng.standard_normal((3, 3, 4))
    weight_decay = float(rng.uniform(0.1, 0.5))
    cfg = resolve(TrainConfig(optimizer=name, lr=0.1, momentum=momentum, weight_decay=weight_decay))
    moved = []
    for make in (lambda p: make_optimizer(cfg, p), lambda p: by_hand(p, weight_decay)):
        param = Parameter(start.copy())
        opt = make([param])
        for g in grads:
            param.grad = g.copy()
            opt.step()
        moved.append(param.data)
    np.testing.assert_array_equal(*moved)


@pytest.mark.parametrize("epochs", [1, 2, 5, 9])
def test_the_schedules_span_the_runs_epochs(epochs):
    """cosine anneals to 0 over all the epochs; step multiplies by 0.1 every third of them
    (every epoch, for fewer than three); none keeps the rate."""
    lr = float(np.random.default_rng().uniform(0.01, 1.0))
    expected = {
        "cosine": lambda e: lr * (1 + math.cos(math.pi * e / epochs)) / 2,
        "step": lambda e: lr * 0.1 ** (e // max(1, epochs // 3)),
    }
    for schedule, want in expected.items():
        cfg = resolve(TrainConfig(schedule=schedule, lr=lr, epochs=epochs))
        opt = make_optimizer(cfg, [Parameter(np.zeros(2))])
        scheduler = make_scheduler(cfg, opt)
        rates = [opt.lr]
        for _ in range(epochs):
            scheduler.step()
            rates.append(opt.lr)
        np.testing.assert_allclose(rates, [want(e) for e in range(epochs + 1)], atol=1e-15)
    cfg = resolve(TrainConfig(schedule="none", epochs=epochs))
    assert make_scheduler(cfg, make_optimizer(cfg, [Parameter(np.zeros(2))])) is None


def test_fit_trains_each_epoch_at_its_scheduled_rate(tmp_path):
    """fit steps the schedule once an epoch: each epoch's record holds the rate it trained at,
    cosine's over the run's three epochs (a schedule never stepped would keep the first)."""
    lr = 0.05
    config = TrainConfig(
        epochs=3, lr=lr, schedule="cosine", train_size=64, test_size=32, out=str(tmp_path),
        progress=False,
    )  # fmt: skip
    history = fit(config, log=lambda line: None)["history"]
    want = [lr * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    np.testing.assert_allclose([record["lr"] for record in history], want, rtol=1e-12)


def test_each_records_numbers_come_from_their_own_pass(tmp_path, monkeypatch):
    """An epoch's train_loss and train_accuracy are the training pass's, its test_loss and
    test_accuracy the evaluation's, each under its own name: in the record the callback gets,
    in the history and in metrics.json's summary."""
    rng = np.random.default_rng()
    train, test = (tuple(float(v) for v in rng.random(2)) for _ in range(2))
    monkeypatch.setattr(gpucnn.train, "train_epoch", lambda *args: train)
    monkeypatch.setattr(gpucnn.train, "evaluate", lambda model, loader: test)
    records = []
    config = TrainConfig(epochs=2, train_size=16, test_size=8, out=str(tmp_path), progress=False)
    metrics = fit(config, callback=lambda epoch, record: records.append(record), log=lambda s: None)
    assert len(records) == 2 and metrics["history"] == records
    for record in records:
        assert (record["train_loss"], record["train_accuracy"]) == train
        assert (record["test_loss"], record["test_accuracy"]) == test
    assert (metrics["test_loss"], metrics["test_accuracy"]) == test


def test_the_seed_sets_the_models_first_weights_and_the_shuffling(tmp_path):
    """--seed seeds the model's initial weights and the shuffling, not only the data: with a
    learning rate of 0 (no update moves them) two seeds leave two different models, and
    their shuffling generators in two different states."""
    seeds = np.random.default_rng().choice(2**31, 2, replace=False)
    weights, shuffling = [], []
    for seed in seeds:
        out = tmp_path / str(seed)
        config = TrainConfig(
            epochs=1, lr=0.0, seed=int(seed), train_size=16, test_size=8, out=str(out),
            progress=False,
        )  # fmt: skip
        fit(config, log=lambda s: None)
        checkpoint = load_checkpoint(out / "model.npz")
        weights.append(checkpoint.model_state)
        shuffling.append(checkpoint.rng_state)
    assert weights[0].keys() == weights[1].keys()
    assert any(not np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert shuffling[0] != shuffling[1]


@pytest.mark.parametrize(
    "field, value",
    [("optimizer", "rmsprop"), ("schedule", "linear"), ("augment", "rotate")],
)
def test_unknown_choices_are_refused_with_the_choices(field, value):
    """The library's own check (the command line's choices do not guard a TrainConfig)."""
    with pytest.raises(ValueError, match=rf"unknown \w+ '{value}'; choose one of \w+, "):
        resolve(TrainConfig(**{field: value}))


@pytest.mark.parametrize(
    "field, value", [("epochs", 2.5), ("epochs", True), ("batch_size", 8.0), ("seed", 1.5)]
)
def test_counts_that_are_not_whole_numbers_are_refused_by_option(field, value):
    """A TrainConfig built in Python is not parsed by argparse: 2.5 epochs is a TypeError naming
    --epochs (not Python's "'float' object cannot be interpreted as an integer" from range(), once
    the data is loaded), and True is no count of 1."""
    option = "--" + field.replace("_", "-")
    with pytest.raises(TypeError, match=f"{option} must be an int, got {value!r}"):
        resolve(TrainConfig(**{field: value}))


@pytest.mark.parametrize(
    "field, value", [("resume", "no"), ("overwrite", 1), ("progress", "false"), ("cuda_graph", 0)]
)
def test_switches_that_are_not_bools_are_refused_by_option(tmp_path, field, value):
    """resume="no" is true: it resumed (or failed on a missing checkpoint) instead of a new run."""
    option = (
        "--" + field.replace("_", "-") if field != "progress" else r"progress \(--no-progress\)"
    )
    with pytest.raises(TypeError, match=f"{option} must be True or False, got {value!r}"):
        fit(TrainConfig(**{field: value}, out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field, value", [("out", 0), ("out", 5), ("data_dir", ["data"])])
def test_folders_that_are_not_paths_are_refused_by_option(field, value):
    """out=0 was taken as unset (the default folder written), out=5 was pathlib's words."""
    option = "--" + field.replace("_", "-")
    with pytest.raises(
        TypeError, match=re.escape(f"{option} must be a path (str or os.PathLike), got {value!r}")
    ):
        resolve(TrainConfig(**{field: value}))


def test_fit_refuses_what_is_not_a_config_or_a_callback_before_training(tmp_path):
    """A dict was an AttributeError on .resume; a callback of 5 failed after the first epoch."""
    with pytest.raises(TypeError, match="expected a TrainConfig, got dict"):
        fit({"epochs": 1})
    with pytest.raises(TypeError, match="callback must be a function .*got 5"):
        fit(TrainConfig(out=str(tmp_path / "run")), callback=5)
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_takes_its_device_folders_and_switches_from_the_command_line(
    finished_run, tmp_path
):
    """The device, --out, --data-dir (the run or its data may have moved), progress and
    --cuda-graph are this command's, whatever the stored run had; the recipe is the run's;
    --epochs may ask for as many epochs as were done (nothing left to train) or more."""
    data_dir = str(tmp_path / "data")
    config = TrainConfig(
        device="cuda-emu", out=str(tmp_path), resume=True, data_dir=data_dir, cuda_graph=True
    )
    for epochs, want in ((None, 2), (2, 2), (5, 5)):
        cfg, ckpt = resume_config(dataclasses.replace(config, epochs=epochs), finished_run)
        assert (cfg.device, cfg.out, cfg.data_dir) == ("cuda-emu", str(tmp_path), data_dir)
        assert (cfg.progress, cfg.cuda_graph, cfg.resume) == (True, True, True)
        assert (cfg.epochs, cfg.lr, cfg.train_size, cfg.test_size) == (want, 0.05, 64, 32)
        assert ckpt.epoch == 2


def test_a_checkpoint_keeps_the_recipe_not_the_runs_own_settings(finished_run):
    """The configuration stored with a checkpoint is the recipe alone: the device, folders and
    switches are each command's own (a --resume takes them from its command line)."""
    stored = load_checkpoint(finished_run).meta["config"]
    run_fields = {"device", "out", "resume", "overwrite", "data_dir", "progress", "cuda_graph"}
    assert set(stored) == {field.name for field in dataclasses.fields(TrainConfig)} - run_fields
    assert (stored["epochs"], stored["lr"], stored["train_size"]) == (2, 0.05, 64)


@pytest.mark.parametrize("meta", [{}, {"config": "sgd"}, {"config": None}])
def test_resuming_a_checkpoint_without_a_training_configuration_names_it(tmp_path, meta):
    """A checkpoint saved by a script (no configuration stored, or not a mapping) cannot say
    how to go on training: the error names the file."""
    path = tmp_path / "model.npz"
    save_checkpoint(path, build_model("tutorial-lines"), model_spec("tutorial-lines"), meta=meta)
    with pytest.raises(CheckpointError, match="has no training configuration to resume from"):
        resume_config(TrainConfig(resume=True, out=str(tmp_path)), path)

"""Checkpoints: round trip, atomic writes, corrupt files, exact resume, PyTorch state dicts."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from conftest import write_fake_idx_dataset

from gpucnn import checkpoint as ck
from gpucnn import nn, optim
from gpucnn.atomic import atomic_write, interrupts_held
from gpucnn.data.datasets import load_dataset
from gpucnn.data.loader import DataLoader
from gpucnn.nn.zoo import build_from_spec, build_model, model_spec
from gpucnn.train import TrainConfig, evaluate, evaluate_checkpoint, fit


def _trained(name="tutorial-lines", steps=2, seed=0):
    """A zoo model, an Adam optimizer and a cosine schedule after a few updates on random data."""
    model = build_model(name, rng=seed)
    spec = model_spec(name)
    opt = optim.Adam(model.parameters(), lr=0.01)
    sched = optim.CosineAnnealingLR(opt, T_max=5)
    rng = np.random.default_rng(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        x = rng.standard_normal((4, *spec["input_shape"])).astype(np.float32)
        y = rng.integers(0, spec["num_classes"], 4)
        loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        sched.step()
    return model, spec, opt, sched, rng


def _save(path, name="tutorial-lines", **kwargs):
    model, spec, opt, sched, rng = _trained(name, **kwargs)
    ck.save_checkpoint(
        path, model, spec, optimizer=opt, scheduler=sched, epoch=3, rng=rng, meta={"note": "x"}
    )
    return model, spec, opt, sched, rng


def _assert_same_state(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name", ["tutorial-lines", "fashion-net"])
def test_round_trip(tmp_path, name):
    model, spec, opt, sched, rng = _save(tmp_path / "m.npz", name)
    loaded = ck.load_checkpoint(tmp_path / "m.npz")
    assert loaded.spec == spec and loaded.epoch == 3 and loaded.meta == {"note": "x"}
    assert loaded.rng_state == rng.bit_generator.state
    _assert_same_state(loaded.model_state, model.state_dict())
    _assert_same_state(loaded.optimizer_state, opt.state_dict())
    _assert_same_state(loaded.scheduler_state, sched.state_dict())
    rebuilt = loaded.build_model("cpu")
    _assert_same_state(rebuilt.state_dict(), model.state_dict())
    assert rebuilt.random_state() == model.random_state()
    opt2 = optim.Adam(rebuilt.parameters(), lr=0.5)
    opt2.load_state_dict(loaded.optimizer_state)
    _assert_same_state(opt2.state_dict(), opt.state_dict())


def test_atomic_write_keeps_the_old_checkpoint_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    model, *_ = _save(path)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(ck.np, "savez", crash)
    other, spec, *_ = _trained(seed=1)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(path, other, spec)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary file left behind
    _assert_same_state(ck.load_checkpoint(path).model_state, model.state_dict())


def test_atomic_write_into_a_folder_that_cannot_be_made_leaves_no_new_folder(tmp_path):
    """The folders made for the file are removed again when a deeper one cannot be made (a
    name past 255 bytes): their removal went no further than the folder never made."""
    path = tmp_path / "a" / "b" / ("x" * 300) / "m.npz"
    with pytest.raises(OSError, match="File name too long"):
        atomic_write(path, lambda f: f.write(b"data"))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_syncs_the_data_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    """Power lost just after the rename must find the new file whole: the temporary file goes
    to disk with all its bytes (flushed from Python's buffer, then fsynced) before it replaces
    the target, and the folder is fsynced after, which makes the rename itself durable."""
    data = np.random.default_rng().bytes(1000)  # less than Python's buffer: flush matters
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        info = os.fstat(fd)
        events.append("fsync folder" if stat.S_ISDIR(info.st_mode) else info.st_size)
        real_fsync(fd)

    def replace(source, target):
        events.append("rename")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "file"
    path.write_bytes(b"old")
    beside = []

    def write(f):
        f.write(data)
        beside.extend(p.name for p in tmp_path.iterdir() if p != path)

    assert atomic_write(path, write) == path
    assert events == [len(data), "rename", "fsync folder"]
    # written beside the target: a rename from another file system (/tmp's) would fail
    assert len(beside) == 1 and beside[0].startswith(".file.") and beside[0].endswith(".tmp")
    assert path.read_bytes() == data


def test_atomic_write_survives_a_killed_process(tmp_path):
    path = tmp_path / "m.npz"
    _save(path)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os
        from gpucnn.atomic import atomic_write
        def write(f):
            f.write(b"x" * 100000)
            f.flush()
            os._exit(9)  # the process dies mid-write, before the rename
        atomic_write({str(path)!r}, write)
    """)
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == 9
    assert path.read_bytes() == before
    ck.load_checkpoint(path)


def test_interrupts_held_deliver_ctrl_c_and_sigterm_once_the_block_is_done():
    """A Ctrl-C or SIGTERM within the block does not stop it; each reaches the handler of
    before, once, in the order they came, as the block ends; the handlers are put back."""
    got = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append("SIGTERM"))
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_held():
                for s in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
                    signal.raise_signal(s)
                got.append("block done")
        assert got == ["block done", "SIGTERM"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the test's own, back
        with interrupts_held():  # nothing held: nothing delivered
            got.append("quiet")
        assert got[-1] == "quiet"
        with pytest.raises(KeyboardInterrupt) as info:  # an error ends the block: still delivered
            with interrupts_held():
                signal.raise_signal(signal.SIGINT)
                raise OSError(28, "No space left on device")
        assert isinstance(info.value.__context__, OSError)
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_a_checkpoint_gets_the_permissions_of_an_ordinary_file(tmp_path, umask, mask):
    # A temporary file is made 0600; renamed as it is, a shared runs folder's checkpoint would be
    # unreadable to the other users the umask lets read it.
    umask(mask)
    path = tmp_path / "m.npz"
    _save(path)
    (tmp_path / "plain").write_bytes(b"")
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o666 & ~mask == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def _first_directory_entry(offset, value):
    """A damage: ``value`` (little-endian) over the zip's first central directory entry at
    ``offset``, where zipfile refuses with errors other than BadZipFile."""

    def damage(b):
        at = b.index(b"PK\x01\x02") + offset
        return b[:at] + value.to_bytes(2, "little") + b[at + 2 :]

    return damage


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "corrupt or truncated"),
        (lambda b: b"not a zip file at all", "not an .npz file"),
        (lambda b: b"", "not an .npz file"),
        (lambda b: b[:300] + bytes([b[300] ^ 0xFF]) + b[301:], "corrupt or truncated"),
        # zipfile: "That compression method is not supported" (NotImplementedError)
        (_first_directory_entry(10, 99), "corrupt or truncated"),
        # zipfile: "File ... is encrypted, password required for extraction" (RuntimeError)
        (_first_directory_entry(8, 1), "corrupt or truncated"),
    ],
)
def test_corrupt_checkpoint_is_refused(tmp_path, damage, message):
    path = tmp_path / "m.npz"
    _save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ck.CheckpointError, match=message) as info:
        ck.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_recursion_error_while_reading_is_not_taken_for_a_corrupt_file(tmp_path, monkeypatch):
    """zipfile's refusals of a damaged entry are RuntimeErrors, and so is RecursionError (a deep
    caller's stack, not the file): that one passes through as itself."""
    path = tmp_path / "m.npz"
    _save(path)

    def too_deep(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(np, "load", too_deep)
    with pytest.raises(RecursionError):
        ck.load_checkpoint(path)


def test_foreign_or_mismatched_checkpoint_is_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", weights=np.zeros(3))
    with pytest.raises(ck.CheckpointError, match="not a gpucnn checkpoint"):
        ck.load_checkpoint(tmp_path / "plain.npz")
    with pytest.raises(ck.CheckpointError, match="no such checkpoint"):
        ck.load_checkpoint(tmp_path / "missing.npz")
    model, spec, *_ = _trained()
    spec["layers"][-1][1]["out_features"] = 3  # the weights no longer fit the spec
    ck.save_checkpoint(tmp_path / "m.npz", model, spec)
    with pytest.raises(ck.CheckpointError, match="do not match the model spec"):
        ck.load_checkpoint(tmp_path / "m.npz").build_model()


def _with_header(path, change):
    """Rewrite the checkpoint at ``path`` with ``change(header)`` as its header."""
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    header = change(json.loads(arrays["__header__"].tobytes().decode()))
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def _without(key):
    return lambda header: {k: v for k, v in header.items() if k != key}


def _spec_without(key):
    return lambda header: header | {"spec": _without(key)(header["spec"])}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda header: [header], "header is not an object"),
        (
            lambda header: header | {"version": 2},
            "unsupported checkpoint format 'gpucnn-checkpoint' version 2 "
            r"\(expected 'gpucnn-checkpoint' version 1\)",
        ),
        (lambda header: header | {"format": "other"}, "unsupported checkpoint format 'other'"),
        (_without("spec"), "damaged header, missing spec with input_shape"),
        (_spec_without("input_shape"), "damaged header, missing spec with input_shape"),
        (_without("epoch"), "damaged header, missing epoch"),
        (_without("rng_state"), "damaged header, missing rng_state"),
        (lambda header: header | {"epoch": "x"}, "damaged header, epoch must be an int, got 'x'"),
        (lambda header: header | {"epoch": 2.5}, "damaged header, epoch must be an int, got 2.5"),
    ],
)
def test_a_damaged_header_is_named(tmp_path, change, message):
    path = tmp_path / "m.npz"
    _save(path)
    _with_header(path, change)
    with pytest.raises(ck.CheckpointError, match=message):
        ck.load_checkpoint(path)


@pytest.mark.parametrize(
    "epoch, error, message",
    [("3", TypeError, "epoch must be an int, got '3'"), (1.5, TypeError, "got 1.5"),
     (True, TypeError, "got True"), (-1, ValueError, "epoch must be >= 0, got -1")],
)  # fmt: skip
def test_a_bad_epoch_is_refused_before_the_checkpoint_is_written(tmp_path, epoch, error, message):
    """A str epoch was written, and the file then failed to load (int("x")); 1.5 came back as 1."""
    model, spec = build_model("tutorial-lines", rng=0), model_spec("tutorial-lines")
    with pytest.raises(error, match=message):
        ck.save_checkpoint(tmp_path / "m.npz", model, spec, epoch=epoch)
    assert not (tmp_path / "m.npz").exists()


def test_what_is_not_a_model_optimizer_schedule_or_generator_is_refused(tmp_path):
    """A model given as the optimizer was saved as its state (a checkpoint that could not be
    resumed); an int rng or a None model failed on an attribute."""
    model, spec = build_model("tutorial-lines", rng=0), model_spec("tutorial-lines")
    for kwargs, message in [
        ({"optimizer": model}, "optimizer must be a gpucnn Optimizer or None, got Sequential"),
        (
            {"scheduler": optim.SGD(model.parameters(), 0.1)},
            "scheduler must be a gpucnn LRScheduler or None, got SGD",
        ),
        ({"rng": 5}, "rng must be a NumPy Generator or None, got int"),
        ({"model": None}, "model must be a gpucnn Module, got NoneType"),
    ]:
        with pytest.raises(TypeError, match=f"save_checkpoint: {message}"):
            ck.save_checkpoint(tmp_path / "m.npz", **{"model": model, **kwargs}, spec=spec)
    assert not (tmp_path / "m.npz").exists()


def test_numpy_numbers_in_meta_are_stored_as_the_numbers_they_hold(tmp_path):
    """An accuracy as np.float32 or a count as np.int64 was json's "Object of type float32 is
    not JSON serializable"; a 0-d array is a number too. What JSON cannot hold is refused by
    name, and nothing is written."""
    model, spec = build_model("tutorial-lines", rng=0), model_spec("tutorial-lines")
    accuracy = np.float32(np.random.default_rng().random())
    meta = {"acc": accuracy, "n": np.int64(7), "best": np.bool_(True), "mean": np.array(0.25)}
    path = ck.save_checkpoint(tmp_path / "m.npz", model, spec, meta=meta)
    stored = ck.load_checkpoint(path).meta
    assert stored == {"acc": float(accuracy), "n": 7, "best": True, "mean": 0.25}
    assert type(stored["n"]) is int and np.float32(stored["acc"]) == accuracy
    unstorable = [
        ({"curve": np.arange(3.0)}, "ndarray"),
        ({"seen": {1, 2}}, "set"),
        ({"day": np.datetime64("2026-12-03")}, "datetime64"),  # not the "date" item() gives
    ]
    wide = np.longdouble(0.5)
    if not isinstance(wide.item(), float):  # wider than a double (x86 Linux): item() is itself,
        # and json recursed forever; NumPy 1.x names it float128, 2.x longdouble
        unstorable.append(({"x": wide}, type(wide).__name__))
    for bad, kind in unstorable:
        with pytest.raises(TypeError, match=f"save_checkpoint: spec and meta .*type {kind} "):
            ck.save_checkpoint(tmp_path / "bad.npz", model, spec, meta=bad)
    assert not (tmp_path / "bad.npz").exists()


def test_an_entry_outside_the_model_optimizer_and_scheduler_is_named(tmp_path):
    """An array under another group than model/, optimizer/ and scheduler/ (a foreign or
    newer file) is refused by name, not dropped or a KeyError."""
    path = tmp_path / "m.npz"
    _save(path)
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    np.savez(path, **arrays, **{"extra/weights": np.ones(3)})
    with pytest.raises(ck.CheckpointError, match=r"m\.npz: unexpected entry 'extra/weights'"):
        ck.load_checkpoint(path)


def _arrays(path):
    with np.load(path) as npz:
        return {key: npz[key] for key in npz.files}


def test_a_checkpoint_missing_one_of_its_weights_is_refused(tmp_path):
    """A model array missing from the file is named, not left at a fresh initialisation."""
    path = tmp_path / "m.npz"
    _save(path)
    arrays = _arrays(path)
    names = [key for key in arrays if key.startswith("model/")]
    gone = names[np.random.default_rng().integers(len(names))]
    np.savez(path, **{key: value for key, value in arrays.items() if key != gone})
    with pytest.raises(ck.CheckpointError, match="weights do not match the model spec") as info:
        ck.load_checkpoint(path).build_model()
    assert gone.removeprefix("model/") in str(info.value)


def test_a_checkpoint_is_read_without_unpickling(tmp_path):
    """An object array (rebuilt by running pickle's code from the file) makes the file no
    readable checkpoint: loading one never unpickles what it holds."""
    path = tmp_path / "m.npz"
    _save(path)
    np.savez(path, **_arrays(path), **{"model/extra": np.array([{"key": 1}], dtype=object)})
    with pytest.raises(ck.CheckpointError, match="not a readable checkpoint"):
        ck.load_checkpoint(path)


def test_an_unbuildable_spec_or_missing_training_state_is_named(tmp_path):
    config = TrainConfig(epochs=1, train_size=64, test_size=32, progress=False, out=str(tmp_path))
    fit(config, log=lambda s: None)
    path = tmp_path / "model.npz"
    good = path.read_bytes()
    _with_header(path, lambda h: h | {"spec": h["spec"] | {"layers": [["Conv9d", {}]]}})
    with pytest.raises(ck.CheckpointError, match="model spec is not buildable.*Conv9d"):
        ck.load_checkpoint(path).build_model()
    path.write_bytes(good)
    _with_header(path, lambda h: h | {"random_state": {"0.seed": 1}})  # no dropout there
    with pytest.raises(ck.CheckpointError, match="random state does not fit.*'0.seed'"):
        ck.load_checkpoint(path).build_model()
    path.write_bytes(good)
    with np.load(path) as npz:  # the optimizer's arrays gone
        np.savez(path, **{k: npz[k] for k in npz.files if not k.startswith("optimizer/")})
    with pytest.raises(ck.CheckpointError, match="training state cannot be resumed.*'lr'"):
        fit(dataclasses.replace(config, epochs=2, resume=True), log=lambda s: None)


def test_a_runs_normalisation_goes_with_its_checkpoint(tmp_path):
    """The mean and std a run normalised its images with are stored in its checkpoint, and a
    resumed run and an evaluation of the checkpoint use them, not those of the dataset as it
    loads now (its files may have changed, or another dataset is evaluated)."""
    config = TrainConfig(epochs=1, train_size=64, test_size=32, progress=False, out=str(tmp_path))
    fit(config, log=lambda s: None)
    path = tmp_path / "model.npz"
    _with_header(path, lambda h: h | {"meta": h["meta"] | {"mean": 0.3, "std": 2.5}})
    fit(dataclasses.replace(config, epochs=2, resume=True), log=lambda s: None)
    checkpoint = ck.load_checkpoint(path)
    assert (checkpoint.meta["mean"], checkpoint.meta["std"]) == (0.3, 2.5)
    loss, accuracy, data = evaluate_checkpoint(str(path))
    assert (data.mean, data.std) != (0.3, 2.5)
    loader = DataLoader(data.test_x, data.test_y, 1000, mean=0.3, std=2.5)
    want = evaluate(checkpoint.build_model(), loader)
    assert loss == pytest.approx(want[0], rel=1e-6) and accuracy == want[1]


def test_a_checkpoint_is_evaluated_on_its_runs_own_lines_test_set(tmp_path):
    """The lines test images are generated from the run's seed: evaluating a checkpoint of a
    run with another seed than 0 scores it on that run's test set, of the run's size."""
    seed = int(np.random.default_rng().integers(1, 2**31))
    config = TrainConfig(
        epochs=1, seed=seed, train_size=32, test_size=24, progress=False, out=str(tmp_path)
    )
    fit(config, log=lambda s: None)
    _, _, data = evaluate_checkpoint(str(tmp_path / "model.npz"))
    want = load_dataset("lines", seed=seed, train_size=32, test_size=24)
    np.testing.assert_array_equal(data.test_x, want.test_x)
    np.testing.assert_array_equal(data.test_y, want.test_y)


def _interrupt_after(epoch):
    def callback(e, record):
        if e == epoch:
            raise KeyboardInterrupt

    return callback


def _run_twice(config: TrainConfig, tmp_path):
    """Checkpoints of an uninterrupted run and of a run interrupted after epoch 1 and resumed."""
    straight = dataclasses.replace(config, out=str(tmp_path / "straight"))
    fit(straight, log=lambda s: None)
    resumed = dataclasses.replace(config, out=str(tmp_path / "resumed"))
    with pytest.raises(KeyboardInterrupt):
        fit(resumed, callback=_interrupt_after(1), log=lambda s: None)
    metrics = fit(dataclasses.replace(resumed, resume=True), log=lambda s: None)
    return [
        ck.load_checkpoint(tmp_path / d / "model.npz") for d in ("straight", "resumed")
    ], metrics


def test_resume_is_bit_identical_lines(tmp_path):
    config = TrainConfig(epochs=3, train_size=256, test_size=64, progress=False)
    (a, b), metrics = _run_twice(config, tmp_path)
    _assert_same_state(a.model_state, b.model_state)
    _assert_same_state(a.optimizer_state, b.optimizer_state)
    assert a.rng_state == b.rng_state and a.epoch == b.epoch == 3
    assert a.meta["history"][-1]["test_accuracy"] == metrics["test_accuracy"]
    assert len(metrics["history"]) == 3


def test_resume_is_bit_identical_with_dropout_batchnorm_and_augmentation(tmp_path):
    data_dir = write_fake_idx_dataset(tmp_path / "data", 48, 16)
    config = TrainConfig(
        dataset="fashion-mnist",
        model="fashion-net",
        epochs=2,
        batch_size=16,
        augment="shift+flip",
        data_dir=str(data_dir),
        progress=False,
    )
    (a, b), _ = _run_twice(config, tmp_path)
    _assert_same_state(a.model_state, b.model_state)
    _assert_same_state(a.optimizer_state, b.optimizer_state)
    _assert_same_state(a.scheduler_state, b.scheduler_state)
    assert a.random_state == b.random_state and a.random_state  # dropout counters advanced


def _torch_model(spec):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    return torch.nn.Sequential(*(getattr(torch.nn, kind)(**args) for kind, args in spec["layers"]))


@pytest.mark.torch
def test_from_torch_widens_float_types_numpy_lacks_and_names_the_rest():
    """A bfloat16 state dict (as mixed-precision training saves it) loads as float32, which
    holds each value exactly; a type with no NumPy counterpart names its entry."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    weight = torch.randn(3, 4).to(torch.bfloat16)
    # bfloat16 has float32's exponent range: values no float16 holds (past 65504, below its
    # smallest subnormal 6e-8) must come through unchanged, not through a narrower type.
    weight[0, :3] = torch.tensor([3e38, -1e30, 1e-30])
    got = ck.from_torch({"0.weight": weight})["0.weight"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, weight.float().numpy())
    with warnings.catch_warnings():  # "ComplexHalf support is experimental"
        warnings.simplefilter("ignore", UserWarning)
        complex_half = torch.zeros(3, dtype=torch.complex32)
    with pytest.raises(TypeError, match=r"entry '0.bias': torch.complex32 has no NumPy type"):
        ck.from_torch({"0.bias": complex_half})


@pytest.mark.torch
@pytest.mark.parametrize("name", ["tutorial-mnist", "fashion-net"])
def test_to_torch_and_back(name):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    model, spec, *_ = _trained(name)
    reference = _torch_model(spec)
    reference.load_state_dict(ck.to_torch(model), strict=True)
    model.eval()
    reference.eval()
    x = np.random.default_rng(1).standard_normal((3, *spec["input_shape"])).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    # float32 through the whole net, each library summing in its own order: measured ~1e-7 of
    # the largest logit apart; a weight mapped to the wrong place moves outputs by far more.
    scale = np.abs(expected).max()
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6 * scale)
    fresh = build_from_spec(spec, rng=5)
    fresh.load_state_dict(ck.from_torch(reference.state_dict()))
    _assert_same_state(fresh.state_dict(), model.state_dict())


@pytest.mark.torch
def test_from_torch_takes_parameters_that_require_gradients():
    """A state dict taken with keep_vars=True holds the parameters themselves, which require
    gradients: they convert as their values, not as torch's "Can't call numpy() on Tensor
    that requires grad"."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    state = torch.nn.Linear(3, 2).state_dict(keep_vars=True)
    assert all(tensor.requires_grad for tensor in state.values())
    got = ck.from_torch(state)
    for key, tensor in state.items():
        np.testing.assert_array_equal(got[key], tensor.detach().numpy())


@pytest.mark.torch
def test_torch_conversions_are_copies():
    """from_torch and to_torch share no memory with what they convert: tensors (or a gpucnn
    state dict) changed in place afterwards, as training does, leave the converted state as it
    was taken."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    tensors = {"0.weight": torch.randn(3, 4), "0.bias": torch.randn(3)}
    arrays = ck.from_torch(tensors)
    kept = {k: v.copy() for k, v in arrays.items()}
    for tensor in tensors.values():
        tensor.add_(1.0)
    for key, value in arrays.items():
        np.testing.assert_array_equal(value, kept[key], err_msg=key)
    state = build_from_spec(model_spec("tutorial-mnist"), rng=0).state_dict()
    converted = ck.to_torch(state)
    before = {k: v.clone() for k, v in converted.items()}
    for value in state.values():
        value += 1
    for key, tensor in converted.items():
        assert torch.equal(tensor, before[key]), key

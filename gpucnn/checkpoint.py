"""Checkpoints: one ``.npz`` with model spec, weights, optimizer and schedule state, epoch and RNGs.

Written atomically (:mod:`gpucnn.atomic`), so a crash leaves the previous checkpoint intact.
Arrays are saved from the host, so a checkpoint written on either device loads on either device.
Weight names are PyTorch's (``to_torch`` / ``from_torch`` convert).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write
from .nn.module import Module
from .nn.zoo import build_from_spec
from .optim import LRScheduler, Optimizer
from .shapes import file_path, non_negative_int, scalar

FORMAT = "gpucnn-checkpoint"
VERSION = 1
_HEADER = "__header__"
_ZIP_MAGIC = b"PK\x03\x04"
_HEADER_KEYS = ("epoch", "rng_state", "random_state", "meta")
_SPEC_KEYS = {"name", "input_shape", "num_classes", "layers"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is corrupt, or does not match the model; names the file."""


@dataclass
class Checkpoint:
    """The contents of a checkpoint file, on the host."""

    spec: dict
    model_state: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)
    scheduler_state: dict[str, np.ndarray] = field(default_factory=dict)
    epoch: int = 0
    rng_state: dict | None = None
    random_state: dict[str, int] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    def build_model(self, device: str = "cpu") -> Module:
        """The model of this checkpoint, weights loaded, on ``device``."""
        try:
            model = build_from_spec(self.spec)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{self.path}: its model spec is not buildable: {err!r}") from err
        try:
            model.load_state_dict(self.model_state)
        except ValueError as err:
            raise CheckpointError(
                f"{self.path}: weights do not match the model spec: {err}"
            ) from err
        try:
            model.set_random_state(self.random_state)
        except (TypeError, ValueError) as err:
            raise CheckpointError(
                f"{self.path}: its dropout random state does not fit the model: {err}"
            ) from err
        return model.to(device)


def save_checkpoint(
    path: str | os.PathLike,
    model: Module,
    spec: dict,
    *,
    optimizer: Any = None,
    scheduler: Any = None,
    epoch: int = 0,
    rng: np.random.Generator | None = None,
    meta: dict | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (built from ``spec``) and the training state to ``path``."""
    path = file_path(path, "save_checkpoint: path")
    # Now: "x" was written, and the file could not be loaded again; 1.5 was read back as 1.
    epoch = non_negative_int(epoch, "epoch")
    # A model given as the optimizer was saved as its state, and the run could not be resumed.
    for name, value, kinds, what in (
        ("model", model, Module, "a gpucnn Module"),
        ("optimizer", optimizer, (Optimizer, type(None)), "a gpucnn Optimizer or None"),
        ("scheduler", scheduler, (LRScheduler, type(None)), "a gpucnn LRScheduler or None"),
        ("rng", rng, (np.random.Generator, type(None)), "a NumPy Generator or None"),
    ):
        if not isinstance(value, kinds):
            raise TypeError(f"save_checkpoint: {name} must be {what}, got {type(value).__name__}")
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays |= {f"optimizer/{k}": v for k, v in optimizer.state_dict().items()}
    if scheduler is not None:
        arrays |= {f"scheduler/{k}": v for k, v in scheduler.state_dict().items()}
    header = {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec,
        "epoch": epoch,
        "rng_state": rng.bit_generator.state if rng is not None else None,
        "random_state": model.random_state(),
        "meta": meta or {},
    }
    try:
        text = json.dumps(header, default=_json_scalar)
    except TypeError as err:  # before anything is written
        raise TypeError(f"save_checkpoint: spec and meta must hold JSON values: {err}") from err
    arrays[_HEADER] = np.frombuffer(text.encode(), dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def _json_scalar(value: Any) -> Any:
    """A NumPy scalar or a 0-d array, NumPy's or CuPy's, in a spec or meta (an accuracy as
    ``np.float32``) as the Python number it holds, which JSON stores exactly; anything else (a
    long double, whose ``item()`` is itself; a date) is json's TypeError naming its type."""
    item = scalar(value)
    if isinstance(item, bool | int | float | str):
        return item
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        # Our own file handle: np.load leaves the file it opened unclosed when the zip is corrupt.
        with open(path, "rb") as file:
            if file.read(4) != _ZIP_MAGIC:  # np.load would try it as a pickle, and say so
                raise CheckpointError(f"{path}: not a checkpoint (not an .npz file: no zip header)")
            file.seek(0)
            with np.load(file, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}  # reading checks each member's CRC
    except (CheckpointError, RecursionError):  # RecursionError: a RuntimeError, not the file's
        raise
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no such checkpoint file") from err
    except IsADirectoryError as err:  # a run's folder, given for the model.npz in it
        inside = path / "model.npz"
        hint = f" (did you mean {inside}?)" if inside.is_file() else ""
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file{hint}") from err
    # RuntimeError: zipfile's refusal of a damaged directory entry that reads as encrypted, or
    # (NotImplementedError) as packed by a compression method it does not know
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt or truncated: {err})"
        ) from err


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; a :class:`CheckpointError` if bad."""
    path = file_path(path, "load_checkpoint: path")
    arrays = _read_arrays(path)
    try:
        header = json.loads(arrays.pop(_HEADER).tobytes().decode())
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: not a gpucnn checkpoint (no valid header)") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a gpucnn checkpoint (its header is not an object)")
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {header.get('format')!r} "
            f"version {header.get('version')!r} (expected {FORMAT!r} version {VERSION})"
        )
    missing = [key for key in _HEADER_KEYS if key not in header]
    spec = header.get("spec")
    if not isinstance(spec, dict) or not _SPEC_KEYS <= spec.keys():
        missing.append(f"spec with {', '.join(sorted(_SPEC_KEYS))}")
    if missing:
        raise CheckpointError(f"{path}: damaged header, missing {'; '.join(missing)}")
    try:
        epoch = non_negative_int(header["epoch"], "epoch")
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged header, {err}") from err
    parts: dict[str, dict[str, np.ndarray]] = {"model": {}, "optimizer": {}, "scheduler": {}}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group not in parts:
            raise CheckpointError(f"{path}: unexpected entry {key!r}")
        parts[group][name] = value
    return Checkpoint(
        spec=header["spec"],
        model_state=parts["model"],
        optimizer_state=parts["optimizer"],
        scheduler_state=parts["scheduler"],
        epoch=epoch,
        rng_state=header["rng_state"],
        random_state=header["random_state"],
        meta=header["meta"],
        path=path,
    )


def to_torch(state: Module | dict[str, np.ndarray]) -> dict[str, Any]:
    """A PyTorch state dict (CPU tensors) from a module or its ``state_dict()``; needs torch."""
    import torch

    if isinstance(state, Module):
        state = state.state_dict()
    return {key: torch.from_numpy(np.array(value)) for key, value in state.items()}


def from_torch(state_dict: dict[str, Any]) -> dict[str, np.ndarray]:
    """NumPy arrays from a PyTorch state dict, ready for ``Module.load_state_dict``."""
    return {key: _numpy_of(key, value) for key, value in state_dict.items()}


def _numpy_of(key: str, tensor: Any) -> np.ndarray:
    """A tensor as a NumPy array; a float type NumPy lacks (bfloat16, float8) becomes float32,
    which holds its values exactly; any other is a TypeError naming ``key``."""
    tensor = tensor.detach().cpu()
    try:
        return tensor.numpy().copy()
    except TypeError as err:
        if tensor.is_floating_point():
            return tensor.float().numpy()
        raise TypeError(f"state dict entry {key!r}: {tensor.dtype} has no NumPy type") from err

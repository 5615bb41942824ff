"""Datasets by name: ``lines`` (generated), ``fashion-mnist`` and ``mnist`` (IDX files on disk)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..functional import check_flag
from ..shapes import file_path, integer, non_negative_int
from .download import official_dataset_of
from .idx import IdxError, read_file, read_idx, write_idx
from .lines import CLASSES as LINES_CLASSES
from .lines import generate_lines

ENV_VAR = "GPUCNN_DATA"
DEBIAN_ROOT = Path("/usr/share/datasets")
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not where gpucnn looks; the message says how to get them."""


class SubsetTooLargeError(ValueError):
    """``--train-size``/``--test-size`` asks for more images than the files hold; ``size``,
    ``available`` and ``path`` let a caller that took the size from elsewhere (``eval``, from a
    checkpoint) say so."""

    def __init__(self, split: str, size: int, available: int, path: Path):
        super().__init__(f"--{split}-size {size}: {path} has only {available} images")
        self.size, self.available, self.path = size, available, path


@dataclass
class Dataset:
    """Train and test arrays of one dataset, unnormalised (uint8 pixels or float32 values).

    ``train_x``: (N, C, H, W), ``train_y``: (N,) int64; ``mean``/``std`` normalise the raw values;
    ``augment``: the augmentations that keep labels valid (``shift`` pixels, horizontal ``flip``).
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    mean: float = 0.0
    std: float = 1.0
    augment: dict = field(default_factory=dict)
    source: str = "generated"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image."""
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a dataset before loading it."""

    name: str
    classes: tuple[str, ...]
    default_model: str
    augment: dict
    how_to_get: str = ""


FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

REGISTRY: dict[str, DatasetInfo] = {
    "lines": DatasetInfo("lines", LINES_CLASSES, "tutorial-lines", {}),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        FASHION_CLASSES,
        "tutorial-mnist",
        {"shift": 2, "flip": True},
        "install Debian's package (sudo apt install dataset-fashion-mnist), or run "
        "'gpucnn download fashion-mnist --data-dir DIR'",
    ),
    "mnist": DatasetInfo(
        "mnist",
        tuple(str(d) for d in range(10)),
        "tutorial-mnist",
        {"shift": 2},
        "run 'gpucnn download mnist --data-dir DIR' (needs internet)",
    ),
}


def dataset_names() -> list[str]:
    """The names ``--dataset`` takes, sorted."""
    return sorted(REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; a ValueError listing the choices if there is none."""
    if not isinstance(name, str) or name not in REGISTRY:  # a list: not "unhashable type"
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}")
    return REGISTRY[name]


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where IDX files of ``name`` are looked for, in order (``--data-dir`` alone when given):
    the root's ``name`` subfolder before the root, which may hold another dataset's files."""
    # "": an empty --data-dir, taken as unset like an empty variable
    unset = data_dir is None or (isinstance(data_dir, str) and not data_dir)
    roots = [] if unset else [file_path(data_dir, "--data-dir")]  # 0 was taken for unset
    if not roots and os.environ.get(ENV_VAR):
        roots = [Path(os.environ[ENV_VAR])]
    dirs = [d for root in roots for d in (root / name, root)]  # the named subfolder first
    return dirs or [DEBIAN_ROOT / name]


def _idx_path(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def find_idx_files(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The four IDX files of ``name`` (raw or .gz) from the first folder that has them all."""
    info = dataset_info(name)
    dirs = candidate_dirs(name, data_dir)
    for folder in dirs:
        found = {key: _idx_path(folder, stem) for key, stem in IDX_FILES.items()}
        if all(found.values()):
            return found
    looked = ", ".join(str(d) for d in dirs)
    raise DataNotFoundError(
        f"{name} not found (looked in {looked} for train-images-idx3-ubyte[.gz] and the other "
        f"three IDX files): {info.how_to_get}; or pass --data-dir DIR or set {ENV_VAR}=DIR"
    )


def write_idx_dataset(
    folder: str | os.PathLike,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    compress: bool = True,
) -> Path:
    """Write (images (N, H, W) uint8, labels (N,)) pairs as the four MNIST-named IDX files."""
    check_flag(compress, "compress")  # 2 named the files .gz.gz, which no loader finds
    folder = file_path(folder, "write_idx_dataset: folder")
    labels = {"train_y": _byte_labels(train[1]), "test_y": _byte_labels(test[1])}
    arrays = {"train_x": train[0], "test_x": test[0], **labels}
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_FILES.items():
        write_idx(folder / (stem + (".gz" if compress else "")), arrays[key])
    return folder


def _byte_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as uint8, the IDX label type; a ValueError for values a byte cannot hold."""
    labels = np.asarray(labels)
    as_bytes = labels.astype(np.uint8)
    if not np.array_equal(as_bytes, labels):
        raise ValueError("IDX labels must be whole numbers in 0..255")
    return as_bytes


def _moments(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the pixels of the first 10,000 images (enough to fix the
    normalisation to 3 digits, without a float64 copy of the whole training set)."""
    sample = images[:10000].astype(np.float64)
    return float(sample.mean()), float(sample.std()) or 1.0


def _check_official(name: str, paths: dict[str, Path], raws: dict[str, bytes]) -> None:
    """An IdxError when a file is another dataset's official one (by the SHA-256 of its bytes
    ``raws``): MNIST in a Fashion-MNIST folder, say, would train and test without a complaint."""
    for key, path in paths.items():
        other = official_dataset_of(hashlib.sha256(raws[key]).hexdigest())
        if other not in (None, name):
            raise IdxError(
                f"{path} is {other}'s file (by its SHA-256), not {name}'s: point --data-dir at "
                f"a folder with {name}'s files"
            )


def _check_values(paths: dict[str, Path], arrays: dict[str, np.ndarray], classes: int) -> None:
    """IdxErrors naming the file: labels that are not whole numbers in 0..classes-1, images
    with NaN or infinite values, test images of another size or type than the training ones."""
    for key in ("train_y", "test_y"):
        y = arrays[key]
        if not np.issubdtype(y.dtype, np.integer):
            raise IdxError(f"{paths[key]}: labels must be integers, the file holds {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise IdxError(f"{paths[key]}: labels outside 0..{classes - 1}")
    for key in ("train_x", "test_x"):
        x = arrays[key]
        bad = int(np.count_nonzero(~np.isfinite(x))) if x.dtype.kind == "f" else 0
        if bad:
            raise IdxError(f"{paths[key]}: NaN or infinite pixel values ({bad} of {x.size})")
    train, test = arrays["train_x"], arrays["test_x"]
    if (test.shape[1:], test.dtype) != (train.shape[1:], train.dtype):
        raise IdxError(
            f"{paths['test_x']}: {test.shape[1]}x{test.shape[2]} {test.dtype} images, but the "
            f"training images in {paths['train_x']} are {train.shape[1]}x{train.shape[2]} "
            f"{train.dtype}"
        )


def _load_idx(name: str, data_dir, train_size: int | None, test_size: int | None) -> Dataset:
    info = dataset_info(name)
    paths = find_idx_files(name, data_dir)
    raws = {key: read_file(path) for key, path in paths.items()}  # each file read once
    _check_official(name, paths, raws)
    arrays = {
        key: read_idx(path, ndim=3 if key.endswith("x") else 1, raw=raws[key])
        for key, path in paths.items()
    }
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if len(x) != len(y):
            raise IdxError(
                f"{paths[split + '_x']}: {len(x)} images but "
                f"{paths[split + '_y']} has {len(y)} labels"
            )
        if not len(x):
            raise IdxError(f"{paths[split + '_x']} has 0 images")
        size = train_size if split == "train" else test_size
        if size is not None and size > len(y):
            raise SubsetTooLargeError(split, size, len(y), paths[split + "_x"])
    _check_values(paths, arrays, len(info.classes))
    train_x = arrays["train_x"][:train_size, None]
    mean, std = _moments(train_x)
    return Dataset(
        name,
        train_x,
        arrays["train_y"][:train_size].astype(np.int64),
        arrays["test_x"][:test_size, None],
        arrays["test_y"][:test_size].astype(np.int64),
        info.classes,
        mean,
        std,
        dict(info.augment),
        source=str(paths["train_x"].parent),
    )


def _load_lines(seed: int, train_size: int | None, test_size: int | None) -> Dataset:
    train_x, train_y = generate_lines(train_size or 2000, np.random.default_rng([seed, 0]))
    test_x, test_y = generate_lines(test_size or 1000, np.random.default_rng([seed, 1]))
    return Dataset("lines", train_x, train_y, test_x, test_y, LINES_CLASSES)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
) -> Dataset:
    """Load dataset ``name``; ``train_size``/``test_size`` take (or generate) that many samples.

    IDX datasets are found in the first of ``data_dir``, ``$GPUCNN_DATA`` and Debian's
    ``/usr/share/datasets/<name>`` that is set (a ``<name>`` subfolder of the first two also
    works).
    """
    dataset_info(name)
    non_negative_int(seed, "seed")  # NumPy's words for 1.5 or -1 name no argument; True no seed
    for option, size in (("train", train_size), ("test", test_size)):
        if size is not None and integer(size, f"--{option}-size") < 1:
            raise ValueError(f"--{option}-size must be at least 1, got {size}")
    if name == "lines":
        return _load_lines(seed, train_size, test_size)
    return _load_idx(name, data_dir, train_size, test_size)

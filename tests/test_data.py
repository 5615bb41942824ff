"""IDX reader edge cases, dataset lookup, the lines generator, the loader and augmentation (CPU)."""

from __future__ import annotations

import gzip
import re
import types

import numpy as np
import pytest
from conftest import write_fake_idx_dataset

from gpucnn import nn
from gpucnn.data import datasets
from gpucnn.data import download as dl
from gpucnn.data.datasets import DataNotFoundError, load_dataset, write_idx_dataset
from gpucnn.data.idx import IdxError, read_idx, write_idx
from gpucnn.data.lines import generate_lines
from gpucnn.data.loader import DataLoader, random_flip, random_shift
from gpucnn.nn.zoo import model_spec
from gpucnn.optim import SGD
from gpucnn.run_config import TrainConfig, resolve
from gpucnn.train import _loaders, augmentations, check_compatible, evaluate, fits, train_epoch


# ------------------------------------------------------------------------------------ IDX reader
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    path = write_idx(tmp_path / name, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.flags.writeable  # its own array, not a read-only view of the file's bytes
    np.testing.assert_array_equal(back, array)


# IDX type codes and their big-endian types, as the format's description gives them
_IDX_TYPES = [
    (0x08, ">u1"),
    (0x09, ">i1"),
    (0x0B, ">i2"),
    (0x0C, ">i4"),
    (0x0D, ">f4"),
    (0x0E, ">f8"),
]


@pytest.mark.parametrize("code, dtype", _IDX_TYPES)
def test_idx_type_codes_and_byte_order_follow_the_format(tmp_path, code, dtype):
    """Each type code reads (and is written) as the format's big-endian type: a round trip
    through read_idx and write_idx alone would pass with two codes swapped or a little-endian
    type, which would misread every real file of that type."""
    rng = np.random.default_rng()
    shape = tuple(int(d) for d in rng.integers(1, 5, 3))
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    values = (
        rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        if info
        else rng.standard_normal(shape).astype(dtype)
    )
    raw = bytes([0, 0, code, 3]) + b"".join(d.to_bytes(4, "big") for d in shape)
    raw += values.tobytes()
    (tmp_path / "file").write_bytes(raw)
    got = read_idx(tmp_path / "file")
    assert got.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(got, values)
    native = values.astype(np.dtype(dtype).newbyteorder("="))
    assert write_idx(tmp_path / "written", native, compress=False).read_bytes() == raw


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    path = write_idx(tmp_path / "labels", np.arange(7, dtype=np.uint8), compress=True)
    np.testing.assert_array_equal(read_idx(path, ndim=1), np.arange(7))


def _header(code=0x08, dims=(3,)):
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x00\x08", "too short"),
        (b"\x00\x00\x08", "too short"),  # one byte short of the header: not struct's words
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic"),
        (b"\x00\x00\x42\x01" + b"\x00" * 8, "bad magic"),
        (b"\x1f\x00\x08\x01" + b"\x00" * 8, "bad magic"),  # gzip's first byte only
        (bytes([0, 0, 8, 0]), "0 dimensions"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 3]), "truncated IDX header"),
        (_header(dims=(3, 4)) + b"\x00" * 11, "truncated"),
        (_header(dims=(3,)) + b"\x00" * 4, "trailing bytes"),
        (_header(code=0x0D, dims=(2,)) + b"\x00" * 7, "truncated"),
        (_header(dims=(1 << 22, 1 << 21, 1 << 21)), "truncated"),  # 2**64 bytes: no int64 wrap
    ],
)
def test_idx_bad_files_name_the_file(tmp_path, payload, message):
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(IdxError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_truncated_gzip(tmp_path):
    path = tmp_path / "x.gz"
    full = gzip.compress(_header(dims=(1000,)) + bytes(1000))
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(IdxError, match=f"{path}.*gzip"):
        read_idx(path)


def test_idx_wrong_number_of_dimensions(tmp_path):
    path = write_idx(tmp_path / "labels.gz", np.zeros(5, np.uint8))
    with pytest.raises(IdxError, match="expected 3 dimensions, the file has 1"):
        read_idx(path, ndim=3)


def test_idx_with_more_dimensions_than_expected_is_refused(tmp_path):
    """A file of images (3-D) where labels (1-D) are expected is refused, not only one with
    fewer dimensions: extra dimensions are as wrong as missing ones."""
    shape = tuple(int(d) for d in np.random.default_rng().integers(1, 4, 3))
    path = write_idx(tmp_path / "images.gz", np.zeros(shape, np.uint8))
    with pytest.raises(IdxError, match="expected 1 dimensions, the file has 3"):
        read_idx(path, ndim=1)


def test_idx_write_takes_any_byte_order_and_gzips_reproducibly(tmp_path, monkeypatch):
    """A big-endian array (as another reader returns one) is written as its native twin is,
    and a gzipped file's bytes depend on the array alone, not on the time it was written
    (no mtime in the gzip header), so equal data gives equal files and checksums."""
    rng = np.random.default_rng()
    array = rng.integers(-1000, 1000, (3, 4, 5)).astype(np.int32)
    native = write_idx(tmp_path / "native.gz", array).read_bytes()
    later = float(rng.integers(10**9, 2 * 10**9))  # another time than now, for gzip's header
    monkeypatch.setattr(gzip, "time", types.SimpleNamespace(time=lambda: later))
    swapped = write_idx(tmp_path / "swapped.gz", array.astype(">i4")).read_bytes()
    assert swapped == native
    np.testing.assert_array_equal(read_idx(tmp_path / "swapped.gz"), array)


def test_idx_missing_file(tmp_path):
    path = tmp_path / "nope.gz"
    with pytest.raises(IdxError, match=f"{re.escape(str(path))}: cannot read"):
        read_idx(path)


# ------------------------------------------------------------------------------------- datasets
@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_from_data_dir(tmp_path, gz):
    write_fake_idx_dataset(tmp_path, gz=gz)
    names = {stem + ".gz" * gz for stem in datasets.IDX_FILES.values()}
    assert {p.name for p in tmp_path.iterdir()} == names  # compress=False writes raw files
    split = (np.zeros((2, 4, 4), np.uint8), np.arange(2))
    folder = datasets.write_idx_dataset(tmp_path / "np-bool", split, split, compress=np.bool_(gz))
    assert {p.name for p in folder.iterdir()} == names  # a NumPy bool as a Python one
    data = load_dataset("mnist", data_dir=tmp_path, train_size=12)
    assert data.train_x.shape == (12, 1, 28, 28) and data.train_x.dtype == np.uint8
    assert data.test_x.shape == (10, 1, 28, 28) and data.test_y.dtype == np.int64
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert 100 < data.mean < 150 and 60 < data.std < 90  # uniform bytes


def test_dataset_found_through_env_subfolder(tmp_path, monkeypatch):
    write_fake_idx_dataset(tmp_path / "fashion-mnist")
    monkeypatch.setenv("GPUCNN_DATA", str(tmp_path))
    data = load_dataset("fashion-mnist")
    assert len(data.train_y) == 20 and data.augment == {"shift": 2, "flip": True}
    data.augment["flip"] = False  # the dataset's own copy: the registry keeps its entry
    assert datasets.dataset_info("fashion-mnist").augment == {"shift": 2, "flip": True}


def test_the_named_subfolder_comes_before_the_roots_own_files(tmp_path):
    """A root holding one dataset's files (as ``gpucnn download mnist --data-dir ROOT`` leaves
    them) and another's in ROOT/fashion-mnist: each name finds its own."""
    write_fake_idx_dataset(tmp_path, n_train=20)
    write_fake_idx_dataset(tmp_path / "fashion-mnist", n_train=30)
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path).train_y) == 30
    assert len(load_dataset("mnist", data_dir=tmp_path).train_y) == 20


def test_a_data_dir_given_is_the_only_place_looked_in(tmp_path, monkeypatch):
    """--data-dir replaces $GPUCNN_DATA and Debian's folder rather than coming before them: a
    dataset missing there is an error naming it, not another folder's files loaded instead."""
    monkeypatch.setattr(datasets, "DEBIAN_ROOT", tmp_path / "debian")
    write_fake_idx_dataset(tmp_path / "env" / "mnist", n_train=20)
    write_fake_idx_dataset(tmp_path / "debian" / "mnist", n_train=30)
    monkeypatch.setenv("GPUCNN_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError, match="mnist not found") as info:
        load_dataset("mnist", data_dir=tmp_path / "given")
    assert "env" not in str(info.value) and "debian" not in str(info.value)
    assert load_dataset("mnist").source == str(tmp_path / "env" / "mnist")
    monkeypatch.delenv("GPUCNN_DATA")
    data = load_dataset("mnist")
    assert data.source == str(tmp_path / "debian" / "mnist") and len(data.train_y) == 30


def test_an_empty_gpucnn_data_is_unset(tmp_path, monkeypatch):
    """GPUCNN_DATA= (set but empty, as a shell leaves an exported empty variable) is no
    folder: it is not taken for the current one."""
    monkeypatch.setattr(datasets, "DEBIAN_ROOT", tmp_path / "debian")
    write_fake_idx_dataset(tmp_path / "debian" / "mnist", n_train=30)
    write_fake_idx_dataset(tmp_path / "cwd" / "mnist", n_train=20)
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("GPUCNN_DATA", "")
    assert load_dataset("mnist").source == str(tmp_path / "debian" / "mnist")


def test_an_empty_data_dir_is_unset(tmp_path, monkeypatch):
    """--data-dir "" (an empty shell variable) is no folder either: $GPUCNN_DATA is looked in,
    not the current folder."""
    write_fake_idx_dataset(tmp_path / "env", n_train=30)
    write_fake_idx_dataset(tmp_path / "cwd" / "mnist", n_train=20)
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("GPUCNN_DATA", str(tmp_path / "env"))
    data = load_dataset("mnist", data_dir="")
    assert data.source == str(tmp_path / "env") and len(data.train_y) == 30


def test_gpucnn_data_holding_the_files_itself_is_found(tmp_path, monkeypatch):
    """$GPUCNN_DATA is a root like --data-dir: the files in the folder itself are found when
    it has no subfolder named after the dataset."""
    write_fake_idx_dataset(tmp_path, n_train=20)
    monkeypatch.setenv("GPUCNN_DATA", str(tmp_path))
    assert load_dataset("mnist").source == str(tmp_path)


def test_a_folder_without_all_four_files_is_passed_over(tmp_path):
    """The named subfolder missing one file: the root's complete set is loaded; with none
    complete, the dataset is not found (rather than a crash on the missing file)."""
    write_fake_idx_dataset(tmp_path, n_train=20)
    write_fake_idx_dataset(tmp_path / "mnist", n_train=30)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    data = load_dataset("mnist", data_dir=tmp_path)
    assert data.source == str(tmp_path) and len(data.train_y) == 20
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match="mnist not found"):
        load_dataset("mnist", data_dir=tmp_path)


def test_subsets_are_the_first_images_of_each_split(tmp_path):
    """--train-size and --test-size each cut their own split (one set alone leaves the other
    whole), keeping images and labels paired as in the files."""
    rng = np.random.default_rng()
    n_train, n_test = (int(n) for n in rng.integers(6, 15, 2))
    train = rng.integers(0, 256, (n_train, 3, 5), dtype=np.uint8), rng.integers(0, 10, n_train)
    test = rng.integers(0, 256, (n_test, 3, 5), dtype=np.uint8), rng.integers(0, 10, n_test)
    write_idx_dataset(tmp_path, train, test)
    for train_size, test_size in ((2, None), (None, 3), (n_train, n_test - 1)):
        data = load_dataset("mnist", data_dir=tmp_path, train_size=train_size, test_size=test_size)
        np.testing.assert_array_equal(data.train_x[:, 0], train[0][:train_size])
        np.testing.assert_array_equal(data.train_y, train[1][:train_size])
        np.testing.assert_array_equal(data.test_x[:, 0], test[0][:test_size])
        np.testing.assert_array_equal(data.test_y, test[1][:test_size])


def test_the_normalisation_comes_from_the_first_10000_training_images(tmp_path):
    """Mean and std of the first 10,000 training images (as documented; of a --train-size
    subset, the subset's: the images trained on), and a std of 1 for images of one grey
    level, whose std of 0 would turn every normalised pixel into NaN."""
    rng = np.random.default_rng()
    images = rng.integers(0, 256, (10050, 2, 2), dtype=np.uint8)
    images[10000:] = 255  # past the sample: they must not move the numbers
    write_idx_dataset(tmp_path, (images, np.arange(10050) % 10), (images[:5], np.arange(5)))
    data = load_dataset("mnist", data_dir=tmp_path)
    sample = images[:10000].astype(np.float64)
    assert data.mean == pytest.approx(sample.mean(), rel=1e-12)
    assert data.std == pytest.approx(sample.std(), rel=1e-12)
    subset = load_dataset("mnist", data_dir=tmp_path, train_size=50)  # the images trained on
    assert subset.mean == pytest.approx(images[:50].mean(dtype=np.float64), rel=1e-12)
    level = int(rng.integers(0, 256))
    flat = np.full((20, 2, 2), level, np.uint8)
    write_idx_dataset(tmp_path, (flat, np.arange(20) % 10), (flat[:5], np.arange(5)))
    data = load_dataset("mnist", data_dir=tmp_path)
    assert (data.mean, data.std) == (level, 1.0)


def test_another_datasets_official_files_are_refused(tmp_path, monkeypatch):
    """MNIST's files loaded as Fashion-MNIST (alike in shape and class count) would train
    without a complaint: files with the other dataset's official SHA-256 are refused."""
    folder = write_fake_idx_dataset(tmp_path)
    sums = {p.name: dl.sha256_of(p) for p in folder.iterdir()}
    monkeypatch.setitem(dl.SOURCES, "mnist", ("unused", sums))  # these files are now MNIST's
    assert len(load_dataset("mnist", data_dir=folder).train_y) == 20
    with pytest.raises(IdxError, match=r"idx\d-ubyte.gz is mnist's file \(by its SHA-256\)"):
        load_dataset("fashion-mnist", data_dir=folder)


def test_augmentations_are_chosen_among_those_the_labels_allow(tmp_path):
    write_fake_idx_dataset(tmp_path)
    fashion, digits = (load_dataset(name, data_dir=tmp_path) for name in ("fashion-mnist", "mnist"))
    assert augmentations("none", fashion) == {"shift": 0, "flip": False}
    assert augmentations("flip", fashion) == {"shift": 0, "flip": True}
    assert augmentations("shift+flip", fashion) == {"shift": 2, "flip": True}
    assert augmentations("shift", digits) == {"shift": 2, "flip": False}
    with pytest.raises(ValueError, match="'flip' is not available for dataset 'mnist'"):
        augmentations("shift+flip", digits)


def test_a_shift_is_the_datasets_own_number_of_pixels():
    """The loader's shift is the one the dataset allows (not the registry's 2 of MNIST and
    Fashion-MNIST), for a dataset made in Python too."""
    shift = int(np.random.default_rng().choice([1, 3, 4, 5]))  # not the registry's 2
    images, labels = np.zeros((4, 1, 8, 8), np.float32), np.arange(4) % 2
    data = datasets.Dataset(
        "own", images, labels, images, labels, ("a", "b"), augment={"shift": shift}
    )
    assert augmentations("shift", data) == {"shift": shift, "flip": False}


def test_training_batches_are_shuffled_and_test_batches_in_order():
    """fit's training loader draws a new order each epoch from the run's generator, its test
    loader goes through the test images as they are."""
    data = load_dataset("lines", seed=0, train_size=64, test_size=40)
    cfg = resolve(TrainConfig(train_size=64, test_size=40, batch_size=16))
    train, test = _loaders(cfg, data, "cpu", np.random.default_rng(), 0.0, 1.0)
    epoch = np.concatenate([x for x, _ in train])
    assert not np.array_equal(epoch, data.train_x)
    assert sorted(x.tobytes() for x in epoch) == sorted(x.tobytes() for x in data.train_x)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in test]), data.test_x)


def test_a_model_for_another_class_count_does_not_fit_the_dataset():
    """The input shape alone does not make a fit: a model taking lines' images but with
    another class count is refused, naming both counts."""
    data = load_dataset("lines", train_size=16, test_size=8)
    spec = model_spec("tutorial-lines")
    assert fits(spec, data)
    other = spec | {"num_classes": data.num_classes + 1}
    assert tuple(other["input_shape"]) == data.input_shape and not fits(other, data)
    with pytest.raises(
        ValueError, match=rf"with {data.num_classes + 1} classes, but .* with {data.num_classes}$"
    ):
        check_compatible(other, data)


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCNN_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="apt install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    with pytest.raises(DataNotFoundError, match="gpucnn download mnist"):
        load_dataset("mnist", data_dir=tmp_path)


def test_dataset_count_mismatch_and_bad_labels(tmp_path):
    write_fake_idx_dataset(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(IdxError, match="10 images but .* 9 labels"):
        load_dataset("mnist", data_dir=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(10, 10, np.uint8))
    with pytest.raises(IdxError, match="labels outside 0..9"):
        load_dataset("mnist", data_dir=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(10, -1, np.int8))
    with pytest.raises(IdxError, match="labels outside 0..9"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize(
    "stem, array, message",
    [
        ("t10k-labels-idx1-ubyte", np.arange(10) % 10 + 0.5, "labels must be integers, .* float64"),
        ("t10k-images-idx3-ubyte", np.zeros((10, 32, 32), np.uint8), "32x32 uint8 images, but "),
        ("t10k-images-idx3-ubyte", np.zeros((10, 28, 28), np.float32), "28x28 float32 images"),
    ],
)
def test_labels_and_test_images_that_do_not_fit_name_their_file(tmp_path, stem, array, message):
    """Float labels (which would be truncated), test images of another size or pixel type than
    the training images: refused when loaded, not after an epoch of training."""
    write_fake_idx_dataset(tmp_path)
    write_idx(tmp_path / f"{stem}.gz", array)
    with pytest.raises(IdxError, match=rf"{stem}.gz: {message}"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("labels", [[0, 256], [0, -1], [0, 2.5]])
def test_write_idx_dataset_refuses_labels_a_byte_cannot_hold(tmp_path, labels):
    """IDX labels are bytes: 256 would be written as 0, -1 as 255 and 2.5 as 2."""
    images = np.zeros((2, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="labels must be whole numbers in 0..255"):
        write_idx_dataset(tmp_path, (images, np.array(labels)), (images, np.zeros(2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_images_with_nan_or_infinite_pixels_name_their_file(tmp_path, bad):
    rng = np.random.default_rng()
    images = [rng.random((n, 28, 28), dtype=np.float32) for n in (20, 10)]
    images[0][3, 4, 5] = bad
    labels = [np.arange(n) % 10 for n in (20, 10)]
    write_idx_dataset(tmp_path, (images[0], labels[0]), (images[1], labels[1]))
    with pytest.raises(
        IdxError, match=r"train-images-idx3-ubyte.gz: NaN or infinite pixel values \(1 of 15680\)"
    ):
        load_dataset("mnist", data_dir=tmp_path)
    images[0][3, 4, 5] = 0.5
    write_idx_dataset(tmp_path, (images[0], labels[0]), (images[1], labels[1]))
    assert load_dataset("mnist", data_dir=tmp_path).train_x.dtype == np.float32


@pytest.mark.parametrize("n_train, n_test, empty", [(0, 10, "train"), (20, 0, "t10k")])
def test_empty_idx_split_names_the_file(tmp_path, n_train, n_test, empty):
    write_fake_idx_dataset(tmp_path, n_train, n_test)
    with pytest.raises(IdxError, match=rf"{empty}-images-idx3-ubyte.gz has 0 images"):
        load_dataset("mnist", data_dir=tmp_path)


def test_a_loader_without_samples_is_refused_by_training_and_evaluation():
    """drop_last=True with fewer samples than a batch: a clear error, not a division by zero."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    loader = DataLoader(np.zeros((3, 1, 2, 2), np.float32), np.zeros(3), 8, drop_last=True)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="no samples .*batch size 8, drop_last=True"):
        train_epoch(model, loss_fn, optimizer, loader, bar=None)
    with pytest.raises(ValueError, match="no samples .*batch size 8, drop_last=True"):
        evaluate(model, loader)


def test_evaluate_refuses_what_is_not_a_model():
    """None failed on an attribute; the loader's data would have been no help in finding why."""
    loader = DataLoader(np.ones((3, 1, 2, 2), np.float32), np.zeros(3), 2)
    for model in (None, [nn.Flatten()]):
        with pytest.raises(TypeError, match="evaluate: model must be a gpucnn Module, got"):
            evaluate(model, loader)


def test_evaluate_restores_training_mode_when_the_model_fails():
    """An error mid-evaluation leaves the model in training mode, as it came in."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 2))  # the images have 4 features
    loader = DataLoader(np.ones((3, 1, 2, 2), np.float32), np.zeros(3), 2)
    with pytest.raises(ValueError, match="linear"):
        evaluate(model, loader)
    assert model.training


def _bn_dropout_net(rng):
    """A net whose outputs differ between training and eval mode (batch statistics, dropout)."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, rng=rng), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
        nn.Dropout(0.5, seed=1), nn.Linear(27, 4, rng=rng),
    )  # fmt: skip


def _by_hand(model, loader):
    """(mean loss, accuracy) over the loader's batches, in the model's current mode."""
    loss_fn, total, correct = nn.CrossEntropyLoss(), 0.0, 0
    for x, y in loader:
        logits = model(x)
        total += float(loss_fn(logits, y)) * len(y)
        correct += int((logits.argmax(axis=1) == y).sum())
    return total / loader.num_samples, correct / loader.num_samples


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_scores_the_eval_mode_and_restores_the_mode(training):
    """evaluate: the loss and accuracy of the eval-mode outputs (running statistics, no
    dropout), the model left in the mode it came in."""
    rng = np.random.default_rng()
    images, labels = rng.standard_normal((50, 1, 3, 3)), rng.integers(0, 4, 50)
    loader = DataLoader(images, labels, 16)
    model = _bn_dropout_net(rng)
    model.train()
    _by_hand(model, loader)  # running statistics of their own, not the initial ones
    model.train(training)
    loss, accuracy = evaluate(model, loader)
    assert model.training == training
    want = _by_hand(model.eval(), loader)
    assert loss == pytest.approx(want[0], rel=1e-5) and accuracy == want[1]


@pytest.mark.parametrize("drop_last", [False, True])
def test_train_epoch_scores_its_batches(drop_last):
    """train_epoch's (mean loss, accuracy) over the samples of its batches (not those a
    dropped last batch left out): with lr 0 the model stays as it is, so they are those of its
    training-mode outputs, also for a model that came in eval mode."""
    rng = np.random.default_rng()
    images, labels = rng.standard_normal((50, 1, 3, 3)), rng.integers(0, 4, 50)
    loader = DataLoader(images, labels, 16, drop_last=drop_last)
    model = _bn_dropout_net(rng)
    bar = type("Bar", (), {"update": lambda self, n: None, "set_postfix": lambda self, **k: None})
    optimizer = SGD(model.parameters(), lr=0.0)
    masks = model.random_state()
    model.eval()  # as an evaluation leaves it: train_epoch switches it to training mode itself
    got = train_epoch(model, nn.CrossEntropyLoss(), optimizer, loader, bar())
    assert model.training
    model.set_random_state(masks)  # the same dropout masks again
    want = _by_hand(model.train(), loader)
    assert got[0] == pytest.approx(want[0], rel=1e-5) and got[1] == want[1]


def test_unknown_dataset():
    with pytest.raises(
        ValueError, match="unknown dataset 'cifar'; choose one of: fashion-mnist, lines, mnist"
    ):
        load_dataset("cifar")


# ---------------------------------------------------------------------------------------- lines
def test_lines_match_the_tutorial():
    x, y = generate_lines(50, rng=3)
    assert x.shape == (50, 1, 8, 8) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, np.arange(50) % 2)
    for image, label in zip(x[:, 0], y, strict=True):
        line_axis = 0 if label == 0 else 1  # a vertical line is a column of ones
        full = np.flatnonzero((image == 1.0).all(axis=line_axis))
        assert len(full) == 1 and 1 <= full[0] <= 6
    np.testing.assert_array_equal(generate_lines(50, rng=3)[0], x)
    assert not np.array_equal(generate_lines(50, rng=4)[0], x)


def test_lines_noise_is_gaussian_and_the_size_is_checked():
    """Off the line, pixels are the tutorial's Gaussian noise of std ``noise`` around 0 (so
    some negative); a size below 3 leaves no row for a line, and n=0 no image: both are
    refused by name."""
    noise = float(np.random.default_rng().uniform(0.05, 0.3))
    x, _ = generate_lines(300, rng=np.random.default_rng(), noise=noise)
    off_line = x[x != 1.0]
    assert off_line.size > 300 * 40
    assert abs(off_line.mean()) < 0.05 * noise and off_line.std() == pytest.approx(noise, rel=0.05)
    with pytest.raises(ValueError, match="size >= 3, got n=5, size=2"):
        generate_lines(5, size=2)
    with pytest.raises(ValueError, match="n >= 1 and size >= 3, got n=0, size=8"):
        generate_lines(0)
    for bad, error in ((float("nan"), ValueError), (-0.1, ValueError), ("0.1", TypeError)):
        with pytest.raises(error, match=f"noise must be .*got {bad!r}"):
            generate_lines(4, noise=bad)


def test_sizes_that_are_not_whole_numbers_are_refused_by_name():
    """A float or a bool as a count is a TypeError naming the argument, before NumPy's words
    ("'float' object cannot be interpreted as an integer") name nothing; a NumPy integer is a
    count like any int."""
    for kwargs, name in (({"n": 2.5}, "lines: n"), ({"n": True}, "lines: n"),
                         ({"n": 4, "size": 8.0}, "lines: size")):  # fmt: skip
        with pytest.raises(TypeError, match=f"{name} must be an int, got {kwargs[name[7:]]!r}"):
            generate_lines(**kwargs)
    for sizes, option in (((10.5, 2), "--train-size"), ((4, True), "--test-size")):
        with pytest.raises(TypeError, match=f"{option} must be an int"):
            load_dataset("lines", train_size=sizes[0], test_size=sizes[1])
    data = load_dataset("lines", train_size=np.int64(6), test_size=np.int32(3))
    assert (len(data.train_y), len(data.test_y)) == (6, 3)


def test_lines_dataset_is_seeded():
    a, b = load_dataset("lines", seed=1), load_dataset("lines", seed=1)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert not np.array_equal(a.train_x, load_dataset("lines", seed=2).train_x)
    assert a.train_x.shape == (2000, 1, 8, 8) and a.test_x.shape == (1000, 1, 8, 8)


@pytest.mark.parametrize(
    "seed, error, message",
    [(1.5, TypeError, "seed must be an int, got 1.5"), (True, TypeError, "got True"),
     (None, TypeError, "got None"), (-1, ValueError, "seed must be >= 0, got -1")],
)  # fmt: skip
def test_a_seed_that_is_no_seed_is_refused_by_name(seed, error, message):
    """NumPy's "SeedSequence expects int" or "expected non-negative integer" named nothing, and
    True drew the data of seed 1."""
    with pytest.raises(error, match=message):
        load_dataset("lines", seed=seed)


def test_lines_test_images_are_not_training_images():
    """The test set has its own random stream: drawn from the training set's, its noise would
    repeat the first training images' noise (a test set of near copies of training images)."""
    seed = int(np.random.default_rng().integers(2**31))
    data = load_dataset("lines", seed=seed, train_size=50, test_size=50)
    corner = (slice(None), 0, 0, 0)  # no line reaches a corner pixel: noise alone
    assert not np.isin(data.test_x[corner], data.train_x[corner]).any()


# --------------------------------------------------------------------------------------- loader
def _toy(n=23):
    images = np.arange(n * 4, dtype=np.uint8).reshape(n, 1, 2, 2)
    return images, np.arange(n) % 3


def test_loader_batches_normalises_and_covers_every_sample():
    images, labels = _toy()
    loader = DataLoader(images, labels, 5, shuffle=True, rng=0, mean=10.0, std=2.0)
    batches = list(loader)
    assert len(loader) == len(batches) == 5 and [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    x = np.concatenate([b[0] for b in batches])
    assert x.dtype == np.float32
    order = np.argsort(x[:, 0, 0, 0])
    np.testing.assert_allclose(x[order], (images.astype(np.float32) - 10) / 2)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches])[order], labels)


def test_loader_leaves_the_callers_images_alone():
    """The images are normalised in a copy, also when they are float32 already (no cast to
    copy them): the caller's array keeps its raw values."""
    images = np.arange(23 * 4, dtype=np.float32).reshape(23, 1, 2, 2)
    before = images.copy()
    loader = DataLoader(images, np.arange(23) % 3, 5, mean=10.0, std=2.0)
    np.testing.assert_array_equal(images, before)
    x = np.concatenate([b[0] for b in loader])
    np.testing.assert_allclose(x, (before - 10) / 2)


def test_loader_drop_last_and_no_shuffle():
    images, labels = _toy()
    loader = DataLoader(images, labels, 5, drop_last=True)
    assert len(loader) == 4 and loader.num_samples == 20
    y = np.concatenate([b[1] for b in loader])
    np.testing.assert_array_equal(y, labels[:20])


def test_loader_is_deterministic_per_seed():
    images, labels = _toy(64)

    def epochs(seed):
        loader = DataLoader(images, labels, 8, shuffle=True, rng=seed, shift=1, flip=True)
        return [np.concatenate([x.ravel() for x, _ in loader]) for _ in range(2)]

    first, again, other = epochs(7), epochs(7), epochs(8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])  # a fresh shuffle every epoch
    assert not np.array_equal(first[0], other[0])


def test_loader_shuffles_each_epoch_afresh():
    """shuffle=True without augmentation (which alone would make epochs differ): each epoch
    takes every sample once, each image with its label, in an order of its own, not the
    dataset's; the same seed gives the same orders."""
    images, labels = _toy(64)

    def orders(seed):
        loader = DataLoader(images, labels, 8, shuffle=True, rng=seed)
        epochs = []
        for _ in range(2):
            x, y = (np.concatenate(parts) for parts in zip(*loader, strict=True))
            index = (x[:, 0, 0, 0] / 4).astype(int)  # _toy's image i starts at 4 * i
            np.testing.assert_array_equal(y, labels[index])
            epochs.append(index)
        return epochs

    first, again = orders(7), orders(7)
    for order, same in zip(first, again, strict=True):
        np.testing.assert_array_equal(order, same)
        assert sorted(order) == list(range(64))
        assert not np.array_equal(order, np.arange(64))
    assert not np.array_equal(first[0], first[1])


def test_loader_rejects_bad_arguments():
    images, labels = _toy()
    with pytest.raises(ValueError, match="23 images but 22 labels"):
        DataLoader(images, labels[:-1], 4)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(images, labels, 0)
    with pytest.raises(ValueError, match="labels must be whole numbers, got 0.5"):
        DataLoader(images, labels + 0.5, 4)  # not truncated to class 0, 1, ... unsaid
    with pytest.raises(
        ValueError, match=r"shift and flip need images \(N, C, H, W\), got \(23, 2, 2\)"
    ):
        DataLoader(images[:, 0], labels, 4, flip=True)  # not (N, N, H, W) batches of mixed images
    for std in (0.0, -1.0, float("nan"), float("inf")):  # not inf/NaN images
        with pytest.raises(ValueError, match=f"std must be positive and finite, got {std}"):
            DataLoader(images, labels, 4, std=std)
    for name in ("mean", "std"):  # Python's "must be real number, not NoneType", unnamed
        for value in (None, "0.5", True):
            with pytest.raises(TypeError, match=f"{name} must be a number, got {value!r}"):
                DataLoader(images, labels, 4, **{name: value})
    assert DataLoader(images, labels, 4, mean=np.array(0.5), std=np.float32(2)).batch_size == 4
    for mean in (float("nan"), float("inf")):  # all-NaN images, silently
        with pytest.raises(ValueError, match=f"mean must be finite, got {mean}"):
            DataLoader(images, labels, 4, mean=mean)
    # Each failed only at the first batch, naming neither the argument nor its value.
    with pytest.raises(TypeError, match="batch_size must be an int, got 2.5"):
        DataLoader(images, labels, 2.5)
    with pytest.raises(TypeError, match="shift must be an int, got 1.5"):
        DataLoader(images, labels, 4, shift=1.5)
    with pytest.raises(ValueError, match="shift must be >= 0 pixels, got -1"):
        DataLoader(images, labels, 4, shift=-1)
    # Complex images were cast to real (a NumPy warning), an (N, 1) label column failed only at
    # the loss, text labels and a complex or 1-D mean gave Python's or NumPy's words.
    with pytest.raises(TypeError, match="images must be an array .* real numbers, got dtype comp"):
        DataLoader(images.astype(complex), labels, 4)
    with pytest.raises(ValueError, match=r"labels must be 1-D \(N,\), got shape \(23, 1\)"):
        DataLoader(images, labels[:, None], 4)
    for bad in (labels.astype(str), None):
        with pytest.raises(TypeError, match="labels must be integers, got dtype (<U|object)"):
            DataLoader(images, bad, 4)
    for mean in (1j, np.array([0.1, 0.2])):
        with pytest.raises(TypeError, match="mean must be a number, got"):
            DataLoader(images, labels, 4, mean=mean)


def test_every_label_is_checked_and_one_label_for_all_images_is_refused():
    """One fractional label among whole ones is named (not truncated to a class), and a 0-d
    label is refused by its shape, not by Python's "len() of unsized object"."""
    images, labels = _toy()
    rng = np.random.default_rng()
    floats = labels.astype(np.float64)
    floats[rng.integers(len(floats))] += 0.5
    bad = floats[floats % 1 != 0][0]
    with pytest.raises(ValueError, match=f"labels must be whole numbers, got {bad}"):
        DataLoader(images, floats, 4)
    with pytest.raises(ValueError, match=r"labels must be 1-D \(N,\), got shape \(\)"):
        DataLoader(images[:1], labels[0], 1)


class _DeviceScalar:
    """A 0-d array that, like CuPy's, refuses np.asarray and gives its value by .item()."""

    ndim = 0

    def __init__(self, value):
        self.value = value

    def item(self):
        return self.value

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")


def test_a_loader_takes_bool_labels_and_a_mean_computed_on_the_device():
    """Bools are the labels 0 and 1, as before the labels' dtype check; a mean or std that is a
    0-d device array (cupy.mean of the images) is its number, as float() took it before."""
    images = np.random.default_rng().integers(0, 256, (4, 1, 3, 3)).astype(np.uint8)
    flags = np.array([True, False, True, True])
    loader = DataLoader(images, flags, 4, mean=_DeviceScalar(0.25), std=_DeviceScalar(2.0))
    x, y = next(iter(loader))
    np.testing.assert_array_equal(y, [1, 0, 1, 1])
    assert y.dtype == np.int64
    np.testing.assert_allclose(x, (images - 0.25) / 2.0, rtol=1e-6)


# --------------------------------------------------------------------------------- augmentation
def test_random_shift_moves_each_image_by_its_offset():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 255, size=(3, 2, 5, 6)).astype(np.uint8)
    offsets = np.array([[2, 2], [0, 4], [3, 1]])  # shift=2: [2, 2] is no movement
    y = random_shift(x, offsets, 2, np)
    assert y.shape == x.shape and y.dtype == x.dtype and y.flags.c_contiguous
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i, (dy, dx) in enumerate(offsets):
        np.testing.assert_array_equal(y[i], padded[i, :, dy : dy + 5, dx : dx + 6])
    np.testing.assert_array_equal(y[0], x[0])
    assert (y[1, :, :, -2:] == 0).all() and (y[1, :, 2:, :4] == x[1, :, :3, 2:]).all()


def test_random_flip_mirrors_selected_images():
    x = np.arange(2 * 1 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 3)
    y = random_flip(x, np.array([True, False]), np)
    np.testing.assert_array_equal(y[0], x[0, :, :, ::-1])
    np.testing.assert_array_equal(y[1], x[1])


def test_loader_augmentation_keeps_shapes_and_pixels():
    x, y = generate_lines(16, rng=0)
    loader = DataLoader((x > 0.5).astype(np.uint8), y, 16, shift=1, flip=True, rng=1)
    ((xb, yb),) = list(loader)
    assert xb.shape == (16, 1, 8, 8) and xb.dtype == np.float32
    assert set(np.unique(xb)) <= {0.0, 1.0} and (xb.sum(axis=(1, 2, 3)) > 0).all()


def test_shift_and_flip_draw_every_offset_and_both_orientations():
    """shift=1 moves each image by -1, 0 or +1 on each axis, all nine offsets drawn; flip
    mirrors some images left to right and leaves the rest. One marked pixel per image shows
    where it went (400 draws miss an offset with probability ~1e-19)."""
    images = np.zeros((400, 1, 3, 3), np.float32)
    images[:, 0, 1, 1] = 1.0  # the centre: any shift keeps it inside
    ((x, _),) = list(DataLoader(images, np.zeros(400), 400, shift=1, rng=np.random.default_rng()))
    where = {tuple(np.argwhere(image[0])[0]) for image in x}
    assert where == {(r, c) for r in range(3) for c in range(3)}
    images[:, 0, 1, 1], images[:, 0, 0, 0] = 0.0, 1.0  # a corner: a flip moves it
    ((x, _),) = list(DataLoader(images, np.zeros(400), 400, flip=True, rng=np.random.default_rng()))
    where = {tuple(np.argwhere(image[0])[0]) for image in x}
    assert where == {(0, 0), (0, 2)}


def test_shift_padding_is_a_raw_zero_after_normalisation():
    """Images are normalised once at load, so the shift fills its border with the normalised 0."""
    images = np.full((4, 1, 6, 6), 200, dtype=np.uint8)
    loader = DataLoader(images, np.zeros(4), 4, shift=2, rng=3, mean=50.0, std=25.0)
    ((x, _),) = list(loader)
    values = set(np.unique(x).tolist())
    assert values <= {np.float32(6.0), np.float32(-2.0)}  # (200 - 50)/25 and (0 - 50)/25
    assert np.float32(-2.0) in values  # rng 3 moves at least one image


def test_loader_and_augmentation_match_on_every_device(kernel_backend, cpu, monkeypatch):
    """The same seed gives the same batches, augmented on the device, as on the CPU; with the
    data on the device, each epoch's shuffled order goes there once and batches are gathered
    there (cuda-emu's arrays, NumPy's subclass, had been taken for host arrays: it gathered
    with the host order, a path the GPU never takes)."""
    backend = kernel_backend
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 1, 12, 12), dtype=np.uint8)
    labels = np.arange(20) % 10
    options = {"shuffle": True, "shift": 2, "flip": True, "mean": 30.0, "std": 7.0}
    on_device = DataLoader(images, labels, 8, device=backend, rng=5, **options)
    on_cpu = DataLoader(images, labels, 8, device=cpu, rng=5, **options)
    moved, to_device = [], backend.asarray
    monkeypatch.setattr(
        backend, "asarray", lambda a, dtype=None: moved.append(a) or to_device(a, dtype)
    )
    for (x, y), (x_ref, y_ref) in zip(on_device, on_cpu, strict=True):
        assert backend.owns(x) and backend.owns(y)
        np.testing.assert_array_equal(backend.to_numpy(x), x_ref)
        np.testing.assert_array_equal(backend.to_numpy(y), y_ref)
    orders = [a for a in moved if not backend.owns(a) and np.shape(a) == (20,)]
    assert len(orders) == 1 and sorted(orders[0]) == list(range(20))


def test_images_the_device_has_no_room_for_stay_on_the_host(kernel_backend, cpu, monkeypatch):
    """Images too big for the device memory stay on the host, the labels go to the device: a
    shuffled, augmented loader then gathers each batch on the host, and gives on the device the
    batches a loader on the CPU gives with the same seed."""
    backend = kernel_backend
    rng = np.random.default_rng()
    images = rng.integers(0, 256, (20, 1, 6, 6), dtype=np.uint8)
    labels = rng.integers(0, 10, 20)
    to_device = backend.asarray

    def asarray(a, dtype=None):
        if np.ndim(a) == 4 and len(a) == len(images):  # the whole set, not a batch of it
            raise MemoryError("Out of memory allocating 2,880 bytes")
        return to_device(a, dtype)

    monkeypatch.setattr(backend, "asarray", asarray)
    seed = int(rng.integers(2**31))
    options = {"shuffle": True, "shift": 1, "flip": True, "mean": 30.0, "std": 7.0}
    on_device = DataLoader(images, labels, 8, device=backend, rng=seed, **options)
    assert not backend.owns(on_device.images) and backend.owns(on_device.labels)
    on_cpu = DataLoader(images, labels, 8, device=cpu, rng=seed, **options)
    for (x, y), (x_ref, y_ref) in zip(on_device, on_cpu, strict=True):
        assert backend.owns(x) and backend.owns(y)
        np.testing.assert_array_equal(backend.to_numpy(x), x_ref)
        np.testing.assert_array_equal(backend.to_numpy(y), y_ref)

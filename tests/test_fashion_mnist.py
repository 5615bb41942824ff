"""The real Fashion-MNIST files (the shared test copy): counts, shapes, labels, a smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gpucnn.cli import main
from gpucnn.data.datasets import load_dataset

DATA = Path(__file__).resolve().parents[2] / "shared/data/fashion-mnist"
pytestmark = pytest.mark.skipif(
    not (DATA / "train-images-idx3-ubyte.gz").is_file(), reason=f"no Fashion-MNIST copy in {DATA}"
)


@pytest.fixture(scope="module")
def fashion():
    return load_dataset("fashion-mnist", data_dir=DATA)


def test_counts_shapes_and_labels(fashion):
    assert fashion.train_x.shape == (60000, 1, 28, 28) and fashion.train_x.dtype == np.uint8
    assert fashion.test_x.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(fashion.train_y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(fashion.test_y), [1000] * 10)
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[9] == "Ankle boot"
    assert 70 < fashion.mean < 76 and 88 < fashion.std < 92  # 0.286 and 0.353 of 255
    assert fashion.train_x.max() == 255 and fashion.train_x.min() == 0


def test_one_epoch_on_a_slice_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "--dataset",
        "fashion-mnist",
        "--model",
        "tutorial-mnist",
        "--epochs",
        "1",
        "--train-size",
        "3000",
        "--test-size",
        "1000",
        "--data-dir",
        str(DATA),
    ]
    assert main(["train", *argv, "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.6  # about 0.72 after 3,000 images
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "model.npz"), "--data-dir", str(DATA)]) == 0
    text = capsys.readouterr().out
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in text and "1000 fashion-mnist" in text

"""Every ``gpucnn`` subcommand end to end on tiny settings, and one-line errors with exit code 2."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from conftest import KERNEL_BACKENDS, make_backend, write_fake_idx_dataset

import gpucnn.atomic
import gpucnn.demo
import gpucnn.nn
import gpucnn.train
from gpucnn.atomic import atomic_write
from gpucnn.backend import get_backend
from gpucnn.checkpoint import load_checkpoint
from gpucnn.cli import main
from gpucnn.data.datasets import write_idx_dataset
from gpucnn.errors import GpuUnavailableError


@pytest.fixture
def Image():
    """Pillow's ``PIL.Image``; the test skips where Pillow is not installed. Imported here, not at
    the top: the lent GPU machines may lack Pillow, and a failed import while collecting this file
    would stop ``pytest -m gpu`` (scripts/gpu_check.sh) before any test ran."""
    return pytest.importorskip("PIL.Image", reason="Pillow is not installed (pip install pillow)")


def run(capsys, *argv):
    """(exit code, stdout, stderr) of ``gpucnn ARGV``."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("gpucnn") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


@pytest.fixture(scope="module")
def lines_run(tmp_path_factory):
    """``gpucnn`` with no arguments, run in a fresh folder: (folder, stdout)."""
    folder = tmp_path_factory.mktemp("default")
    result = subprocess.run(
        [sys.executable, "-m", "gpucnn"], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return folder / "runs" / "lines-tutorial-lines", result.stdout


def test_train_default_reaches_95_percent(lines_run):
    out, stdout = lines_run
    reported = float(re.search(r"test accuracy (\d\.\d+)", stdout).group(1))
    assert reported >= 0.95
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.95 and metrics["dataset"] == "lines"
    assert len(metrics["history"]) == metrics["epochs"] >= 1
    assert {"train_loss", "train_accuracy", "test_accuracy", "samples_per_s"} <= set(
        metrics["history"][0]
    )
    for name in ("model.npz", "curves.png", "filters.png"):
        assert (out / name).stat().st_size > 0


def test_eval_reports_the_trained_accuracy(lines_run, capsys):
    out, stdout = lines_run
    code, text, _ = run(capsys, "eval", "--checkpoint", str(out / "model.npz"))
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in text


@pytest.mark.parametrize("suffix", [".png", ".pgm", ".jpg"])
def test_predict_lines(lines_run, tmp_path, capsys, suffix, Image):
    out, _ = lines_run
    paths = []
    for kind in ("vertical", "horizontal"):
        image = np.zeros((8, 8), dtype=np.uint8)
        if kind == "vertical":
            image[:, 3] = 255
        else:
            image[5, :] = 255
        paths.append(tmp_path / f"{kind}{suffix}")
        Image.fromarray(image).save(paths[-1], quality=95)
    code, text, _ = run(capsys, "predict", "--checkpoint", str(out / "model.npz"), *map(str, paths))
    assert code == 0
    lines = text.strip().splitlines()
    assert len(lines) == 2
    assert re.search(r"vertical\.\w+: vertical \(\d\.\d+\)", lines[0])
    assert re.search(r"horizontal\.\w+: horizontal \(\d\.\d+\)", lines[1])


def _softmax(logits):
    """Row-wise softmax in float64, as predict reports it."""
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def test_predict_gives_the_models_probabilities_for_the_training_datas_pixels(
    tmp_path, capsys, Image
):
    """Image files are read as the training data was fed: 8-bit pixels in 0..255, normalised
    with the run's mean and std; the probability is the softmax of the model's logits for
    that image alone (lines, in [0, 1] with mean 0 and std 1, would not tell)."""
    from gpucnn.checkpoint import load_checkpoint
    from gpucnn.predict import predict_files

    data = write_fake_idx_dataset(tmp_path / "data", 8, 4)
    argv = ["--dataset", "mnist", "--data-dir", str(data), "--out", str(tmp_path / "run")]
    sizes = ["--train-size", "8", "--test-size", "4", "--epochs", "1", "--no-progress"]
    assert run(capsys, "train", *argv, *sizes)[0] == 0
    images = np.random.default_rng().integers(0, 256, (3, 28, 28)).astype(np.uint8)
    paths = [_saved(tmp_path, f"{i}.png", Image.fromarray(a)) for i, a in enumerate(images)]
    got = predict_files(tmp_path / "run" / "model.npz", paths)
    ckpt = load_checkpoint(tmp_path / "run" / "model.npz")
    x = (images[:, None].astype(np.float32) - ckpt.meta["mean"]) / ckpt.meta["std"]
    probs = _softmax(ckpt.build_model().eval()(x.astype(np.float32)))
    assert [label for _, label, _ in got] == [str(k) for k in probs.argmax(axis=1)]
    np.testing.assert_allclose([p for *_, p in got], probs.max(axis=1), rtol=1e-5)
    ((path, label, prob),) = predict_files(tmp_path / "run" / "model.npz", paths[1])  # one path
    assert (path, label) == got[1][:2] and prob == pytest.approx(got[1][2], rel=1e-5)
    # Open files, as Pillow reads them: one alone (not read line by line), or in a list, named
    # by their file name where they have one.
    with open(paths[2], "rb") as file:
        ((name, label, prob),) = predict_files(tmp_path / "run" / "model.npz", file)
    assert (name, label) == (str(paths[2]), got[2][1]) and prob == pytest.approx(got[2][2], 1e-5)
    in_memory = [io.BytesIO(paths[i].read_bytes()) for i in (0, 1)]
    for (_, *want), (_, *from_memory) in zip(
        got[:2], predict_files(tmp_path / "run" / "model.npz", in_memory), strict=True
    ):
        assert from_memory[0] == want[0] and from_memory[1] == pytest.approx(want[1], rel=1e-5)
    with pytest.raises(ValueError, match="predict_files: no image paths given"):
        predict_files(tmp_path / "run" / "model.npz", [])


def test_train_then_resume(tmp_path, capsys):
    common = ["--train-size", "128", "--test-size", "64", "--out", str(tmp_path), "--no-progress"]
    code, text, _ = run(
        capsys, "train", "--epochs", "1", "--optimizer", "adam", "--lr", "0.01", *common
    )
    assert code == 0 and "epoch 1/1" in text
    code, text, _ = run(capsys, "train", "--epochs", "2", "--resume", *common)
    assert code == 0 and "resuming" in text and "epoch 2/2" in text and "epoch 1/" not in text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and metrics["config"]["optimizer"] == "adam"
    weights = (tmp_path / "model.npz").read_bytes()
    (tmp_path / "metrics.json").unlink()  # resumed with every epoch done: nothing trains,
    code, text, _ = run(capsys, "train", "--epochs", "2", "--resume", *common)  # metrics again
    assert code == 0 and "resuming" in text and "epoch 2/2" not in text
    assert json.loads((tmp_path / "metrics.json").read_text())["history"] == metrics["history"]
    assert (tmp_path / "model.npz").read_bytes() == weights


@pytest.mark.parametrize("epochs", [1, 2, 3])
def test_the_closing_line_counts_the_epochs_in_words(capsys, tmp_path, monkeypatch, epochs):
    """``gpucnn train`` ends with "1 epoch" or "N epochs"."""
    metrics = {"config": {"out": str(tmp_path)}, "epochs": epochs, "test_accuracy": 0.5}
    metrics |= {"model": "m", "dataset": "d", "device": "cpu", "train_seconds": 1.0}
    monkeypatch.setattr(gpucnn.train, "fit", lambda config: metrics)
    code, text, _ = run(capsys, "train", "--out", str(tmp_path))
    assert code == 0 and f"cpu, {epochs} epoch{'s' if epochs > 1 else ''}, 1.0 s" in text


def test_summary(capsys):
    code, text, _ = run(capsys, "summary", "--model", "tutorial-mnist")
    assert code == 0
    for fragment in ("(800,)", "108,618", "100,480", "160", "628x fewer", "38,535,424", "1,792"):
        assert fragment in text
    assert run(capsys, "summary") == (0, text, "")  # the default model, as its help says


def test_demo(tmp_path, capsys):
    code, text, _ = run(capsys, "demo", "--out", str(tmp_path))
    assert code == 0
    assert "same = True" in text and "(8 - 3 + 2*1) // 2 + 1 = 4  conv2d -> (4, 4)" in text
    rows = re.findall(r"= (\d+)  conv2d -> \((\d+), (\d+)\)", text)
    assert len(rows) == 4 and all(size == h == w for size, h, w in rows)  # formula == conv2d
    assert (tmp_path / "kernels.png").stat().st_size > 0
    assert (tmp_path / "pooling.png").stat().st_size > 0


def test_the_demo_picture_is_a_square_with_a_grey_centre_and_a_bar():
    """The picture the kernels section describes: its edges and blurs need all four levels."""
    image = gpucnn.demo.demo_image()
    assert image.shape == (32, 32) and set(np.unique(image)) == {0.0, 0.5, 0.75, 1.0}
    assert (image[8, 8], image[16, 16], image[28, 16]) == (1.0, 0.5, 0.75)


@pytest.mark.emu
def test_demo_on_another_device_runs_every_op_there(tmp_path, capsys, monkeypatch):
    """``demo --device cuda-emu``: no convolution or pooling of any section runs on the CPU."""
    make_backend("cuda-emu")  # skipped, with the reason, where it cannot be made

    def on_the_cpu(*args, **kwargs):
        raise AssertionError("a cuda-emu demo op ran on the CPU backend")

    for op in ("conv2d_forward", "max_pool2d_forward", "avg_pool2d_forward"):
        monkeypatch.setattr(get_backend("cpu"), op, on_the_cpu)
    code, text, err = run(capsys, "demo", "--device", "cuda-emu", "--out", str(tmp_path))
    assert code == 0, err
    assert "demo on device 'cuda-emu'" in text and "same = True" in text


def test_device_auto_without_a_gpu_runs_on_the_cpu_and_says_why_once(
    tmp_path, capsys, without_cupy
):
    """``--device auto`` is one of the choices; with no GPU the demo runs on the CPU and says
    why once, though each section asks for the device again."""
    code, text, err = run(capsys, "demo", "--device", "auto", "--out", str(tmp_path))
    assert code == 0 and "gpucnn demo on device 'cpu'" in text
    assert err.count("device 'auto' uses the CPU: CuPy is not installed") == 1


def test_filter_pictures_show_every_tile_on_a_scale_centred_on_zero(tmp_path, monkeypatch):
    """plot_filters: one tile per (filter, input channel), all of them even when the last row
    is not full, titled by filter and channel, each on a colour scale from -max|w| to max|w|."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    from matplotlib.figure import Figure

    from gpucnn.plots import plot_filters

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kwargs: saved.append(fig))
    weight = np.random.default_rng().standard_normal((5, 2, 3, 3))
    plot_filters(weight, tmp_path / "filters.png")
    tiles = [ax for ax in saved[0].axes if ax.images]
    assert [ax.get_title() for ax in tiles] == [
        f"filter {i} ch {j}" for i in range(5) for j in range(2)
    ]
    for ax, w in zip(tiles, weight.reshape(10, 3, 3), strict=True):
        limit = np.abs(w).max()
        np.testing.assert_allclose(ax.images[0].get_clim(), (-limit, limit))


def test_the_filter_picture_is_of_the_first_convolution(tmp_path, monkeypatch):
    """filters.png shows the first convolution's filters, those that look at the image's
    pixels (a later one's would be thousands of tiles of channel mixes)."""
    rng = np.random.default_rng()
    model = gpucnn.nn.Sequential(
        gpucnn.nn.Conv2d(1, 2, 3, rng=rng), gpucnn.nn.ReLU(), gpucnn.nn.Conv2d(2, 3, 3, rng=rng)
    )
    drawn = {}
    monkeypatch.setattr(gpucnn.train, "plot_curves", lambda history, path: None)
    monkeypatch.setattr(gpucnn.train, "plot_filters", lambda w, path: drawn.update({path: w}))
    gpucnn.train._draw(model, [], tmp_path)
    np.testing.assert_array_equal(drawn[tmp_path / "filters.png"], model[0].weight.data)


def test_a_picture_grid_refuses_what_it_cannot_draw_whole(tmp_path):
    """An image without a title went undrawn, cols=0 was a ZeroDivisionError, and no image at
    all (a conv with no filters) matplotlib's words about rows."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    from gpucnn.plots import plot_filters, plot_images

    tiles, path = [np.eye(3)] * 2, tmp_path / "grid.png"
    with pytest.raises(ValueError, match="plot_images: 2 images but 1 titles"):
        plot_images(tiles, ["a"], path)
    plot_images(tiles, (t for t in "abc"), path)  # any iterable of titles, a spare one unused
    assert path.exists()
    path.unlink()
    with pytest.raises(ValueError, match="cols must be >= 1, got 0"):
        plot_images(tiles, ["a", "b"], path, cols=0)
    with pytest.raises(ValueError, match="plot_images: no images to plot"):
        plot_filters(np.zeros((0, 1, 3, 3)), path)
    assert not path.exists()


def test_info_names_cupys_kernel_cache(monkeypatch, tmp_path):
    """$CUPY_CACHE_DIR where set, else CuPy's default ~/.cupy/kernel_cache; a distribution
    that is not installed has no version (None)."""
    from gpucnn.sysinfo import kernel_cache_dir, package_version

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CUPY_CACHE_DIR", raising=False)
    assert kernel_cache_dir() == tmp_path / ".cupy" / "kernel_cache"
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path / "cache"))
    assert kernel_cache_dir() == tmp_path / "cache"
    assert package_version("gpucnn-no-such-distribution") is None


def test_demo_without_a_gpu_leaves_no_new_folder(tmp_path, capsys, monkeypatch):
    def no_gpu(device):
        raise GpuUnavailableError("no CUDA device")

    monkeypatch.setattr(gpucnn.demo, "get_backend", no_gpu)
    code, _, err = run(capsys, "demo", "--device", "cuda", "--out", str(tmp_path / "runs" / "demo"))
    assert_one_line_error(code, err, "no CUDA device")
    assert list(tmp_path.iterdir()) == []


def test_info(capsys):
    code, text, _ = run(capsys, "info")
    assert code == 0 and "device cpu" in text and "kernel cache" in text


def test_help_everywhere():
    for argv in ([], ["train"], ["eval"], ["predict"], ["summary"], ["demo"], ["info"]):
        result = subprocess.run(
            [sys.executable, "-m", "gpucnn", *argv, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and "usage: gpucnn" in result.stdout


def test_gpucnn_help_lists_the_commands(capsys):
    """`gpucnn --help` is the command's own help (an option alone otherwise means `train`)."""
    code, text, _ = run(capsys, "--help")
    assert code == 0 and text.startswith("usage: gpucnn [-h] COMMAND")
    for command in ("train", "eval", "predict", "summary", "demo", "info", "download", "bench"):
        assert f"    {command} " in text


def test_usage_errors_are_one_line_with_status_2(capsys):
    """A bad option or value is argparse's message on one line and exit status 2."""
    code, text, err = run(capsys, "train", "--epochs", "two")
    assert code == 2 and text == ""
    assert err == "gpucnn train: error: argument --epochs: invalid int value: 'two'\n"
    code, _, err = run(capsys, "eval", "--checkpoint", "m.npz", "--no-such-option")
    assert code == 2 and err.count("\n") == 1 and "--no-such-option" in err


def test_the_resume_hint_needs_the_runs_checkpoint(tmp_path):
    """An --out folder that is there but holds no model.npz yet has nothing to resume."""
    from gpucnn.cli import resume_hint

    rerun = "no checkpoint was written yet: rerun without --resume"
    assert resume_hint(None) == rerun and resume_hint(tmp_path) == rerun
    (tmp_path / "metrics.json").write_text("{}")
    assert resume_hint(tmp_path) == rerun
    (tmp_path / "model.npz").write_bytes(b"")
    assert resume_hint(tmp_path) == "continue the training run with --resume"


def test_every_option_with_a_default_says_it_in_its_help():
    """`gpucnn summary` shows tutorial-mnist while `gpucnn train` trains tutorial-lines, and
    neither summary's --model, demo's --out nor bench's --device said what they default to."""
    import argparse

    from gpucnn.cli import build_parser

    commands = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    silent = [
        f"{name} {action.option_strings[-1]}"
        for name, parser in commands.items()
        for action in parser._actions
        if action.option_strings
        and action.default not in (None, False, True, argparse.SUPPRESS)
        and "default" not in (action.help or "")
    ]
    assert silent == []


@pytest.mark.parametrize(
    "value, traceback", [("0", False), ("", False), ("1", True), ("yes", True)]
)
def test_gpucnn_debug_shows_the_traceback_only_when_set_on(
    capsys, monkeypatch, tmp_path, value, traceback
):
    """Run in a fresh folder: in one holding the default --out of a finished run (as the
    README's first command, `gpucnn train`, leaves it) train refused that first."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPUCNN_DEBUG", value)
    argv = ["train", "--train-size", "0"]
    if traceback:
        with pytest.raises(ValueError, match="--train-size must be at least 1"):
            main(argv)
    else:
        assert_one_line_error(*run(capsys, *argv)[::2], "--train-size must be at least 1")


def _saved(tmp_path, name, image):
    image.save(tmp_path / name)
    return tmp_path / name


def test_predict_scores_the_eval_mode_model(tmp_path, Image):
    """A model with dropout and batch norm classifies in eval mode (running statistics, no
    dropout): the same image gets the same probability, the eval-mode softmax, each time."""
    from gpucnn.checkpoint import save_checkpoint
    from gpucnn.nn.zoo import build_model, model_spec
    from gpucnn.predict import predict_files

    rng = np.random.default_rng()
    model = build_model("fashion-net", rng=int(rng.integers(2**31)))
    meta = {"mean": 70.0, "std": 90.0, "input_range": 255.0, "classes": list("abcdefghij")}
    path = save_checkpoint(tmp_path / "m.npz", model, model_spec("fashion-net"), meta=meta)
    images = rng.integers(0, 256, (2, 28, 28)).astype(np.uint8)
    paths = [_saved(tmp_path, f"{i}.png", Image.fromarray(a)) for i, a in enumerate(images)]
    x = ((images[:, None] - 70.0) / 90.0).astype(np.float32)
    want = _softmax(model.eval()(x)).max(axis=1)
    for _ in range(2):
        got = [prob for *_, prob in predict_files(path, paths)]
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_predict_gives_probabilities_for_logits_past_float32s_exp(tmp_path, Image):
    """Logits in the thousands (a confident model) still give probabilities in [0, 1], not
    NaN from an exp() that overflowed."""
    from gpucnn import nn
    from gpucnn.checkpoint import save_checkpoint
    from gpucnn.nn.zoo import build_model, model_spec
    from gpucnn.predict import predict_files

    rng = np.random.default_rng()
    model = build_model("tutorial-lines", rng=int(rng.integers(2**31)))
    last = [m for _, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    last.bias.data += rng.uniform(1000.0, 3000.0, last.bias.data.shape).astype(np.float32)
    path = save_checkpoint(tmp_path / "m.npz", model, model_spec("tutorial-lines"))
    image = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    ((_, _, prob),) = predict_files(path, _saved(tmp_path, "x.png", Image.fromarray(image)))
    x = (image[None, None] / np.float32(255.0)).astype(np.float32)
    assert prob == pytest.approx(_softmax(model(x)).max(), rel=1e-5)


def test_images_of_every_depth_and_with_transparency_load_as_their_grey_levels(tmp_path, Image):
    """A 16-bit image is scaled by its range, not clipped to 8 bits (black and white); ink whose
    opacity is the pixel value, on a transparent page, is the same picture as the grey one."""
    from gpucnn.predict import load_image

    grey = np.random.default_rng().integers(0, 256, (8, 8)).astype(np.uint8)
    want = grey / np.float32(255)
    files = {
        "8-bit": Image.fromarray(grey),
        "16-bit": Image.fromarray(grey.astype(np.uint16) * 257),
        "16-bit, as older Pillows open it": Image.fromarray(grey.astype(np.int32) * 257),
        "float": Image.fromarray(want.astype(np.float32)),
        "grey and alpha": Image.merge(
            "LA", [Image.fromarray(np.full_like(grey, 255)), Image.fromarray(grey)]
        ),
        "rgb and alpha": Image.fromarray(np.stack([np.full_like(grey, 255)] * 3 + [grey], -1)),
    }
    transparent = Image.fromarray(np.full((8, 8), 30000, np.uint16))
    transparent.save(tmp_path / "transparent.png", transparency=30000)
    np.testing.assert_array_equal(load_image(tmp_path / "transparent.png", (1, 8, 8)), 0)
    for kind, image in files.items():
        suffix = ".png" if image.mode in ("L", "I;16", "LA", "RGBA") else ".tiff"
        got = load_image(_saved(tmp_path, f"{kind}{suffix}", image), (1, 8, 8))
        np.testing.assert_allclose(got[0], want, atol=1 / 255 + 1e-6, err_msg=kind)
        rgb = load_image(tmp_path / f"{kind}{suffix}", (3, 8, 8))
        assert rgb.shape == (3, 8, 8), kind
        np.testing.assert_allclose(rgb[0], want, atol=1 / 255 + 1e-6, err_msg=kind)


def test_images_of_every_depth_are_resized_alike_to_the_models_height_and_width(tmp_path, Image):
    """An image of another size is resized bilinearly to (H, W), which need not be square:
    8-bit, 16-bit and float files of one picture give the same input, as grey or as RGB."""
    from gpucnn.predict import load_image

    rng = np.random.default_rng()
    grey = rng.integers(0, 256, (9, 8)).astype(np.uint8)
    h = int(rng.integers(3, 7))
    w = h + int(rng.choice([-1, 1]))  # not square: (H, W) must not be taken as (W, H)
    want = np.asarray(
        Image.fromarray(grey / np.float32(255)).resize((w, h), Image.Resampling.BILINEAR)
    )
    files = {
        "8-bit.png": Image.fromarray(grey),
        "16-bit.png": Image.fromarray(grey.astype(np.uint16) * 257),
        "float.tiff": Image.fromarray(grey / np.float32(255)),
        "rgb.png": Image.fromarray(np.stack([grey] * 3, -1)),
    }
    for name, image in files.items():
        got = load_image(_saved(tmp_path, name, image), (1, h, w))
        assert got.shape == (1, h, w), name
        np.testing.assert_allclose(got[0], want, atol=1.5 / 255, err_msg=name)
        rgb = load_image(tmp_path / name, (3, h, w))
        assert rgb.shape == (3, h, w), name
        np.testing.assert_allclose(rgb, np.stack([want] * 3), atol=1.5 / 255, err_msg=name)


def test_float_images_are_clipped_and_a_transparent_grey_level_is_black(tmp_path, Image):
    """A float image's values past [0, 1] are clipped to it; an 8-bit grey image whose
    transparency is one grey level (PNG's tRNS chunk) has that level laid on black."""
    from gpucnn.predict import load_image

    rng = np.random.default_rng()
    values = rng.uniform(-1.0, 2.0, (6, 6)).astype(np.float32)
    image = _saved(tmp_path, "float.tiff", Image.fromarray(values))
    np.testing.assert_allclose(load_image(image, (1, 6, 6))[0], np.clip(values, 0, 1), atol=1e-7)
    grey = rng.integers(0, 256, (6, 6)).astype(np.uint8)
    key = int(grey[2, 3])
    Image.fromarray(grey).save(tmp_path / "keyed.png", transparency=key)
    want = np.where(grey == key, 0, grey) / np.float32(255)
    np.testing.assert_allclose(load_image(tmp_path / "keyed.png", (1, 6, 6))[0], want, atol=1e-7)


def test_an_images_exif_orientation_is_applied(tmp_path, Image):
    """A phone stores a portrait photo's pixels on their side, with an EXIF Orientation tag:
    the image classified is the one a viewer shows, upright."""
    from gpucnn.predict import load_image

    upright = np.zeros((8, 8), np.uint8)
    upright[:, 5] = np.random.default_rng().integers(128, 256, 8)  # a vertical line
    stored = Image.fromarray(np.rot90(upright).copy())  # a horizontal one, on its side
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to show
    stored.save(tmp_path / "portrait.png", exif=exif)
    got = load_image(tmp_path / "portrait.png", (1, 8, 8))[0]
    np.testing.assert_allclose(got, upright / np.float32(255), atol=1e-7)


def test_errors_are_one_line_even_with_newlines_or_no_message(capsys):
    """A message over several lines is joined into one; an error without a message is named
    by its type rather than leaving "error: " with nothing after it."""
    from gpucnn.cli import run_reporting_errors

    def raising(err):
        def fn():
            raise err

        return fn

    assert run_reporting_errors("prog", raising(ValueError("first\n   second\tthird "))) == 2
    assert capsys.readouterr().err == "prog: error: first second third\n"
    assert run_reporting_errors("prog", raising(OSError())) == 2
    assert capsys.readouterr().err == "prog: error: OSError\n"


def test_sigterm_is_handled_only_while_a_command_runs(capsys):
    """Once main() returns, SIGTERM has its handler of before again (a caller's, or the
    default that ends the process) rather than raising KeyboardInterrupt in the caller; off
    the main thread, where no handler can be set, the command runs as it is."""
    from gpucnn.cli import run_reporting_errors

    before = signal.getsignal(signal.SIGTERM)
    assert run(capsys, "info")[0] == 0
    assert signal.getsignal(signal.SIGTERM) is before
    statuses = []
    thread = threading.Thread(target=lambda: statuses.append(run_reporting_errors("p", lambda: 3)))
    thread.start()
    thread.join()
    assert statuses == [3] and capsys.readouterr().err == ""


def test_an_interruption_outside_training_has_no_resume_hint(capsys, monkeypatch):
    """--resume is a hint for `gpucnn train` alone."""

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("gpucnn.sysinfo.describe", interrupted)
    code, _, err = run(capsys, "info")
    assert code == 130 and err == "gpucnn: interrupted\n"


def test_running_out_of_memory_is_one_line(capsys, tmp_path, monkeypatch):
    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.28 TiB for an array with shape (10000000000,)")

    monkeypatch.setattr(gpucnn.train, "load_dataset", too_big)
    code, _, err = run(capsys, "train", "--out", str(tmp_path))
    assert_one_line_error(code, err, "out of memory: Unable to allocate 7.28 TiB")


@pytest.mark.parametrize(
    "damage", ["truncated", "not an image", "broken chunk length", "too many pixels"]
)
def test_error_predict_on_a_damaged_image_names_the_file(
    lines_run, tmp_path, capsys, Image, monkeypatch, damage
):
    out, _ = lines_run
    noise = np.random.default_rng().integers(0, 256, (64, 64)).astype(np.uint8)
    image = _saved(tmp_path, "cut.png", Image.fromarray(noise))
    reasons = {
        "not an image": "not an image Pillow can read",
        "broken chunk length": "broken PNG file",  # Pillow's SyntaxError, a traceback before
        "too many pixels": "exceeds limit",  # its DecompressionBombError, a traceback before
    }
    if damage == "truncated":
        image.write_bytes(image.read_bytes()[:2000])  # half of the pixel data gone
    elif damage == "not an image":
        image.write_text("a note saved with the wrong name\n")
    elif damage == "broken chunk length":
        data = bytearray(image.read_bytes())
        at = data.index(b"IDAT") - 4
        data[at : at + 4] = (4).to_bytes(4, "big")  # the pixel data's length field
        image.write_bytes(bytes(data))
    else:  # more than twice the limit: Pillow refuses (as a 48 KB PNG of 20000 x 20000 would be)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 3)
    code, _, err = run(capsys, "predict", "--checkpoint", str(out / "model.npz"), str(image))
    assert_one_line_error(code, err, str(image), reasons.get(damage, ""))


def test_predict_of_a_large_image_prints_no_pillow_warning(lines_run, tmp_path, capsys, Image):
    """Past half Pillow's pixel limit (89M pixels) it warns of a decompression bomb: predict
    reads the image once and scales it down, so the result comes alone, without that warning."""
    out, _ = lines_run
    noise = np.random.default_rng().integers(0, 256, (64, 64)).astype(np.uint8)
    image = _saved(tmp_path, "large.png", Image.fromarray(noise))
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)  # 4096 pixels: warned, not refused
        warnings.simplefilter("error")  # any warning fails
        code, printed, err = run(
            capsys, "predict", "--checkpoint", str(out / "model.npz"), str(image)
        )
    assert code == 0 and err == "" and "large.png" in printed


def test_error_predict_without_pillow(lines_run, capsys, monkeypatch):
    out, _ = lines_run
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    code, _, err = run(capsys, "predict", "--checkpoint", str(out / "model.npz"), "x.png")
    assert_one_line_error(code, err, "needs Pillow", "pip install 'gpucnn[cli]'")


def test_error_demo_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    code, _, err = run(capsys, "demo", "--out", str(tmp_path / "demo"))
    assert_one_line_error(code, err, "need matplotlib", "pip install 'gpucnn[cli]'")


def test_train_without_matplotlib_says_how_to_get_pictures(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = ("--train-size", "64", "--test-size", "32", "--epochs", "1", "--no-progress")
    code, _, err = run(capsys, "train", *args, "--out", str(tmp_path))
    assert code == 0 and (tmp_path / "model.npz").exists()
    assert err.count("pip install 'gpucnn[cli]'") == 1, err


def test_a_reader_that_leaves_early_stops_the_command_quietly(tmp_path):
    """``gpucnn ... | head -1``: the broken pipe ends the command without an error message,
    also from what is printed after it (at exit, here), which goes nowhere."""
    script = (
        "import atexit, sys\n"
        "from gpucnn.cli import run_reporting_errors\n"
        "atexit.register(print, 'done')\n"
        "def lines():\n"
        "    for i in range(100000):\n"
        "        print('line', i)\n"
        "sys.exit(run_reporting_errors('gpucnn', lines))\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    assert writer.stdout.readline() == b"line 0\n"
    writer.stdout.close()  # as head does after its line
    assert writer.wait(timeout=60) == 1 and writer.stderr.read() == b""


def test_error_unknown_model(capsys):
    assert_one_line_error(*run(capsys, "train", "--model", "resnet")[::2], "invalid choice")


def test_error_model_does_not_fit_dataset(capsys, tmp_path):
    code, _, err = run(
        capsys, "train", "--model", "tutorial-mnist", "--dataset", "lines", "--out", str(tmp_path)
    )
    assert_one_line_error(code, err, "try --model tutorial-lines")


def test_no_model_is_suggested_when_the_datasets_own_does_not_fit_either(capsys, tmp_path):
    """32x32 images fit no zoo model: the hint must not send the user to another misfit."""
    rng = np.random.default_rng(0)
    split = [
        (rng.integers(0, 256, (n, 32, 32), dtype=np.uint8), np.arange(n) % 10) for n in (20, 10)
    ]
    write_idx_dataset(tmp_path / "data", *split)
    argv = ["--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "data")]
    code, _, err = run(capsys, "train", *argv, "--model", "fashion-net", "--out", str(tmp_path))
    assert_one_line_error(code, err, "dataset 'fashion-mnist' has (1, 32, 32) with 10")
    assert "--model" not in err


def test_error_checkpoint_evaluated_on_another_dataset(capsys, tmp_path):
    """eval has no --model: its hint names the dataset the checkpoint was trained on."""
    data = write_fake_idx_dataset(tmp_path / "data", 32, 16)
    argv = ["--dataset", "mnist", "--data-dir", str(data), "--out", str(tmp_path), "--no-progress"]
    assert run(capsys, "train", "--epochs", "1", *argv)[0] == 0
    code, _, err = run(
        capsys, "eval", "--checkpoint", str(tmp_path / "model.npz"), "--dataset", "lines"
    )
    assert_one_line_error(code, err, "dataset 'lines' has (1, 8, 8)", "it was trained on mnist")
    assert "--model" not in err


def test_error_negative_seed_names_the_option(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--seed", "-1", "--out", str(tmp_path))
    assert_one_line_error(code, err, "--seed must be >= 0, got -1")


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--lr", "-1", "--lr must be non-negative and finite, got -1.0"),
        ("--lr", "nan", "--lr must be non-negative and finite, got nan"),
        ("--momentum", "-0.5", "--momentum must be non-negative and finite, got -0.5"),
        ("--weight-decay", "inf", "--weight-decay must be non-negative and finite, got inf"),
        ("--label-smoothing", "2", "--label-smoothing must lie in [0, 1], got 2.0"),
        ("--epochs", "0", "--epochs must be >= 1, got 0"),
        ("--batch-size", "-4", "--batch-size must be >= 1, got -4"),
    ],
)
def test_error_numbers_out_of_range_name_the_option(capsys, tmp_path, option, value, message):
    """They named the optimizer's or the loss's argument ('learning rate must be ...',
    'label_smoothing must ...', 'epochs and batch size must ...'), once the data was loaded."""
    code, text, err = run(capsys, "train", option, value, "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, message)
    assert text == ""


def test_error_augmentation_the_labels_do_not_allow(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--augment", "flip", "--out", str(tmp_path))
    assert_one_line_error(code, err, "'flip' is not available for dataset 'lines'", "allows: none")


def test_error_training_diverges(capsys, tmp_path):
    code, _, err = run(
        capsys, "train", "--lr", "1e30", "--epochs", "1", "--out", str(tmp_path), "--no-progress"
    )
    assert_one_line_error(code, err, "the training loss became", "try a lower learning rate")


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_weights_that_diverge_in_the_last_step_are_one_line_without_numpys_warnings(
    capsys, tmp_path
):
    """The training loss stays finite but the last update makes the weights overflow: the
    evaluation reports it (its loss is NaN), in one line. NumPy's overflow warnings came before
    it, from the evaluation (outside the training's np.errstate) and from the optimizer's slices
    on other threads (each thread has its own np.errstate)."""
    write_fake_idx_dataset(tmp_path, n_train=100, n_test=100)
    common = ["--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--epochs", "1"]
    code, _, err = run(
        capsys, "train", *common, "--lr", "1e6", "--no-progress", "--out", str(tmp_path / "run")
    )
    assert_one_line_error(code, err, "try a lower learning rate")


def test_error_missing_data(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCNN_DATA", str(tmp_path))
    code, _, err = run(capsys, "train", "--dataset", "fashion-mnist", "--out", str(tmp_path))
    assert_one_line_error(code, err, "fashion-mnist not found", "apt install dataset-fashion-mnist")


def test_error_bad_checkpoint(capsys, tmp_path):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"PK\x03\x04 garbage")
    assert_one_line_error(*run(capsys, "eval", "--checkpoint", str(bad))[::2], str(bad))
    code, _, err = run(capsys, "predict", "--checkpoint", str(tmp_path / "none.npz"), "x.png")
    assert_one_line_error(code, err, "no such checkpoint")


def test_error_checkpoint_that_is_a_folder_names_the_file_in_it(lines_run, capsys, tmp_path):
    """A run's folder given as --checkpoint is named as a folder (it was reported as a corrupt
    or truncated checkpoint), with the run's model.npz as the hint where there is one."""
    folder = lines_run[0]
    code, _, err = run(capsys, "eval", "--checkpoint", str(folder))
    assert_one_line_error(code, err, "is a folder", f"did you mean {folder / 'model.npz'}?")
    assert "corrupt" not in err
    code, _, err = run(capsys, "predict", "--checkpoint", str(tmp_path), "x.png")
    assert_one_line_error(code, err, f"{tmp_path}: is a folder, not a checkpoint file")
    assert "did you mean" not in err


def test_error_resume_without_checkpoint(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--resume", "--out", str(tmp_path))
    assert_one_line_error(code, err, "no such checkpoint")


@pytest.mark.parametrize("below", ["", "sub"])
def test_error_out_not_a_folder_fails_before_training(capsys, tmp_path, below):
    """A --out that cannot be a folder (a file, or one on its path) is refused before the first
    epoch, as a file (it said "cannot write files in that folder (File exists)")."""
    file = tmp_path / "metrics.json"
    file.write_text("{}")
    out = file / below if below else file
    code, text, err = run(capsys, "train", "--epochs", "2", "--out", str(out), "--no-progress")
    where = f"{file} " if below else ""
    assert_one_line_error(code, err, f"--out {out}: {where}is a file, not a folder")
    assert "epoch" not in text and file.read_text() == "{}"


def test_a_run_that_fails_before_training_leaves_no_new_folder(capsys, tmp_path):
    """A failed run (missing data, here) left the --out folders it had made, empty; an --out
    that was there before is kept, empty or not."""
    out = tmp_path / "runs" / "run"
    missing = ["--dataset", "mnist", "--data-dir", str(tmp_path / "no-data"), "--no-progress"]
    assert_one_line_error(*run(capsys, "train", *missing, "--out", str(out))[::2], "not found")
    assert list(tmp_path.iterdir()) == []
    out.mkdir(parents=True)
    assert_one_line_error(*run(capsys, "train", *missing, "--out", str(out))[::2], "not found")
    assert out.is_dir()


def test_an_out_folder_that_cannot_be_made_is_named_and_leaves_no_new_folder(capsys, tmp_path):
    """An --out whose last name is longer than a file name may be (255 bytes): the folders above
    it, made before its own mkdir failed, were left behind (their removal stopped at the one
    never made), and the error, raised again while looking for a file in the way, lost --out."""
    out = tmp_path / "runs" / "run" / ("x" * 300)
    code, text, err = run(capsys, "train", "--epochs", "1", "--out", str(out), "--no-progress")
    assert_one_line_error(code, err, f"--out {out}: cannot write files in that folder (File name")
    assert "epoch" not in text and list(tmp_path.iterdir()) == []


def test_the_progress_bar_is_closed_before_an_interruption_or_error_is_reported(
    capsys, tmp_path, monkeypatch
):
    """On a terminal the bar was left open when Ctrl-C (or an error) stopped an epoch: the
    one-line report was written on the bar's line, and the bar's clean-up at exit then erased
    it. The bar is now closed first, which clears its line."""
    events = []

    class Bar:
        def update(self, n): ...

        def set_postfix(self, **kwargs): ...

        def close(self):
            events.append("closed")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def diverged(*args, **kwargs):
        raise ValueError("the training loss became nan")

    monkeypatch.setattr(gpucnn.train, "_progress_bar", lambda *args: Bar())
    for stop, code in ((interrupted, 130), (diverged, 2)):
        events.clear()
        monkeypatch.setattr(gpucnn.train, "train_epoch", stop)
        out = tmp_path / stop.__name__
        assert run(capsys, "train", "--epochs", "1", "--out", str(out))[0] == code
        assert events == ["closed"]


TRAIN_EPOCH = gpucnn.train.train_epoch


def interrupt_in_epoch(monkeypatch, stop: int) -> None:
    """Ctrl-C in the ``stop``-th epoch from now: that training pass raises KeyboardInterrupt."""
    calls = []

    def train_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop:
            raise KeyboardInterrupt
        return TRAIN_EPOCH(*args, **kwargs)

    monkeypatch.setattr(gpucnn.train, "train_epoch", train_epoch)


def test_interrupted_training_hints_resume_only_once_a_checkpoint_exists(
    capsys, tmp_path, monkeypatch
):
    """Ctrl-C in epoch 1 (default --out): nothing to resume yet; in epoch 2: --resume, which
    then finishes the run."""
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--epochs", "2", "--train-size", "128", "--test-size", "64", "--no-progress"]
    interrupt_in_epoch(monkeypatch, 1)
    code, _, err = run(capsys, *argv)
    assert code == 130 and "no checkpoint was written yet: rerun without --resume" in err
    interrupt_in_epoch(monkeypatch, 2)
    code, _, err = run(capsys, *argv)
    assert code == 130 and "(continue the training run with --resume)" in err
    monkeypatch.setattr(gpucnn.train, "train_epoch", TRAIN_EPOCH)
    code, text, _ = run(capsys, *argv, "--resume")
    assert code == 0 and "epoch 2/2" in text
    assert (tmp_path / "runs" / "lines-tutorial-lines" / "model.npz").is_file()


def test_metrics_json_describes_the_checkpoint_after_an_interruption(capsys, tmp_path, monkeypatch):
    """metrics.json is written with each epoch's checkpoint: after Ctrl-C in epoch 2 it held
    nothing (a new run) or the session before a --resume, while model.npz held the last epoch."""
    common = ["--train-size", "64", "--test-size", "32", "--no-progress", "--out", str(tmp_path)]
    for argv, stop in ((["--epochs", "3"], 2), (["--epochs", "4", "--resume"], 3)):
        interrupt_in_epoch(monkeypatch, stop)
        assert run(capsys, "train", *argv, *common)[0] == 130
        epochs_done = load_checkpoint(tmp_path / "model.npz").epoch
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        assert [h["epoch"] for h in metrics["history"]] == list(range(1, epochs_done + 1))
        assert metrics["test_accuracy"] == metrics["history"][-1]["test_accuracy"]
        assert metrics["train_seconds"] == sum(h["seconds"] for h in metrics["history"])
        assert 0 < metrics["wall_seconds"]
    assert epochs_done == 3  # 1 in the first session, 2 in the resumed one


def test_a_new_run_does_not_overwrite_a_finished_one_unless_asked(capsys, tmp_path, monkeypatch):
    """A second ``gpucnn train`` into the same folder is refused, the first run's checkpoint
    untouched; ``--overwrite`` starts over, removing the old run's files once the new run's
    settings and data are checked (a bad one keeps them), before its first epoch (so a Ctrl-C
    then does not hint --resume of the old run)."""
    common = ["--train-size", "64", "--test-size", "32", "--no-progress", "--out", str(tmp_path)]
    assert run(capsys, "train", "--epochs", "2", *common)[0] == 0
    first = (tmp_path / "model.npz").read_bytes()
    code, _, err = run(capsys, "train", "--epochs", "1", *common)
    assert_one_line_error(code, err, f"{tmp_path} already holds a training run", "--overwrite")
    assert (tmp_path / "model.npz").read_bytes() == first
    code, _, err = run(capsys, "train", "--resume", "--overwrite", *common)
    assert_one_line_error(code, err, "not both")
    for bad in (
        ["--dataset", "mnist", "--data-dir", str(tmp_path)],  # no data there
        ["--model", "tutorial-mnist", "--dataset", "lines"],  # does not fit
        ["--lr", "-1"],  # the optimizer's
        ["--label-smoothing", "1.5"],  # the loss's
    ):
        code, _, err = run(capsys, "train", "--overwrite", *bad, *common)
        assert code == 2 and (tmp_path / "model.npz").read_bytes() == first, (bad, err)  # kept

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gpucnn.train, "train_epoch", interrupted)
    code, _, err = run(capsys, "train", "--epochs", "1", "--overwrite", *common)
    assert code == 130 and "no checkpoint was written yet" in err
    assert not {"model.npz", "metrics.json", "curves.png"} & {p.name for p in tmp_path.iterdir()}
    monkeypatch.undo()
    assert run(capsys, "train", "--epochs", "1", "--overwrite", *common)[0] == 0
    assert len(json.loads((tmp_path / "metrics.json").read_text())["history"]) == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interruption_while_saving_waits_for_the_checkpoint_and_its_metrics(
    capsys, tmp_path, monkeypatch, signum
):
    """Ctrl-C or SIGTERM (timeout, a job scheduler) while epoch 2's checkpoint is being written,
    or just after: it waits until metrics.json is written too (it came between them, which left
    the metrics an epoch behind), then the Ctrl-C exit and hint; no temporary file is left, and
    SIGTERM's handler of before (here the test's, which must not be reached) is put back."""
    save, saves = gpucnn.train.save_checkpoint, []

    def interrupted_while_saving(path, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            atomic_write(tmp_path / "scratch", lambda f: os.kill(os.getpid(), signum))
        save(path, *args, **kwargs)
        if len(saves) == 2:
            os.kill(os.getpid(), signum)

    def unhandled(signum, frame):  # what SIGTERM would do here without the command's handler
        pytest.fail("SIGTERM reached the test's handler, not the command's")

    monkeypatch.setattr(gpucnn.train, "save_checkpoint", interrupted_while_saving)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        common = ["--epochs", "3", "--train-size", "64", "--test-size", "32", "--no-progress"]
        code, _, err = run(capsys, "train", *common, "--out", str(tmp_path))
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the command put it back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 130 and "(continue the training run with --resume)" in err
    assert load_checkpoint(tmp_path / "model.npz").epoch == 2
    assert len(json.loads((tmp_path / "metrics.json").read_text())["history"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_error_resume_that_would_change_the_run(capsys, tmp_path):
    """--resume goes on with the stored recipe: an option that would change it, or fewer epochs
    than already done, is an error rather than silently ignored. The same values are fine."""
    common = ["--train-size", "64", "--test-size", "32", "--out", str(tmp_path), "--no-progress"]
    assert run(capsys, "train", "--epochs", "2", "--lr", "0.05", *common)[0] == 0
    code, _, err = run(capsys, "train", "--resume", "--lr", "0.9", "--batch-size", "7", *common)
    assert_one_line_error(code, err, "--lr 0.9 (the run's: 0.05)", "--batch-size 7 (the run's: 32)")
    code, _, err = run(capsys, "train", "--resume", "--epochs", "1", *common)
    assert_one_line_error(code, err, "--epochs 1: the run has already done 2 epochs")
    code, _, err = run(capsys, "train", "--resume", "--seed", "3", *common)
    assert_one_line_error(code, err, "--seed 3 (the run's: 0)")
    code, text, _ = run(capsys, "train", "--resume", "--epochs", "3", "--lr", "0.05", *common)
    assert code == 0 and "epoch 3/3" in text


def test_error_momentum_for_an_optimizer_without_it(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--optimizer", "adam", "--momentum", "0.99")
    assert_one_line_error(code, err, "--momentum is SGD's; optimizer 'adam' has none")
    out = ["--out", str(tmp_path), "--no-progress", "--train-size", "64", "--test-size", "32"]
    assert run(capsys, "train", "--optimizer", "adam", "--epochs", "1", *out)[0] == 0
    code, _, err = run(capsys, "train", "--resume", "--momentum", "0.9", "--epochs", "2", *out)
    assert_one_line_error(code, err, "optimizer 'adam' has none")  # the run's, not the recipe's


@pytest.mark.parametrize("option", ["--train-size", "--test-size"])
@pytest.mark.parametrize("dataset", ["lines", "fashion-mnist"])
def test_error_subset_sizes_below_one(capsys, tmp_path, option, dataset):
    argv = ["train", "--dataset", dataset, "--data-dir", str(tmp_path), "--out", str(tmp_path)]
    for size in ("0", "-250"):
        code, _, err = run(capsys, *argv, option, size)
        assert_one_line_error(code, err, f"{option} must be at least 1, got {size}")


def test_error_subset_larger_than_the_files(capsys, tmp_path):
    data = write_fake_idx_dataset(tmp_path / "data", 8, 4)
    argv = ["train", "--dataset", "mnist", "--data-dir", str(data), "--out", str(tmp_path)]
    code, _, err = run(capsys, *argv, "--test-size", "5")
    assert_one_line_error(code, err, "--test-size 5:", "has only 4 images")


def test_error_eval_with_fewer_test_images_than_the_run_used(capsys, tmp_path):
    """eval takes the test subset from the checkpoint's run; the error names that, not an
    option eval does not have."""
    argv = ["--dataset", "mnist", "--model", "tutorial-mnist", "--out", str(tmp_path)]
    data = write_fake_idx_dataset(tmp_path / "data", 8, 6)
    sizes = ["--train-size", "8", "--test-size", "6", "--epochs", "1", "--no-progress"]
    assert run(capsys, "train", *argv, "--data-dir", str(data), *sizes)[0] == 0
    fewer = write_fake_idx_dataset(tmp_path / "fewer", 8, 4)
    eval_argv = ["eval", "--checkpoint", str(tmp_path / "model.npz"), "--data-dir", str(fewer)]
    code, _, err = run(capsys, *eval_argv)
    assert_one_line_error(
        code,
        err,
        "model.npz was tested on the first 6 test images (its run's --test-size)",
        "t10k-images-idx3-ubyte.gz has only 4",
    )
    code, text, _ = run(
        capsys, "eval", "--checkpoint", str(tmp_path / "model.npz"), "--data-dir", str(data)
    )
    assert code == 0 and "test accuracy" in text and ", 6 mnist test images)" in text


def test_error_cuda_unavailable(capsys, tmp_path, without_cupy):
    code, _, err = run(capsys, "train", "--device", "cuda", "--out", str(tmp_path))
    assert_one_line_error(code, err, "CuPy is not installed")


def test_train_on_each_device_and_eval_on_the_cpu(backend, tmp_path, capsys):
    """A short lines run on every device; its checkpoint evaluates the same on the CPU."""
    argv = ["train", "--device", backend.name, "--epochs", "2", "--train-size", "256"]
    code, text, err = run(
        capsys, *argv, "--test-size", "64", "--out", str(tmp_path), "--no-progress"
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["device"] == backend.name and metrics["test_accuracy"] >= 0.9
    code, text, _ = run(capsys, "eval", "--checkpoint", str(tmp_path / "model.npz"))
    assert code == 0 and f"test accuracy {metrics['test_accuracy']:.4f}" in text


def test_error_cuda_graph_on_the_cpu(capsys, tmp_path, monkeypatch):
    """Refused before the dataset is loaded (Fashion-MNIST's takes seconds), not after."""
    loaded, load = [], gpucnn.train.load_dataset
    monkeypatch.setattr(gpucnn.train, "load_dataset", lambda *a: loaded.append(a) or load(*a))
    code, _, err = run(capsys, "train", "--cuda-graph", "--out", str(tmp_path))
    assert_one_line_error(code, err, "CUDA graph capture needs device 'cuda'", "'cpu'")
    assert loaded == []


@pytest.mark.parametrize("device", KERNEL_BACKENDS)
def test_cuda_graph_trains_as_the_eager_step_does(device, tmp_path, capsys):
    """``--cuda-graph`` on a lines run: the same history as the eager run, to float32 rounding
    (inside the graph the linear layers sum in our GEMM kernel's order)."""
    make_backend(device)
    argv = ["train", "--device", device, "--epochs", "2", "--train-size", "200", "--test-size"]
    histories = []
    for extra, out in (([], tmp_path / "eager"), (["--cuda-graph"], tmp_path / "graph")):
        code, _, err = run(capsys, *argv, "64", "--out", str(out), "--no-progress", *extra)
        assert code == 0, err
        histories.append(json.loads((out / "metrics.json").read_text())["history"])
    for eager, graph in zip(*histories, strict=True):
        # One of the 64 test images may sit at a tie that rounding tips either way.
        assert abs(graph["test_accuracy"] - eager["test_accuracy"]) <= 1 / 64
        assert graph["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-5)

"""The functional API (``gpucnn.functional``, README's ``F``) as a user calls it, on every device:
each op's argument conventions (int or pair stride, "same"/"valid" padding, ``stride=None``)
land on the tutorial's loop reference, and PyTorch's functional ops agree where it is installed.
The layers reach the backends by other routes, so without these tests ``F.relu``,
``F.global_avg_pool2d``, ``F.dropout``, ``padding="valid"`` and ``to_device`` ran nowhere.

Tolerances: float64 inputs, so 1e-12 relative against the float64 reference (the ops sum at
most 2 x 5 x 5 products in another order); PyTorch's float64 ops likewise.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_backend

from gpucnn import functional as F
from gpucnn import reference as ref
from gpucnn import to_device
from gpucnn.backend import backend_of

RTOL = 1e-12


def _pad2(ph: int, pw: int):
    return ((ph, ph), (pw, pw))


def _cases(rng):
    """(name, call F(x...), the reference's answer, torch's call or None) on fresh inputs."""
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 2))  # groups=2: 4 input channels, 2 a group
    b = rng.standard_normal(6)
    w5 = rng.standard_normal((3, 4, 5, 5))
    a, wl, bl = rng.standard_normal((5, 7)), rng.standard_normal((3, 7)), rng.standard_normal(3)
    logits, labels = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    padded_same = ((4, 4), (2, 2))  # 5x5 at dilation (2, 1): d * (k - 1) = 8 and 4, split evenly
    return [
        (
            "conv2d stride pair, int padding, groups",
            lambda d: F.conv2d(d(x), d(w), d(b), stride=(2, 1), padding=1, groups=2),
            ref.conv2d_forward(x, w, b, (2, 1), _pad2(1, 1), (1, 1), 2),
            lambda t, tf: tf.conv2d(t(x), t(w), t(b), stride=(2, 1), padding=1, groups=2),
        ),
        (
            "conv2d padding same, dilation pair",
            lambda d: F.conv2d(d(x), d(w5), padding="same", dilation=(2, 1)),
            ref.conv2d_forward(x, w5, None, (1, 1), padded_same, (2, 1)),
            lambda t, tf: tf.conv2d(t(x), t(w5), padding="same", dilation=(2, 1)),
        ),
        (
            "conv2d padding same, even kernel: the odd pixel at the bottom and right",
            lambda d: F.conv2d(d(x), d(w5[:, :, :2, :4]), d(b[:3]), padding="same"),
            ref.conv2d_forward(x, w5[:, :, :2, :4], b[:3], (1, 1), ((0, 1), (1, 2))),
            lambda t, tf: tf.conv2d(t(x), t(w5[:, :, :2, :4]), t(b[:3]), padding="same"),
        ),
        (
            "conv2d padding pair",
            lambda d: F.conv2d(d(x), d(w5[:, :, :2, :3]), padding=(0, 2)),
            ref.conv2d_forward(x, w5[:, :, :2, :3], None, (1, 1), _pad2(0, 2)),
            lambda t, tf: tf.conv2d(t(x), t(w5[:, :, :2, :3]), padding=(0, 2)),
        ),
        (
            "conv2d padding valid, dilation 2",
            lambda d: F.conv2d(d(x), d(w5[:, :, :3, :3]), padding="valid", dilation=2),
            ref.conv2d_forward(x, w5[:, :, :3, :3], None, (1, 1), _pad2(0, 0), (2, 2)),
            lambda t, tf: tf.conv2d(t(x), t(w5[:, :, :3, :3]), padding="valid", dilation=2),
        ),
        (
            "max_pool2d stride None is the kernel",
            lambda d: F.max_pool2d(d(x), 3),
            ref.max_pool2d_forward(x, (3, 3), (3, 3))[0],
            lambda t, tf: tf.max_pool2d(t(x), 3),
        ),
        (
            "max_pool2d padding",
            lambda d: F.max_pool2d(d(x), kernel_size=3, stride=2, padding=1),
            ref.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1))[0],
            lambda t, tf: tf.max_pool2d(t(x), 3, stride=2, padding=1),
        ),
        (
            "avg_pool2d pairs",
            lambda d: F.avg_pool2d(d(x), (2, 3), stride=(1, 2), padding=(1, 0)),
            ref.avg_pool2d_forward(x, (2, 3), (1, 2), (1, 0)),
            lambda t, tf: tf.avg_pool2d(t(x), (2, 3), stride=(1, 2), padding=(1, 0)),
        ),
        (
            "global_avg_pool2d",
            lambda d: F.global_avg_pool2d(d(x)),
            ref.global_avg_pool2d_forward(x),
            lambda t, tf: tf.adaptive_avg_pool2d(t(x), 1)[:, :, 0, 0],
        ),
        ("relu", lambda d: F.relu(d(x)), ref.relu_forward(x), lambda t, tf: tf.relu(t(x))),
        (
            "linear with bias and relu",
            lambda d: F.linear(d(a), d(wl), d(bl), relu=True),
            ref.relu_forward(ref.linear_forward(a, wl, bl)),
            lambda t, tf: tf.relu(tf.linear(t(a), t(wl), t(bl))),
        ),
        (
            "softmax_cross_entropy loss",
            lambda d: F.softmax_cross_entropy(d(logits), d(labels), label_smoothing=0.1)[0],
            ref.softmax_cross_entropy_forward(logits, labels, 0.1)[0],
            lambda t, tf: tf.cross_entropy(t(logits), t(labels), label_smoothing=0.1),
        ),
        (
            "softmax_cross_entropy probabilities",
            lambda d: F.softmax_cross_entropy(d(logits), d(labels))[1],
            ref.softmax_cross_entropy_forward(logits, labels)[1],
            lambda t, tf: tf.softmax(t(logits), dim=1),
        ),
        (
            "dropout: the seed's mask on every device",
            lambda d: F.dropout(d(x), 0.3, seed=12345),
            ref.dropout_forward(x, ref.dropout_mask(x.shape, 0.3, 12345)),
            None,  # PyTorch draws its own mask
        ),
    ]


CASE_NAMES = [case[0] for case in _cases(np.random.default_rng(0))]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_functional_ops_match_the_reference_on_the_inputs_device(name, backend, rng):
    _, call, want, _ = next(case for case in _cases(rng) if case[0] == name)
    got = call(backend.asarray)
    assert backend_of(got) is backend, f"{name}: result on {backend_of(got).name}"
    assert got.dtype == np.float64
    got = backend.to_numpy(got)
    assert got.shape == np.shape(want)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.abs(want).max())


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # its own copy
@pytest.mark.parametrize("name", [n for n in CASE_NAMES if not n.startswith("dropout")])
def test_functional_ops_match_pytorch(name, rng):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")
    _, call, _, theirs = next(case for case in _cases(rng) if case[0] == name)
    want = theirs(torch.from_numpy, torch.nn.functional).numpy()
    got = call(lambda a: a)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.abs(want).max())


def test_to_device_copies_across_devices_and_keeps_an_array_already_there(rng):
    emu = make_backend("cuda-emu")
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert to_device(x, "cpu") is x
    on_emu = to_device(x, "cuda-emu")
    assert backend_of(on_emu) is emu and to_device(on_emu, emu) is on_emu
    back = to_device(on_emu, "cpu")
    assert backend_of(back).name == "cpu" and back.dtype == np.float32
    np.testing.assert_array_equal(back, x)

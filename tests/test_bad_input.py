"""Bad input gets a ValueError/TypeError naming the problem and the shapes, never a wrong answer."""

import re

import numpy as np
import pytest
from conftest import KERNEL_BACKENDS, make_backend

from gpucnn import conv_output_size, nn, optim, reference
from gpucnn import functional as F
from gpucnn.backend import get_backend
from gpucnn.backend.launchers import launching
from gpucnn.checkpoint import load_checkpoint, save_checkpoint
from gpucnn.data.datasets import load_dataset, write_idx_dataset
from gpucnn.data.download import download
from gpucnn.data.idx import read_idx, write_idx
from gpucnn.data.lines import generate_lines
from gpucnn.data.loader import DataLoader
from gpucnn.demo import run_demo
from gpucnn.errors import DeviceMismatchError, GpuUnavailableError
from gpucnn.filters import apply_filters, filter_bank
from gpucnn.gradcheck import gradcheck
from gpucnn.nn.zoo import build_model
from gpucnn.predict import predict_files

X = np.random.default_rng().standard_normal((2, 3, 8, 8)).astype(np.float32)
W = np.random.default_rng().standard_normal((4, 3, 3, 3)).astype(np.float32)
X64 = X.astype(np.float64)
P = nn.Linear(3, 2).parameters()


def _after_forward(layer, x):
    """``layer`` once its forward has run on ``x``, for the checks its backward makes."""
    layer(x)
    return layer


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: F.conv2d(X[0], W), ValueError, r"4-D .*got shape \(3, 8, 8\)"),
        (lambda: F.conv2d(X, W[:, :2]), ValueError, "input has 3 channels"),
        (lambda: F.conv2d(X, np.ones((4, 3, 9, 9), np.float32)), ValueError, "does not fit"),
        (lambda: F.conv2d(X, np.ones((4, 3, 3, 9), np.float32)), ValueError, "would be 6x0"),
        (lambda: F.conv2d(X, W, stride=True), TypeError, "stride must be an int or a pair"),
        (lambda: F.conv2d(X, W, stride=(1, 1, 1)), TypeError, "stride must be an int or a pair"),
        (lambda: F.conv2d(X, W, stride=(True, 1)), TypeError, "stride must be an int or a pair"),
        (lambda: nn.Conv2d(3, 4, 3, padding=(0, False)), TypeError, "padding must be an int or"),
        (lambda: F.max_pool2d(X, (2, True)), TypeError, "kernel_size must be an int or a pair"),
        (lambda: F.conv2d(X, W, stride=0), ValueError, "stride must be positive"),
        (lambda: F.conv2d(X, W, dilation=(1, -1)), ValueError, "dilation must be positive"),
        (lambda: F.conv2d(X, W, padding=-1), ValueError, "non-negative"),
        (lambda: F.conv2d(X, W, padding=(0, -1)), ValueError, "non-negative"),
        (lambda: F.conv2d(X, W, padding="full"), ValueError, "'same' or 'valid'"),
        (lambda: F.conv2d(X, W, stride=2, padding="same"), ValueError, "stride 1"),
        (lambda: F.conv2d(X, W, stride=(1, 2), padding="same"), ValueError, "stride 1"),
        (lambda: F.conv2d(X.astype(np.int32), W), TypeError, "float32 or float64.*int32"),
        (lambda: F.conv2d(X.astype(np.complex64), W), TypeError, "complex64"),
        (lambda: F.conv2d(X, W.astype(np.float64)), TypeError, "dtype float64"),
        (lambda: F.conv2d(X, W, bias=np.zeros(5, np.float32)), ValueError, r"bias.*\(4,\)"),
        (lambda: F.conv2d(X, W, groups=2), ValueError, "channels"),
        (
            lambda: F.conv2d(X, W[:, :1].repeat(5, 0)[:5], groups=3),
            ValueError,
            "5 output channels are not divisible by groups=3",
        ),
        (lambda: F.conv2d(X, W, bias=np.zeros((4, 1), np.float32)), ValueError, r"\(4,\), got"),
        (lambda: F.conv2d(X[None], W), ValueError, r"4-D .*got shape \(1, 2, 3, 8, 8\)"),
        (
            lambda: F.conv2d(X[:, :0], W[:, :0]),
            ValueError,
            r"weight \(4, 0, 3, 3\) has a zero size",
        ),
        (lambda: F.conv2d(X[:, :0], W), ValueError, "input has 0 channels"),
        (lambda: F.conv2d(X, W[:0]), ValueError, r"weight \(0, 3, 3, 3\) has a zero size"),
        (lambda: F.conv2d(X, W[:, :, :0]), ValueError, r"weight \(4, 3, 0, 3\) has a zero"),
        (lambda: F.conv2d(X[:, :, :0], W), ValueError, "does not fit"),
        (lambda: F.conv2d([[1.0]], W), TypeError, "conv2d input must be a NumPy or CuPy array"),
        (
            lambda: nn.CrossEntropyLoss()(X[:, :, 0, 0], [0, 1]),
            TypeError,
            "labels must be a NumPy or CuPy array, got list",
        ),
        (lambda: nn.CrossEntropyLoss()([[0.0]], [0]), TypeError, "logits must be a NumPy or CuPy"),
        (lambda: nn.Linear(3, 2)([[0.0] * 3]), TypeError, "Linear input must be a NumPy or CuPy"),
        (lambda: nn.Flatten()(X.tolist()), TypeError, "Flatten input must be a NumPy or CuPy"),
        (lambda: nn.Parameter([1.0]), TypeError, "Parameter data must be a NumPy or CuPy array"),
        (lambda: conv_output_size(8.5, 3, 1, 0), TypeError, "size must be an int, got 8.5"),
        (lambda: conv_output_size(8, 3, 0, 0), ValueError, "stride must be >= 1, got 0"),
        (lambda: conv_output_size(8, 3, 1, -2), ValueError, "pad_total must be >= 0, got -2"),
        (lambda: F.max_pool2d(X, 9), ValueError, "does not fit"),
        (lambda: nn.MaxPool2d(2, padding=2)(X), ValueError, r"MaxPool2d: padding \(2, 2\)"),
        (
            lambda: nn.GlobalAvgPool2d()(X[0]),
            ValueError,
            r"GlobalAvgPool2d input must be 4-D .*got shape \(3, 8, 8\)",
        ),
        (lambda: F.max_pool2d(X, 2, padding=2), ValueError, "at most half"),
        (lambda: F.max_pool2d(X, 2, padding=(0, -1)), ValueError, "must be non-negative"),
        (lambda: F.avg_pool2d(X, 0), ValueError, "kernel_size must be positive"),
        (lambda: F.linear(X[:, 0, 0], np.ones((2, 5), np.float32)), ValueError, "8 features"),
        (
            lambda: F.linear(X[:, :, 0, 0], W[:, :, 0, 0], relu="no"),
            TypeError,
            "relu must be True or False, got 'no'",
        ),
        (lambda: nn.Conv2d(3, 4, 3)(X, relu=1), TypeError, "relu must be True or False, got 1"),
        (lambda: nn.Linear(3, 2).train("no"), TypeError, "mode must be True or False, got 'no'"),
        (lambda: optim.SGD(P, 0.1, 0.9, nesterov="no"), TypeError, "nesterov must be True or"),
        (
            lambda: optim.Adam(P, betas=None),
            TypeError,
            r"betas must be two numbers in \[0, 1\), such as \(0.9, 0.999\), got None",
        ),
        (lambda: optim.AdamW(P, betas=0.9), TypeError, "betas must be two numbers.*got 0.9"),
        (lambda: optim.Adam(P, betas=(0.9,)), ValueError, r"betas must be two.*got \(0.9,\)"),
        (lambda: optim.Adam(P, betas=(0.9, "x")), ValueError, "betas must be two numbers"),
        (lambda: optim.Adam(P, betas=(0.9, 1.0)), ValueError, "betas must be two numbers"),
        (
            lambda: optim.SGD(P, 0.1, 0.0, nesterov=True),
            ValueError,
            "nesterov momentum needs momentum > 0",
        ),
        (lambda: nn.Conv2d(3, 4, 3, bias="no"), TypeError, "bias must be True or False"),
        (lambda: nn.Linear(3, 2, bias=0), TypeError, "bias must be True or False, got 0"),
        (
            lambda: nn.Conv2d(3, 4, 3, rng="x"),
            TypeError,
            "rng must be a NumPy Generator, an int seed >= 0 or None, got 'x'",
        ),
        (lambda: nn.Linear(3, 2, rng=1.5), TypeError, "rng must be a NumPy Generator.*got 1.5"),
        (lambda: nn.Linear(3, 2, rng=True), TypeError, "rng must be a NumPy Generator.*got True"),
        (lambda: nn.Linear(3, 2, rng=-1), ValueError, "rng: a seed must be >= 0, got -1"),
        (lambda: build_model("tutorial-lines", rng="x"), TypeError, "rng must be a NumPy Gen"),
        (lambda: DataLoader(X, np.zeros(2, int), 1, rng=-2), ValueError, "rng: a seed must be"),
        (lambda: DataLoader(X, np.zeros(2, int), 1, shuffle=1), TypeError, "shuffle must be True"),
        (
            lambda: DataLoader(X, np.zeros(2, int), 1, drop_last="no"),
            TypeError,
            "drop_last must be True or False, got 'no'",
        ),
        (lambda: DataLoader(X, np.zeros(2, int), 1, flip=2), TypeError, "flip must be True or"),
        (lambda: generate_lines(4, rng=[1, -1]), ValueError, "rng: a seed must be >= 0"),
        (lambda: nn.CrossEntropyLoss(check_finite="no"), TypeError, "check_finite must be True"),
        (lambda: nn.CrossEntropyLoss(check_labels=1), TypeError, "check_labels must be True or"),
        (
            lambda: nn.Sequential(nn.ReLU()).backward(X, input_grad="no"),
            TypeError,
            "input_grad must be True or False",
        ),
        (lambda: nn.MaxPool2d(2).backward(X, relu="no"), TypeError, "relu must be True or False"),
        (
            lambda: nn.Sequential(nn.ReLU(), F.relu),
            TypeError,
            "Sequential: layer 1 must be a gpucnn Module, got function",
        ),
        (lambda: nn.Sequential(nn.ReLU())[True], TypeError, "Sequential index must be an int"),
        (lambda: nn.Sequential(nn.ReLU())["0"], TypeError, "Sequential index must be an int"),
        (lambda: nn.Sequential(nn.ReLU())[-2], IndexError, "index -2 is out of range for 1"),
        (
            lambda: nn.Sequential([nn.ReLU()]),
            TypeError,
            "layer 0 must be a gpucnn Module, got list",
        ),
        (lambda: F.dropout(X, 0.5, seed=1.7), TypeError, "seed must be an int, got 1.7"),
        (lambda: F.dropout(X, 0.5, seed="7"), TypeError, "seed must be an int, got '7'"),
        (lambda: F.dropout(X, 0.5, seed=-1), ValueError, r"seed must be in \[0, 2\*\*64\), got -1"),
        (lambda: F.dropout(X, 0.5, seed=2**64), ValueError, r"seed must be in \[0, 2\*\*64\)"),
        (lambda: nn.Dropout(0.5, seed=1.5), TypeError, "seed must be an int, got 1.5"),
        (lambda: nn.Dropout(0.5, seed=True), TypeError, "seed must be an int, got True"),
        (lambda: nn.Dropout(0.5, seed=-1), ValueError, "seed: a seed must be >= 0, got -1"),
        (
            lambda: setattr(nn.Dropout(0.5), "calls", 2.5),
            TypeError,
            "calls must be an int, got 2.5",
        ),
        (lambda: setattr(nn.Dropout(0.5), "calls", -1), ValueError, "calls must be >= 0, got -1"),
        (lambda: setattr(optim.SGD(P, 0.1), "steps", 2.5), TypeError, "steps must be an int, got"),
        (lambda: setattr(optim.Adam(P), "steps", -1), ValueError, "steps must be >= 0, got -1"),
        (lambda: nn.BatchNorm2d(4)(X), ValueError, "got 3 channels"),
        (lambda: nn.Flatten()(X[0, 0, 0]), ValueError, r"feature axis, got shape \(8,\)"),
        (lambda: nn.Flatten()(X[0, 0, 0, 0]), ValueError, r"feature axis, got shape \(\)"),
        (lambda: nn.Dropout(1.0), ValueError, "dropout probability"),
        (lambda: nn.CrossEntropyLoss("0.1"), TypeError, "label_smoothing must be a number"),
        (
            lambda: nn.CrossEntropyLoss(True),
            TypeError,
            "label_smoothing must be a number, got True",
        ),
        (lambda: nn.Dropout("0.5"), TypeError, "dropout probability must be a number, got '0.5'"),
        (lambda: nn.Dropout(True), TypeError, "dropout probability must be a number, got True"),
        (lambda: F.dropout(X, None, seed=1), TypeError, "dropout probability must be a number"),
        (
            lambda: F.linear(X[:, :, 0, 0], W[:, :, 0, 0], np.ones(1, np.float32)),
            ValueError,
            r"bias must have shape \(4,\), got \(1,\)",
        ),
        (lambda: F.conv2d(X, W, groups=True), TypeError, "groups must be an int, got True"),
        (lambda: F.conv2d(X, W, groups=0), ValueError, "groups must be >= 1, got 0"),
        (lambda: F.global_avg_pool2d(X[:, :, :0]), ValueError, "empty planes"),
        (lambda: F.global_avg_pool2d(X[:, :, :, :0]), ValueError, "empty planes"),
        (lambda: nn.GlobalAvgPool2d()(X[:, :, :0]), ValueError, "GlobalAvgPool2d: empty planes"),
        (
            lambda: F.softmax_cross_entropy(X[:0, :, 0, 0], np.zeros(0, int)),
            ValueError,
            "empty batch",
        ),
        (
            lambda: nn.Linear(3, 2).load_state_dict(list(nn.Linear(3, 2).state_dict().items())),
            TypeError,
            "load_state_dict takes a dict, as state_dict.. returns, got list",
        ),
        (lambda: optim.SGD(P, 0.1).load_state_dict(None), TypeError, "optimizer load_state_dict"),
        (
            lambda: optim.StepLR(optim.SGD(P, 0.1), 2).load_state_dict(None),
            TypeError,
            "schedule load_state_dict takes a dict, as state_dict.. returns, got NoneType",
        ),
        (lambda: filter_bank([]), ValueError, "no kernel named"),
        (lambda: filter_bank(5), TypeError, "names must be a kernel name or a list of them, got 5"),
        (lambda: filter_bank([["sharpen"]]), ValueError, r"unknown kernel\(s\) \[\['sharpen'\]\]"),
        (lambda: apply_filters(X[0, :1], "sharpen"), ValueError, r"2-D \(H, W\), got shape \(1, 8"),
        (lambda: apply_filters(X[0, 0] * 1j, "sharpen"), TypeError, "real numbers, got dtype comp"),
        (lambda: apply_filters("abc", "sharpen"), TypeError, "image must hold real numbers"),
        (lambda: get_backend(["cpu"]), ValueError, r"unknown device \['cpu'\]; expected one of"),
        (lambda: load_dataset(["lines"]), ValueError, r"unknown dataset \['lines'\]; choose one"),
        (lambda: build_model(["tutorial-lines"]), ValueError, r"unknown model \['tutorial-lines'"),
        (lambda: optim.SGD([], lr=0.1), ValueError, "optimizer got an empty parameter list"),
        (
            lambda: nn.Conv2d(4, 6, 3, groups=4),
            ValueError,
            "in_channels 4 and out_channels 6 must be divisible by groups=4",
        ),
        (
            lambda: _after_forward(nn.ReLU(), X).backward(X.tolist()),
            TypeError,
            "ReLU.backward: grad_out must be an array, got list",
        ),
        (lambda: write_idx("/dev/null", X, compress="no"), TypeError, "compress must be True or"),
        (
            lambda: write_idx_dataset("/dev/null/folder", (X, X), (X, X), compress=2),
            TypeError,
            "compress must be True or False, got 2",
        ),
        (
            lambda: write_idx("/dev/null", X.astype(np.float16)),
            TypeError,
            "IDX cannot store.*float16",
        ),
        (
            lambda: gradcheck(lambda x: x, [X.astype(np.float64)]),
            TypeError,
            "gradcheck: give grad_fn, or an fn with forward",
        ),
        (lambda: gradcheck(nn.ReLU(), X64), TypeError, r"goes in as \[x\]"),
        (lambda: gradcheck(nn.ReLU(), [X64], directions=0), ValueError, "directions must be >= 1"),
        (lambda: gradcheck(nn.ReLU(), [X64], directions=1.5), TypeError, "directions must be an"),
        (lambda: gradcheck(nn.ReLU(), [X64], eps=0), ValueError, "eps must be a finite number"),
        (lambda: gradcheck(nn.ReLU(), [X64], eps="x"), TypeError, "eps must be a number, got 'x'"),
        (lambda: gradcheck(nn.ReLU(), [X64], atol=np.nan), ValueError, "atol must be non-negative"),
        (lambda: gradcheck(nn.ReLU(), [X64], seed=1.5), TypeError, "seed must be an int, got 1.5"),
        (lambda: gradcheck(nn.ReLU(), [X64], seed=-1), ValueError, "seed: a seed must be >= 0"),
        (
            lambda: gradcheck(np.tanh, [X[0, 0].astype(np.float64)], grad_fn=lambda g: (g[0],)),
            AssertionError,
            r"input 0: gradient shape \(8,\) != shape \(8, 8\)",
        ),
        (
            lambda: reference.max_pool2d_forward(X, (2, 2), (2, 2), (2, 2)),
            ValueError,
            r"pool window \(0, 0\) lies entirely in the padding",
        ),
        (
            lambda: get_backend("cpu").max_pool2d_backward(
                X[:, :, :4, :4], X[:, :, :4, :4], X.shape, (2, 2), (2, 2), (0, 0), relu_y=X
            ),
            ValueError,
            r"relu_y \(2, 3, 8, 8\) is not gy's shape",
        ),
        (lambda: nn.BatchNorm2d(4, momentum=None), ValueError, "momentum must be a number"),
        (lambda: nn.BatchNorm2d(4, momentum=1.5), ValueError, "momentum must be a number in"),
        (lambda: nn.BatchNorm2d(0), ValueError, "num_features must be >= 1, got 0"),
        (lambda: nn.BatchNorm2d(4.0), TypeError, "num_features must be an int, got 4.0"),
        (lambda: nn.BatchNorm2d(4, eps=-1e-5), ValueError, "eps must be a positive finite.*-1e-05"),
        (lambda: nn.BatchNorm2d(4, eps=0), ValueError, "eps must be a positive finite"),
        (lambda: nn.BatchNorm2d(4, eps=float("nan")), ValueError, "eps must be a positive"),
        (lambda: nn.BatchNorm2d(4, eps=float("inf")), ValueError, "eps must be a positive finite"),
        (lambda: nn.BatchNorm2d(4, eps="1e-5"), ValueError, "eps must be a positive finite"),
        (lambda: nn.BatchNorm2d(3)(X[:1, :, :1, :1]), ValueError, "more than one value per"),
        (
            lambda: nn.BatchNorm2d(3)(X.astype(np.float64)),
            TypeError,
            "weight has dtype float32 but the input has dtype float64",
        ),
        (lambda: nn.BatchNorm2d(3, dtype=np.float64).eval()(X), TypeError, "weight has dtype"),
        (lambda: nn.Conv2d(1, 1, "33"), TypeError, "kernel_size must be an int or a pair"),
        (lambda: nn.Conv2d(1, 1, (2.7, 3)), TypeError, "kernel_size must be an int or a pair"),
        (lambda: nn.Conv2d(1, 1, 0), ValueError, "kernel_size must be positive"),
        (lambda: nn.Conv2d(1, 1, 3, 2, "same"), ValueError, r"'same' needs stride 1.*\(2, 2\)"),
        (lambda: nn.Conv2d(1, 1, 3, padding=-1), ValueError, "padding must be non-negative"),
        (lambda: nn.Conv2d(1, 1, 3, dilation=0), ValueError, "dilation must be positive"),
        (lambda: nn.Conv2d(2, 2, 3, groups=0), ValueError, "groups must be >= 1"),
        (lambda: nn.Conv2d(3.0, 8, 3), TypeError, "in_channels must be an int, got 3.0"),
        (lambda: nn.Conv2d(3, 8.0, 3), TypeError, "out_channels must be an int, got 8.0"),
        (lambda: nn.Conv2d(4, 8, 3, groups=2.0), TypeError, "groups must be an int, got 2.0"),
        (lambda: nn.Conv2d(True, 8, 3), TypeError, "in_channels must be an int, got True"),
        # At construction (as PyTorch), not at the first forward's conv2d check.
        (lambda: nn.Conv2d(3, 6, 3, groups=2), ValueError, "in_channels 3 and out_channels 6"),
        # Pooling layers too: a layer refused at construction, never called on an input here.
        (
            lambda: nn.MaxPool2d(2.0),
            TypeError,
            "kernel_size must be an int or a pair of ints, got 2.0",
        ),
        (lambda: nn.AvgPool2d(0), ValueError, "kernel_size must be positive"),
        (lambda: nn.AvgPool2d(2, stride=(1, 0)), ValueError, "stride must be positive"),
        (lambda: nn.MaxPool2d(2, padding=2), ValueError, r"MaxPool2d: padding \(2, 2\)"),
        (lambda: nn.AvgPool2d(3, padding=(1, 2)), ValueError, r"AvgPool2d: padding \(1, 2\)"),
        (lambda: nn.Linear(0, 3), ValueError, "in_features must be >= 1, got 0"),
        (lambda: nn.Linear(3, -1), ValueError, "out_features must be >= 1, got -1"),
        (lambda: nn.Linear(3.0, 2), TypeError, "in_features must be an int, got 3.0"),
        (lambda: nn.Linear(3, "2"), TypeError, "out_features must be an int, got '2'"),
        # A layer's dtype when it is made, not at its first forward (an int one truncated weights).
        (lambda: nn.Conv2d(3, 4, 3, dtype=np.int32), TypeError, "dtype must be float32 or.*int32"),
        (lambda: nn.Linear(3, 2, dtype=np.float16), TypeError, "dtype must be float32 or float64"),
        (lambda: nn.Linear(3, 2, dtype="bogus"), TypeError, "dtype must be .*got 'bogus'"),
        (lambda: nn.BatchNorm2d(3, dtype=None), TypeError, "dtype must be .*got None"),
        (
            lambda: optim.SGD([P[0], np.ones(3, np.float32)], 0.1),
            TypeError,
            r"must be gpucnn Parameters \(e.g. from model.parameters\(\)\), got ndarray at index 1",
        ),
        (lambda: optim.Adam(nn.Sequential(nn.Linear(3, 2))), TypeError, "got Linear at index 0"),
        (lambda: optim.SGD(nn.Linear(3, 2), 0.1), TypeError, "Parameters, such as model.par"),
        (lambda: optim.Adam(P[0]), TypeError, "an iterable of gpucnn Parameters.*got Parameter"),
        (
            lambda: optim.Adam([P[0], nn.Parameter(np.ones(3, np.float16))]),
            TypeError,
            "optimizer parameter 1 must be float32 or float64, got dtype float16",
        ),
        (lambda: optim.SGD([nn.Parameter(np.ones(3, int))], 0.1), TypeError, "dtype int64"),
        (lambda: optim.SGD(P, 0.1, momentum=-0.9), ValueError, "momentum must be non-negative"),
        (lambda: optim.SGD(P, float("nan")), ValueError, "learning rate must be non-negative"),
        (lambda: optim.Adam(P, betas=(0.9, 1.0)), ValueError, r"betas must be two numbers"),
        (lambda: optim.AdamW(P, weight_decay=-1), ValueError, "weight_decay must be non-neg"),
        (lambda: optim.Adam(P, eps=-1e-8), ValueError, "eps must be non-negative"),
        (lambda: optim.StepLR(optim.SGD(P, 0.1), 0), ValueError, "step_size must be >= 1"),
        (lambda: optim.StepLR(P, 2), TypeError, "a schedule needs a gpucnn optimizer, got list"),
        (lambda: optim.CosineAnnealingLR(optim.SGD(P, 0.1), 0), ValueError, "T_max must be"),
        (lambda: optim.StepLR(optim.SGD(P, 0.1), 1, gamma=-0.5), ValueError, "gamma must be non"),
        (
            lambda: optim.StepLR(optim.SGD(P, 0.1), 1, gamma=float("nan")),
            ValueError,
            "gamma must be non",
        ),
        (lambda: optim.CosineAnnealingLR(optim.SGD(P, 0.1), 2, eta_min=-1), ValueError, "eta_min"),
        (lambda: optim.StepLR(optim.SGD(P, 0.1), 2.5), TypeError, "step_size must be an int"),
        (lambda: optim.StepLR(optim.SGD(P, 0.1), True), TypeError, "step_size must be an int"),
        (lambda: optim.CosineAnnealingLR(optim.SGD(P, 0.1), 2.5), TypeError, "T_max must be an"),
        (lambda: optim.StepLR(optim.SGD(P, 0.1), 1, "0.5"), TypeError, "gamma must be a number"),
        (
            lambda: optim.CosineAnnealingLR(optim.SGD(P, 0.1), 2, eta_min="0"),
            TypeError,
            "eta_min must be a number, got '0'",
        ),
        (lambda: optim.SGD(P, "0.1"), TypeError, "learning rate must be a number, got '0.1'"),
        (lambda: optim.SGD(P, True), TypeError, "learning rate must be a number, got True"),
        (lambda: optim.SGD(P, 0.1, momentum="0.9"), TypeError, "momentum must be a number"),
        (lambda: optim.Adam(P, eps=None), TypeError, "eps must be a number, got None"),
        (lambda: optim.Adam(P, betas=("0.9", 0.999)), ValueError, "betas must be two numbers"),
        (lambda: optim.SGD(P, float("inf")), ValueError, "learning rate must be non-negative and"),
        (lambda: optim.SGD(P, 0.1, momentum=float("inf")), ValueError, "momentum must be non"),
        # ints past a float's range: below math.inf, but float() overflows (Python's bare
        # OverflowError, naming nothing, once the hyperparameters became floats)
        (lambda: optim.SGD(P, 0.1, weight_decay=10**400), ValueError, "weight_decay must be non"),
        (lambda: optim.SGD(P, 10**400), ValueError, "learning rate must be non-negative and"),
        (lambda: optim.Adam(P, eps=10**400), ValueError, "eps must be non-negative and finite"),
    ],
)
def test_bad_arguments_raise_named_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize(
    ("call", "name", "given"),
    [
        (lambda _: load_checkpoint(None), "load_checkpoint: path", "None"),
        (lambda d: save_checkpoint(3, nn.Linear(3, 2), {}), "save_checkpoint: path", "3"),
        (lambda _: read_idx(None), "read_idx: path", "None"),
        (lambda _: write_idx(7, np.zeros(3, np.uint8)), "write_idx: path", "7"),
        (lambda _: write_idx_dataset(None, (0, 0), (0, 0)), "write_idx_dataset: folder", "None"),
        (lambda _: load_dataset("mnist", data_dir=0), "--data-dir", "0"),
        (lambda _: download("mnist", 5), "--data-dir", "5"),
        (lambda _: run_demo(out=b"runs"), "run_demo: out", "b'runs'"),
        (lambda _: predict_files(None, "a.png"), "predict_files: checkpoint", "None"),
        (lambda d: predict_files(d / "m.npz", [d / "a.png", 3]), "each of paths", "3"),
    ],
)  # fmt: skip
def test_what_is_not_a_path_is_refused_naming_the_argument(
    tmp_path, monkeypatch, call, name, given
):
    """pathlib's "expected str, bytes or os.PathLike object, not NoneType" named neither the
    call nor the argument; load_dataset took data_dir=0 for unset and read the default folder.
    Nothing is written, here or (run from tmp_path) in a relative default folder."""
    monkeypatch.chdir(tmp_path)
    message = f"{name} must be a path (str or os.PathLike), got {given}"
    with pytest.raises(TypeError, match=re.escape(message)):
        call(tmp_path)
    assert not any(tmp_path.iterdir())


def test_predict_files_refuses_paths_that_are_not_paths_or_a_list_of_them(tmp_path):
    """None was "'NoneType' object is not iterable", after the checkpoint was loaded."""
    with pytest.raises(TypeError, match="predict_files: paths must be a path or paths, got None"):
        predict_files(tmp_path / "m.npz", None)


def test_numpy_numbers_are_numbers():
    conv = nn.Conv2d(np.int64(2), 3, (np.int64(3), np.int32(2)))
    assert conv.weight.data.shape == (3, 2, 3, 2)
    assert nn.Linear(np.int32(3), np.int64(2)).weight.data.shape == (2, 3)
    norm = nn.BatchNorm2d(np.int64(3), eps=np.float32(1e-3), momentum=np.float32(0.25))
    assert norm.momentum == np.float32(0.25) and norm.running_var.shape == (3,)
    optim.Adam(P, betas=[0.5, np.float64(0.9)])


def test_conv2d_takes_pytorchs_positional_order():
    """(in, out, kernel, stride, padding, dilation, groups, bias), as torch.nn.Conv2d."""
    conv = nn.Conv2d(4, 6, 3, 1, 1, 1, 2, False)
    assert conv.groups == 2 and conv.weight.data.shape == (6, 2, 3, 3) and conv.bias is None


def test_summary_keeps_each_layers_own_mode():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten())
    model[1].eval()  # a frozen batch norm inside a training model
    model.summary((1, 6, 6))
    assert model.training and model[0].training and not model[1].training


def test_one_layer_or_parameter_in_two_places_is_refused():
    """A layer keeps its forward's input for backward, and an optimizer keeps state per
    parameter: either in two places would give silently wrong gradients or updates (on a GPU,
    two slots of one fused optimizer launch racing on the same weights)."""
    conv, relu = nn.Conv2d(3, 4, 3), nn.ReLU()
    with pytest.raises(ValueError, match=r"layer 2 \(Conv2d\) is the same object as layer 0"):
        nn.Sequential(conv, relu, conv)
    with pytest.raises(ValueError, match=r"layer 2.1 \(ReLU\) is the same object as layer 1"):
        nn.Sequential(conv, relu, nn.Sequential(nn.Flatten(), relu))
    with pytest.raises(ValueError, match="the same parameter twice"):
        optim.Adam([*conv.parameters(), conv.weight], 0.1)
    shared = nn.Sequential(nn.Flatten())
    shared.first, shared.again = conv, conv  # a module reachable twice: each parameter once
    assert [name for name, _ in shared.named_parameters()] == ["first.weight", "first.bias"]
    optim.SGD(shared.parameters(), 0.1)


@pytest.mark.parametrize("device", ["cpu", "cuda-emu"])
def test_two_parameters_over_one_array_are_refused(device):
    """Two Parameter objects over the same memory (a tie made as Parameter(other.data), or
    overlapping views) pass the optimizer's same-object check, yet on a GPU they would be two
    slots of one fused optimizer launch whose blocks read and write the same weights at once:
    a lost update that varies run to run, where the CPU and cuda-emu update them in turn."""
    conv = nn.Conv2d(3, 4, 3).to(device)
    tied = nn.Parameter(conv.weight.data)
    with pytest.raises(ValueError, match=r"parameters 0 and 2 share memory"):
        optim.Adam([conv.weight, conv.bias, tied], 0.1)
    data = conv.weight.data.reshape(-1)
    with pytest.raises(ValueError, match=r"parameters 0 and 1 share memory"):
        optim.SGD([nn.Parameter(data[:60]), nn.Parameter(data[50:])], 0.1, momentum=0.9)
    optim.SGD([nn.Parameter(data[:50]), nn.Parameter(data[50:])], 0.1)  # side by side: fine


def test_labels_out_of_range_and_wrong_shape():
    logits = np.random.default_rng().standard_normal((4, 3)).astype(np.float32)
    loss = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"\[0, 3\).*from 0 to 3"):
        loss(logits, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[0, 3\).*from -1"):
        loss(logits, np.array([0, -1, 2, 1]))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        loss(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"shape \(4,\).*got \(4, 1\)"):
        loss(logits, np.array([[0], [1], [2], [1]]))
    unsigned, _ = F.softmax_cross_entropy(logits, np.array([0, 1, 2, 1], np.uint8))
    signed, _ = F.softmax_cross_entropy(logits, np.array([0, 1, 2, 1]))
    np.testing.assert_array_equal(unsigned, signed)  # IDX labels are unsigned bytes
    with pytest.raises(TypeError, match="integer"):
        loss(logits, np.array([0.0, 1.0, 2.0, 1.0]))
    for smoothing in (1.5, -0.1, float("nan")):  # refused when built, not at the first step
        with pytest.raises(
            ValueError, match=rf"label_smoothing must lie in \[0, 1\], got {smoothing}"
        ):
            nn.CrossEntropyLoss(label_smoothing=smoothing)
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\], got 1.5"):
        F.softmax_cross_entropy(logits, np.array([0, 1, 2, 1]), label_smoothing=1.5)
    for edge in (0.0, 1.0):  # both ends of PyTorch's range are taken, and give its loss
        got, _ = F.softmax_cross_entropy(logits, np.array([0, 1, 2, 1]), label_smoothing=edge)
        want, _ = reference.softmax_cross_entropy_forward(logits, [0, 1, 2, 1], edge)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        nn.CrossEntropyLoss(label_smoothing=edge)


def test_a_bad_label_is_refused_on_the_cpu_even_unchecked():
    """check_labels=False saves a GPU a device read; on the CPU the range costs none, and a
    label of -1 would otherwise index the last class and give a finite, wrong loss."""
    logits = np.random.default_rng().standard_normal((3, 4)).astype(np.float32)
    loss_fn = nn.CrossEntropyLoss(check_labels=False)
    for bad in (4, -1):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
            loss_fn(logits, np.array([0, bad, 1]))


def test_an_empty_batch_flows_through_the_sliding_window_ops(backend):
    """N = 0 gives empty outputs of the right shape, as PyTorch (the CPU conv had failed)."""
    x = backend.asarray(np.zeros((0, 3, 8, 8), np.float32))
    assert F.conv2d(x, backend.asarray(W), padding=1).shape == (0, 4, 8, 8)
    assert F.max_pool2d(x, 2).shape == F.avg_pool2d(x, 2).shape == (0, 3, 4, 4)


def test_no_channels_flow_through_pooling_both_ways(backend):
    """C = 0 gives empty outputs and gradients, as N = 0 does (the CPU's max-pool backward
    reshaped its plane numbers with -1, which NumPy cannot infer from nothing)."""
    x = backend.asarray(np.zeros((2, 0, 4, 4), np.float32))
    gy = backend.asarray(np.zeros((2, 0, 2, 2), np.float32))
    y, argmax = backend.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    assert y.shape == argmax.shape == gy.shape
    assert backend.max_pool2d_backward(gy, argmax, x.shape, (2, 2), (2, 2), (0, 0)).shape == x.shape
    assert backend.avg_pool2d_backward(gy, x.shape, (2, 2), (2, 2), (0, 0)).shape == x.shape


@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
@pytest.mark.parametrize("planes", [(0, 3), (3, 0), (0, 0)])
def test_pooling_empty_planes_is_refused_on_every_device(backend, pool, planes):
    """With padding, a window over an empty plane lies wholly in the padding: the CPU gave -inf
    (max) or 0 (avg), the CUDA launcher a ZeroDivisionError. Now one named error everywhere."""
    x = backend.asarray(np.zeros((1, 2, *planes), np.float32))
    with pytest.raises(ValueError, match=rf"{pool.__name__}: empty planes in input of shape"):
        pool(x, 2, 1, 1)


def test_an_empty_batch_flows_through_a_model_in_eval_mode(backend):
    """Flatten gives (0, C*H*W) for N = 0, as PyTorch, like the layers around it (it failed:
    NumPy cannot infer the -1 of a reshape of an empty array); backward gives the input's shape."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(36, 2),
    ).to(backend).eval()  # fmt: skip
    x = backend.asarray(X[:0])
    assert model(x).shape == (0, 2)
    assert model.backward(backend.asarray(np.zeros((0, 2), np.float32))).shape == x.shape


@pytest.mark.parametrize("device", KERNEL_BACKENDS)
def test_unchecked_bad_label_gives_nan_on_the_gpu_not_a_stray_read(device):
    """With the range check off (no device read), the kernel turns a bad label into a NaN loss."""
    backend = make_backend(device)
    rng = np.random.default_rng()
    logits = backend.asarray(rng.standard_normal((3, 4)).astype(np.float32))
    loss_fn = nn.CrossEntropyLoss(check_finite=False, check_labels=False)
    good = float(loss_fn(logits, backend.asarray(np.array([0, 3, 1]))))
    assert np.isfinite(good)
    for bad in (4, -1, 2**40):
        assert np.isnan(float(loss_fn(logits, backend.asarray(np.array([0, bad, 1])))))


def test_nan_loss_is_an_error_not_silent():
    logits = np.random.default_rng().standard_normal((2, 3)).astype(np.float32)
    logits[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        nn.CrossEntropyLoss()(logits, np.array([0, 1]))


def test_unknown_device_and_missing_gpu(without_cupy):
    with pytest.raises(
        ValueError, match="unknown device 'tpu'; expected one of cpu, cuda, cuda-emu, auto"
    ):
        get_backend("tpu")
    with pytest.raises(GpuUnavailableError, match="CuPy is not installed"):  # says what is missing
        get_backend("cuda")


def test_arrays_from_another_device_are_named():
    emu = make_backend("cuda-emu")
    with pytest.raises(DeviceMismatchError, match="weight is on device 'cuda-emu'.*'cpu'") as e:
        F.conv2d(X, emu.asarray(W))
    assert "gpucnn.to_device(weight, 'cpu') for an array)" in str(e.value)  # no model here
    with pytest.raises(DeviceMismatchError, match="weight is on device 'cpu'.*'cuda-emu'"):
        F.conv2d(emu.asarray(X), W)
    for mode in (True, False):
        with pytest.raises(DeviceMismatchError, match="weight is on device 'cuda-emu'.*'cpu'"):
            nn.BatchNorm2d(3).to("cuda-emu").train(mode)(X)


def test_a_model_fed_an_input_from_another_device_says_to_move_the_input():
    """The weights are where model.to put them; the data is what usually comes from elsewhere,
    so the hint moves the input to the model's device (and still names both devices). Labels
    are moved to the logits' device."""
    emu, cpu = make_backend("cuda-emu"), get_backend("cpu")
    for model_device, input_device in ((emu, cpu), (cpu, emu)):
        for layer in (nn.Conv2d(3, 4, 3), nn.Linear(8, 2), nn.BatchNorm2d(3)):
            x = input_device.asarray(X if not isinstance(layer, nn.Linear) else X[:, 0, 0])
            with pytest.raises(DeviceMismatchError) as error:
                nn.Sequential(layer).to(model_device)(x)
            assert (
                f"is on device '{model_device.name}' but the input is on '{input_device.name}'; "
                f"move the input to the weights' device with gpucnn.to_device(x, "
                f"'{model_device.name}') (or the weights to the input's: "
                f"model.to('{input_device.name}') for a model, "
            ) in str(error.value)
    with pytest.raises(
        DeviceMismatchError,
        match=r"labels is on device 'cpu' but the loss's input \(logits\) is on 'cuda-emu'; "
        r"move it with "
        r"gpucnn.to_device\(labels, 'cuda-emu'\)",
    ):
        nn.CrossEntropyLoss()(emu.asarray(X[:, :, 0, 0]), np.array([0, 1]))


@pytest.mark.parametrize("device", KERNEL_BACKENDS)
def test_conv_reach_past_int_pixel_coordinates_is_refused(device):
    """conv2d.cu keeps pixel coordinates in int: a padding of 2^30 is refused before any launch."""
    backend = make_backend(device)
    rng = np.random.default_rng()
    x = backend.asarray(rng.standard_normal((1, 1, 4, 4)).astype(np.float32))
    w = backend.asarray(rng.standard_normal((1, 1, 3, 3)).astype(np.float32))
    padding = ((2**30, 2**30), (0, 0))
    with pytest.raises(ValueError, match="spatial sizes past 2\\^30"):
        backend.conv2d_forward(x, w, None, (1, 1), padding, (1, 1), 1)
    assert backend.conv2d_forward(x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1), 1).shape == (
        1, 1, 4, 4,
    )  # fmt: skip


@pytest.mark.parametrize("kernel", [(2, 4), (3, 2), (4, 4)])
def test_same_padding_puts_the_odd_pixel_at_the_bottom_and_right(kernel):
    """padding="same" as PyTorch: an even kernel's extra padding row and column go to the
    bottom and the right, so output pixel (0, 0) reads the top-left input pixel first."""
    rng = np.random.default_rng()
    x = rng.standard_normal((1, 2, 7, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, *kernel)).astype(np.float32)
    (top, left), (bottom, right) = ((k - 1) // 2 for k in kernel), (k // 2 for k in kernel)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    same = F.conv2d(x, w, padding="same")
    assert same.shape == (1, 3, 7, 6)
    np.testing.assert_allclose(same, F.conv2d(padded, w), rtol=1e-6, atol=1e-6)


def test_the_tutorials_kernels_on_a_ramp():
    """On a ramp c + a*row + b*col: blur and sharpen (weights summing to 1, symmetric) give
    the ramp back, horizontal-edge sees the rows' change (6a), vertical-edge the columns' (6b);
    ``padding`` keeps the image's size."""
    rng = np.random.default_rng()
    a, b, c = rng.uniform(-2, 2, 3)
    rows, cols = np.mgrid[0:6, 0:7]
    image = (c + a * rows + b * cols).astype(np.float32)
    names = ["gaussian-blur", "sharpen", "horizontal-edge", "vertical-edge"]
    out = apply_filters(image, names)
    assert out.shape == (4, 4, 5)
    for got, want in zip(out, [image[1:-1, 1:-1]] * 2 + [6 * a, 6 * b], strict=True):
        np.testing.assert_allclose(got, np.broadcast_to(want, (4, 5)), rtol=1e-4, atol=1e-4)
    padded = apply_filters(image, names, padding=1)
    assert padded.shape == (4, 6, 7)
    np.testing.assert_allclose(padded[:, 1:-1, 1:-1], out, rtol=1e-5, atol=1e-5)


def test_a_device_mismatch_is_a_value_error():
    """Bad input raises ValueError or TypeError (functional's contract): code that catches
    ValueError, the command line among it, catches a device mismatch too."""
    assert issubclass(DeviceMismatchError, ValueError)


def test_a_single_kernel_name_is_that_kernel_not_its_letters():
    """``filter_bank("sharpen")`` is the sharpen kernel: a name given alone was taken letter by
    letter ("unknown kernel(s) ['s', 'h', 'a', ...]")."""
    np.testing.assert_array_equal(filter_bank("sharpen"), filter_bank(["sharpen"]))
    image = np.eye(5, dtype=np.float32)
    np.testing.assert_array_equal(
        apply_filters(image, "vertical-edge"), apply_filters(image, ["vertical-edge"])
    )
    with pytest.raises(ValueError, match=r"unknown kernel\(s\) \['blur'\]"):
        filter_bank("blur")


@pytest.mark.parametrize("shape", [(2, 0, 3, 3), (2, 3, 0, 3), (0, 3, 3, 3)])
@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
def test_batch_norm_of_an_empty_input_matches_the_cpu(kernel_backend, shape):
    """No channel, no pixel or no image (only the backend can be given these in training: the
    layer refuses fewer than two values per channel): an empty output and the statistics of no
    values (NaN), as on the CPU; the GPU's grids divided by zero."""
    cpu, c = get_backend("cpu"), shape[1]
    x, ones = np.zeros(shape, np.float32), np.ones(c, np.float32)
    results = []
    for bk in (cpu, kernel_backend):
        args = [bk.asarray(a) for a in (x, ones, ones - 1, ones - 1, ones)]
        y, mean, invstd = bk.batch_norm2d_forward_train(*args[:3], 1e-5, *args[3:])
        grads = bk.batch_norm2d_backward(y, args[0], args[1], mean, invstd)
        results.append([bk.to_numpy(a) for a in (y, mean, invstd, *args[3:], *grads)])
    for ours, expected in zip(results[1], results[0], strict=True):
        np.testing.assert_array_equal(ours, expected)


def test_a_grid_of_one_block_per_plane_or_row_stops_at_cudas_limit(kernel_backend, monkeypatch):
    """global_avg_pool2d_forward (one block per (n, c) plane) and softmax_cross_entropy_forward
    (one per row) launched past CUDA's gridDim.x limit unchecked, where the launch fails without
    saying why; the limit is lowered to 5 here to check them on 6 planes and 6 rows."""
    assert launching.MAX_GRID_X == 2**31 - 1
    assert launching.grid_per_item("op", 2**31 - 1, "row") == (2**31 - 1,)
    monkeypatch.setattr(launching, "MAX_GRID_X", 5)
    x = kernel_backend.asarray(X[:2, :3, :2, :2].copy())
    with pytest.raises(ValueError, match="global_avg_pool2d_forward: 6 planes, one block each"):
        kernel_backend.global_avg_pool2d_forward(x)
    logits, labels = (kernel_backend.asarray(a) for a in (X[:2, :3, 0, 0], np.zeros(6, int)))
    with pytest.raises(ValueError, match="softmax_cross_entropy_forward: 6 rows, .* grid's 5"):
        kernel_backend.softmax_cross_entropy_forward(logits.reshape(6, 1), labels)


@pytest.mark.parametrize("op", ["max_pool2d_forward", "avg_pool2d_forward"])
def test_the_backends_refuse_a_pool_padding_over_half_the_kernel(backend, op):
    """As functional's pooling (and PyTorch) does: with padding >= kernel a window lies wholly in
    the padding, and max pooling kept its corner, outside the input, as the argmax, so backward
    routed the gradient to another pixel (the GPU) or failed (the CPU)."""
    x = backend.asarray(X[:1, :1, :3, :3].copy())
    assert getattr(backend, op)(x, (2, 2), (1, 1), (1, 1)) is not None  # half the kernel: fine
    with pytest.raises(ValueError, match=rf"{op[:10]}: padding \(2, 1\) .* at most half the"):
        getattr(backend, op)(x, (2, 2), (1, 1), (2, 1))

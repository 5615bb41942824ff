"""The ``gpucnn`` command: argument parsing and dispatch; the work is done in the library modules.

User errors (missing data, bad checkpoint, unknown model, no GPU, bad options) print one line on
stderr and exit with status 2; set GPUCNN_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from . import bench
from .backend import DEVICES
from .data.datasets import dataset_names
from .nn.zoo import model_names
from .run_config import AUGMENT_CHOICES, OPTIMIZERS, SCHEDULES

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (exit status 2)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def resume_hint(out: str | os.PathLike | None) -> str:
    """The hint after Ctrl-C in a training run into folder ``out``: ``--resume`` once the run's
    checkpoint is there, else a rerun (``--resume`` would find no checkpoint)."""
    if out is not None and (Path(out) / "model.npz").is_file():
        return "continue the training run with --resume"
    return "no checkpoint was written yet: rerun without --resume"


def _interrupt_hint(args: argparse.Namespace) -> str:
    """What to do after Ctrl-C: for ``gpucnn train``, whether ``--resume`` can continue it."""
    return resume_hint(args.out) if args.func is _train else ""


def _train(args: argparse.Namespace) -> None:
    from .run_config import resolve
    from .train import TrainConfig, fit

    fields = TrainConfig.__dataclass_fields__
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    args.out = resolve(config).out  # the run's folder (default from the recipe), for the hint
    metrics = fit(config)
    out, epochs = metrics["config"]["out"], metrics["epochs"]
    print(
        f"test accuracy {metrics['test_accuracy']:.4f} "
        f"({metrics['model']} on {metrics['dataset']}, {metrics['device']}, "
        f"{epochs} epoch{'s' * (epochs != 1)}, {metrics['train_seconds']:.1f} s "
        f"training); outputs in {out}/"
    )


def _eval(args: argparse.Namespace) -> None:
    from .train import evaluate_checkpoint

    loss, accuracy, data = evaluate_checkpoint(
        args.checkpoint, args.dataset, args.data_dir, args.device
    )
    print(
        f"test accuracy {accuracy:.4f} "
        f"(loss {loss:.4f}, {len(data.test_y)} {data.name} test images)"
    )


def _predict(args: argparse.Namespace) -> None:
    from .predict import predict_files

    for path, label, prob in predict_files(args.checkpoint, args.images, args.device):
        print(f"{path}: {label} ({prob:.3f})")


def _summary(args: argparse.Namespace) -> None:
    from .demo import parameter_comparison
    from .nn.zoo import build_model, model_spec

    spec = model_spec(args.model)
    print(f"model {args.model}\n{build_model(args.model).summary(tuple(spec['input_shape']))}\n")
    print(parameter_comparison())


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.device, args.out)


def _info(args: argparse.Namespace) -> None:
    from .sysinfo import describe

    print(describe())


def _download(args: argparse.Namespace) -> None:
    from .data.download import download

    folder = download(args.name, args.data_dir, args.base_url)
    print(f"{args.name}: files verified in {folder} (use --data-dir {folder})")


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (default: the tutorial's lines task)",
        description="Train a zoo model; unset options come from its recipe.",
    )
    p.add_argument(
        "--dataset", choices=dataset_names(), help="default: the model's dataset, or lines"
    )
    p.add_argument("--model", choices=model_names(), help="default: the dataset's model")
    add_recipe_arguments(p)
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/DATASET-MODEL)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/model.npz")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in a DIR that holds one (its files are removed once the new run "
        "is set up)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument(
        "--cuda-graph",
        action="store_true",
        help="record the training step once as a CUDA graph and replay it (device cuda; "
        "cuda-emu checks the step without a GPU)",
    )
    add_device_argument(p)
    add_data_dir_argument(p)
    p.set_defaults(func=_train)


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The training options a model's recipe sets (unset ones come from the recipe), the seed
    and the data subset; shared with scripts/sweep_fashion_net.py."""
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--momentum", type=float, help="SGD momentum (Nesterov)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule")
    p.add_argument(
        "--augment",
        choices=AUGMENT_CHOICES,
        help="random shifts, horizontal flips (where labels allow), both, or none",
    )
    p.add_argument(
        "--label-smoothing", type=float, metavar="E", help="train towards (1-E)*onehot + E/classes"
    )
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--train-size", type=int, metavar="N", help="use the first N training images")
    p.add_argument("--test-size", type=int, metavar="N", help="use the first N test images")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    """``--device``, shared by the subcommands that compute."""
    p.add_argument("--device", choices=DEVICES, default="cpu", help="default: cpu")


def add_data_dir_argument(p: argparse.ArgumentParser) -> None:
    """``--data-dir``, shared by the subcommands that read a dataset."""
    p.add_argument(
        "--data-dir", metavar="DIR", help="folder with the IDX files (or set GPUCNN_DATA)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``gpucnn`` argument parser with every subcommand."""
    parser = _Parser(prog="gpucnn", description="A CNN library on NumPy (CPU) and CUDA (GPU).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)

    p = sub.add_parser("eval", help="test accuracy of a checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="FILE")
    p.add_argument("--dataset", choices=dataset_names(), help="default: the checkpoint's")
    add_device_argument(p)
    add_data_dir_argument(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="classify image files (PNG, JPEG, PGM)")
    p.add_argument("--checkpoint", required=True, metavar="FILE")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_device_argument(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser("summary", help="layer shapes and parameter counts of a model")
    p.add_argument(
        "--model", choices=model_names(), default="tutorial-mnist", help="default: tutorial-mnist"
    )
    p.set_defaults(func=_summary)

    p = sub.add_parser("demo", help="the tutorial's walk-through, saving PNGs")
    p.add_argument("--out", metavar="DIR", default="runs/demo", help="default: runs/demo")
    add_device_argument(p)
    p.set_defaults(func=_demo)

    p = sub.add_parser("info", help="devices, CuPy/CUDA versions, kernel cache")
    p.set_defaults(func=_info)

    p = sub.add_parser("download", help="fetch MNIST or Fashion-MNIST, checking SHA-256 sums")
    p.add_argument("name", choices=("mnist", "fashion-mnist"))
    p.add_argument("--data-dir", metavar="DIR", required=True)
    p.add_argument("--base-url", help="mirror to download from instead of the official one")
    p.set_defaults(func=_download)

    p = sub.add_parser(
        "bench",
        help="time gpucnn and measure its memory against its peers (PyTorch, the tutorial's loops)",
    )
    bench.add_arguments(p)
    p.set_defaults(func=bench.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gpucnn`` command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "train")  # "gpucnn" alone trains the lines task
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed on one line
        return int(exit_.code or 0)
    return run_reporting_errors("gpucnn", lambda: args.func(args), lambda: _interrupt_hint(args))


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt (in the main thread, the only one that
    can take a signal handler; elsewhere SIGTERM keeps its default)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_reporting_errors(
    prog: str, fn: Callable[[], int | None], hint: str | Callable[[], str] = ""
) -> int:
    """``fn()``'s exit status, with Ctrl-C (and ``hint``, or what ``hint()`` says then, on what
    to do next) and the errors a user can cause (bad input, missing data, no usable GPU, too
    little memory) as one line on stderr instead of a traceback; ``GPUCNN_DEBUG=1`` shows the
    traceback. The ``gpucnn`` command and the scripts in ``scripts/`` use it. SIGTERM
    (``timeout``, a job scheduler) is taken as Ctrl-C: a checkpoint being written removes its
    temporary file."""
    try:
        with _sigterm_as_interrupt():
            status = fn()
    except KeyboardInterrupt:
        hint = hint() if callable(hint) else hint
        print(f"{prog}: interrupted" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`gpucnn predict ... | head -1`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 1
    except (ValueError, TypeError, OSError, RuntimeError, ImportError, MemoryError) as err:
        if os.environ.get("GPUCNN_DEBUG", "0") not in ("", "0"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, MemoryError):  # NumPy's "Unable to allocate ...", CuPy's "Out of ..."
            message = f"out of memory: {message}"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return status or 0

"""``gpucnn bench``: options, and running one suite to a table (and optionally JSON)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..atomic import check_writable_folder
from ..backend import get_backend
from ..backend.launchers.winograd import ALGORITHMS, convolution_algorithm
from ..nn.zoo import model_names
from . import goals, memory, report, timing, training
from . import peers as P
from .suites import DEFAULT_REPEATS, SUITES, Options

DEFAULT_BATCH_SIZES = (64, 256)
MODEL_SUITES = ("step", "memory")  # the suites that train any zoo model (--model)


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def positive_int(text: str) -> int:
    """An argparse type: one whole number >= 1."""
    (value,) = _ints(text)
    return value


def _finite(accept: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    """An argparse type: a finite number for which ``accept`` holds, else "expected WANTED"."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


_positive = _finite(lambda v: v > 0, "a positive number")
_non_negative = _finite(lambda v: v >= 0, "a number >= 0")


def _names(text: str) -> list[str]:
    return [v for v in text.split(",") if v]


def add_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """Add the ``bench`` options to ``parser``; ``defaults`` (a wrapper's ``suite``, ``device``,
    ``batch_size``, ``peers``) stand in for the command's own in the help text."""
    suite, device = defaults.get("suite", "step"), defaults.get("device", "cpu")
    sizes = ",".join(map(str, defaults.get("batch_size") or DEFAULT_BATCH_SIZES))
    peers = ",".join(defaults.get("peers") or ()) or "the device's"
    parser.add_argument("--suite", choices=tuple(SUITES), default=suite, help=f"default: {suite}")
    parser.add_argument(
        "--device", choices=tuple(P.DEFAULT_PEERS), default=device, help=f"default: {device}"
    )
    parser.add_argument(
        "--batch-size", type=_ints, action="extend", metavar="N[,N]",
        help=f"repeatable or comma list (default {sizes})",
    )  # fmt: skip
    repeats = ", ".join(f"{name} {n}" for name, n in DEFAULT_REPEATS.items())
    parser.add_argument(
        "--repeats", type=positive_int, help=f"samples per peer (default: {repeats})"
    )
    parser.add_argument(
        "--peers", type=_names, action="extend", metavar="NAME[,NAME]",
        help=f"peers to run (default: {peers}); from {', '.join(P.PEERS)}",
    )  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--conv-algorithm", choices=ALGORITHMS, default="auto",
        help="the CUDA backend's convolutions: direct, Winograd wherever the window allows "
        "(3x3, stride 1), or auto (Winograd for large layers; default)",
    )  # fmt: skip
    parser.add_argument("--cases", metavar="TEXT", help="ops: only cases whose name has TEXT")
    parser.add_argument(
        "--tutorial-samples", type=positive_int, default=3,
        help="step: samples timed on the tutorial loops (default 3; at most --repeats)",
    )  # fmt: skip
    parser.add_argument(
        "--model", choices=model_names(), default=training.MODEL,
        help=f"step, memory: the zoo model trained (default {training.MODEL}; the tutorial's "
        "loops train only that)",
    )  # fmt: skip
    parser.add_argument(
        "--epoch-samples",
        type=positive_int,
        default=60_000,
        help="epoch: training-set size (default 60000)",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", help="epoch: Fashion-MNIST IDX files (default: random data)"
    )
    parser.add_argument(
        "--megabytes", type=_positive, default=256, metavar="MIB",
        help="bandwidth: input tensor size in MiB (default 256: 64x64x128x128, 268 MB)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=positive_int,
        help="intra-op threads of PyTorch and of gpucnn's CPU backend (default: each its own)",
    )  # fmt: skip
    parser.add_argument(
        "--settle", type=_non_negative, default=timing.SETTLE_S, metavar="SECONDS",
        help="pause before each CPU sample, so another peer's idle threads stop spinning "
        f"(default {timing.SETTLE_S})",
    )  # fmt: skip


def _check_json_path(path: str) -> None:
    """Refuse a ``--json`` path the results could not be written to, before the run rather than
    after it: a folder, or a file whose folder is missing or refuses a file (probed)."""
    folder = Path(path).resolve().parent
    if Path(path).is_dir():
        raise ValueError(f"--json {path}: is a folder; name a file in it")
    if not folder.exists():  # a file there is refused by name below
        raise ValueError(f"--json {path}: its folder does not exist")
    check_writable_folder(folder, "--json")


def run(args: argparse.Namespace) -> int:
    """Run the chosen suite, print the table (and write JSON); returns the exit status."""
    if args.model != training.MODEL and args.suite not in MODEL_SUITES:  # else tutorial-mnist's
        raise ValueError(
            f"--model {args.model}: only the {' and '.join(MODEL_SUITES)} suites train another model"
        )
    peers = P.select(args.device, args.suite, args.peers)
    if args.device == "cuda":
        get_backend("cuda")  # no usable GPU: GpuUnavailableError, not a table of n/a rows
    if args.json:
        _check_json_path(args.json)
    if args.suite == "memory" and args.device != "cuda":
        memory.check_host()  # no /proc: an error, not a table of n/a rows
    if args.threads:
        P.set_threads(args.threads, torch_too=importlib.util.find_spec("torch") is not None)
    opts = Options(
        # once each, in order: a repeated size's rows would pair with the wrong run's in ratios
        batch_sizes=list(dict.fromkeys(args.batch_size or DEFAULT_BATCH_SIZES)),
        repeats=args.repeats or DEFAULT_REPEATS[args.suite],
        cases=args.cases,
        tutorial_samples=args.tutorial_samples,
        model=args.model,
        epoch_samples=args.epoch_samples,
        data_dir=args.data_dir,
        megabytes=args.megabytes,
        threads=args.threads,
        conv_algorithm=args.conv_algorithm,
    )
    settle, timing.SETTLE_S = timing.SETTLE_S, args.settle
    try:
        with convolution_algorithm(args.conv_algorithm):
            results = SUITES[args.suite](peers, opts)
    finally:
        P.restore_torch_modes()
        timing.SETTLE_S = settle  # as found: a later parser's --settle default is read from it
    if not results:
        raise ValueError(f"no {args.suite} case matches --cases {args.cases!r}")
    report.add_ratios(results)
    verdicts = goals.check(results)
    env = report.environment(args.device)
    if args.json:  # first: printing fails where the reader has left (`| head -1`)
        options = {k: v for k, v in vars(args).items() if not callable(v)}
        options["resolved"] = dataclasses.asdict(opts)  # the defaults filled in, as run
        report.write_json(args.json, env, options, results, verdicts)
    print(report.header(env, args.suite))
    print(report.table(results))
    if verdicts:
        print("\ngoals:\n" + "\n".join(f"  {v.line()}" for v in verdicts))
    failed = sorted({r.peer for r in results if P.own_failure(r.peer, r.status)})
    if failed:
        print(f"\n{', '.join(failed)} failed (tracebacks above): exit status 1", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None, **defaults) -> int:
    """Stand-alone entry (the ``scripts/bench_*.py`` wrappers): ``defaults`` fill unset options;
    errors are one line, as from the ``gpucnn`` command."""
    from ..cli import run_reporting_errors  # here: the cli module imports this one

    parser = argparse.ArgumentParser(prog="gpucnn bench", description=__doc__.splitlines()[0])
    add_arguments(parser, **defaults)
    parser.set_defaults(**{k: v for k, v in defaults.items() if k not in ("batch_size", "peers")})
    args = parser.parse_args(argv)
    for key in ("batch_size", "peers"):
        if getattr(args, key) is None and key in defaults:
            setattr(args, key, defaults[key])
    return run_reporting_errors("gpucnn bench", lambda: run(args))

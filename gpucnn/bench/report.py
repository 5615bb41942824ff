"""Results: medians, bandwidths, ratios between peers of one device, a text table and JSON."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..backend import cpu_threads
from ..sysinfo import package_version
from .peers import Peer


@dataclass
class Result:
    """One peer on one case and op: seconds per unit (a call, a step or an epoch).

    ``status`` is "ok" or why the peer did not run; ``samples_per_unit`` is what one time covers
    (for the throughput column) and ``batch_size`` the batch of a step or epoch (0 elsewhere);
    ``ratios[other]`` = other's median / this median, so 2.0 means this peer is twice as fast as
    ``other``; only peers of the same device appear there. ``bytes`` is what one call must move at
    least (0: not counted) and ``copy_fraction`` its bandwidth over that of the same peer's copy in
    the same run (the ``bandwidth`` suite). The ``memory`` suite's rows measure bytes, not time:
    their samples are ``rise_bytes`` (``times`` is empty), and their median and ratios are taken
    over those, so there too a ratio of 2.0 means this peer needs half the memory of ``other``.
    """

    suite: str
    case: str
    op: str
    peer: str
    device: str
    precision: str
    samples_per_unit: int = 0
    batch_size: int = 0
    times: list[float] = field(default_factory=list)
    calls_per_sample: int = 0
    status: str = "ok"
    note: str = ""
    rel_diff: float | None = None
    bytes: int = 0
    copy_fraction: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    rise_bytes: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, peer: Peer, suite: str, case: str, op: str, **kwargs) -> Result:
        return cls(
            suite, case, op, peer.name, peer.device, peer.precision, note=peer.note, **kwargs
        )

    @property
    def samples(self) -> list:
        """What the median is taken over: seconds per unit, or the memory suite's bytes."""
        return self.rise_bytes if self.suite == "memory" else self.times

    @property
    def median(self) -> float | None:
        return float(np.median(self.samples)) if self.status == "ok" and self.samples else None

    @property
    def gb_per_s(self) -> float | None:
        """``bytes`` over the median, in 1e9 bytes per second; None where either is missing."""
        return self.bytes / self.median / 1e9 if self.bytes and self.median else None

    def annotate(self, text: str) -> None:
        """Append ``text`` to the note."""
        self.note = f"{self.note}, {text}" if self.note else text


def add_ratios(results: list[Result]) -> None:
    """Set each result's ``ratios`` to every other measured peer of its case, op and device."""
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for r in results:
        if r.median:  # measured, and not zero (a memory row's rise can be)
            groups.setdefault((r.suite, r.case, r.op), []).append(r)
    for group in groups.values():
        for r in group:
            r.ratios = {
                o.peer: o.median / r.median for o in group if o is not r and o.device == r.device
            }


def format_time(seconds: float | None) -> str:
    """Seconds in s, ms, us or ns, four significant digits; n/a for None."""
    if seconds is None:
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.4g} {unit}"
    return f"{seconds * 1e9:.4g} ns"


def format_bytes(count: float | None) -> str:
    """Bytes in GiB, MiB, KiB or B, four significant digits; n/a for None."""
    if count is None:
        return "n/a"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(count) >= scale:
            return f"{count / scale:.4g} {unit}"
    return f"{count:.4g} B"


def format_ratio(ratio: float, digits: int = 3) -> str:
    """A ratio to ``digits`` significant digits (four where it meets a goal, so that a ratio
    just under one does not print as equal to it), whole numbers with separators from 1000 on."""
    text = f"{ratio:.{digits}g}"
    return f"{ratio:,.0f}x" if float(text) >= 1000 else f"{text}x"


def _spread(samples: list[float]) -> str:
    """Interquartile range over the median, in percent ("-" for one sample or a median of 0)."""
    if len(samples) < 2:
        return "-"
    q1, q2, q3 = np.percentile(samples, (25, 50, 75))
    return f"{100 * (q3 - q1) / q2:.0f}%" if q2 else "-"


def _row(r: Result, measured: list[str]) -> list[str]:
    rate = f"{r.samples_per_unit / r.median:,.0f}" if r.median and r.samples_per_unit else ""
    gbps = "" if r.gb_per_s is None else f"{r.gb_per_s:.3g}"
    fraction = "" if r.copy_fraction is None else f"{100 * r.copy_fraction:.3g}%"
    diff = "" if r.rel_diff is None else f"{r.rel_diff:.1e}"
    ratios = [format_ratio(r.ratios[p]) if p in r.ratios else "" for p in measured]
    note = r.note if r.status == "ok" else f"not available: {r.status}"
    median = format_bytes(r.median) if r.suite == "memory" else format_time(r.median)
    cells = [r.case, r.op, r.peer, r.device, median, rate, gbps, fraction]
    return cells + [_spread(r.samples), diff, *ratios, note]


def table(results: list[Result]) -> str:
    """Fixed-width table: one row per result, one "x vs PEER" column per peer that was measured;
    columns empty in every row (GB/s outside the bandwidth suite, ...) are left out."""
    measured = list(dict.fromkeys(r.peer for r in results if r.median is not None))
    header = ["case", "op", "peer", "device", "median", "samples/s", "GB/s", "of copy", "IQR"]
    header += ["rel diff", *(f"x vs {p}" for p in measured), "note"]
    rows = [header] + [_row(r, measured) for r in results]
    kept = [i for i in range(len(header)) if any(row[i] for row in rows[1:])]
    rows = [[row[i] for i in kept] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _commit() -> str | None:
    """gpucnn's commit where it runs from a checkout; None where it is installed, even in a
    virtual environment inside another project's repository (whose commit it is not)."""
    root = Path(__file__).resolve().parents[2]  # a checkout's top folder, or site-packages
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(root.parent)}  # no repository above it
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7"],  # "-dirty": local changes
            cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10,
            env=env,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: str) -> dict:
    """Date, machine, versions and commit of this run."""
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "commit": _commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "gpucnn": package_version("gpucnn"),
        "cpu_threads": cpu_threads.threads(),
        "numpy": np.__version__,
        "torch": package_version("torch"),
        "cupy": next(
            filter(None, map(package_version, ("cupy-cuda12x", "cupy-cuda13x", "cupy"))), None
        ),
    }
    # glibc's allocator settings: they decide whether large buffers come back as fresh pages
    # (a page fault each) on every step, which moved PyTorch's CPU step by 25% here.
    malloc = {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")}
    if malloc:
        env["malloc"] = " ".join(f"{k}={v}" for k, v in malloc.items())
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    if device == "cuda":
        env["gpu"] = _gpu_name()
    return env


def _gpu_name() -> str | None:
    """The current CUDA device's name, from CuPy (the device gpucnn runs on)."""
    try:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())["name"]
    except Exception:  # no CuPy or no usable GPU: the peers' rows say why
        return None
    return name.decode() if isinstance(name, bytes) else str(name)


def header(env: dict, suite: str) -> str:
    """The line above a suite's table: where and with what it ran (the keys ``env`` has)."""
    keys = ("device", "commit", "date", "numpy", "torch", "cupy", "torch_threads", "gpu", "malloc")
    return f"gpucnn bench --suite {suite}: " + ", ".join(
        f"{k} {env[k]}" for k in keys if env.get(k) is not None
    )


def write_json(path: str, env: dict, args: dict, results: list[Result], verdicts=()) -> None:
    """``{"environment", "arguments", "results", "goals"}``: every sample, its median and GB/s,
    and the goals checked (:mod:`.goals`); written whole or not at all (:mod:`gpucnn.atomic`)."""
    rows = [{**asdict(r), "median": r.median, "gb_per_s": r.gb_per_s} for r in results]
    checked = [asdict(v) for v in verdicts]
    record = {"environment": env, "arguments": args, "results": rows, "goals": checked}
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))

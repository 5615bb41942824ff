"""The project's speed goals, checked against one run's results and printed under its table.

Each goal names the rows it reads (suite, case, peers); a goal whose rows the run did not measure
is left out. The ``bandwidth`` and ``compile`` suites mark their goals on each row instead (a
fraction of the copy, a time per process).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .report import Result, format_ratio, format_time


@dataclass(frozen=True)
class Verdict:
    """One goal against what was measured: ``text`` says which rows, the value and the goal."""

    suite: str
    text: str
    met: bool

    def line(self) -> str:
        return f"{self.suite}: {self.text}: {'met' if self.met else 'missed'}"


def _measured(results: list[Result], suite: str, peer: str) -> list[Result]:
    """The rows of ``peer`` in ``suite`` that have a median."""
    return [r for r in results if (r.suite, r.peer) == (suite, peer) and r.median is not None]


@dataclass(frozen=True)
class Faster:
    """``peer`` at least ``times`` as fast as ``other`` on ``case`` (the ratio of their medians)."""

    suite: str
    case: str
    peer: str
    other: str
    times: float

    def check(self, results: list[Result]) -> list[Verdict]:
        rows = _measured(results, self.suite, self.peer)
        row = next((r for r in rows if r.case == self.case), None)
        if row is None or self.other not in row.ratios:
            return []
        ratio = row.ratios[self.other]
        goal = format_ratio(self.times)
        text = f"{self.case}, {self.peer} vs {self.other} {format_ratio(ratio)} (goal >= {goal})"
        return [Verdict(self.suite, text, ratio >= self.times)]


@dataclass(frozen=True)
class Within:
    """``peer``'s median at most ``seconds`` on ``case`` (None: on every case of the suite)."""

    suite: str
    case: str | None
    peer: str
    seconds: float

    def check(self, results: list[Result]) -> list[Verdict]:
        rows = [r for r in _measured(results, self.suite, self.peer) if self.case in (None, r.case)]
        goal = format_time(self.seconds)
        return [
            Verdict(
                self.suite,
                f"{r.case}, {self.peer} {format_time(r.median)} (goal <= {goal})",
                r.median <= self.seconds,
            )
            for r in rows
        ]


@dataclass(frozen=True)
class FasterOnAverage:
    """On the ops whose name starts with ``ops``: the geometric mean of ``peer``'s ratios to
    ``other`` at least ``mean``, and none of them under ``floor``."""

    suite: str
    ops: str
    peer: str
    other: str
    mean: float
    floor: float

    def check(self, results: list[Result]) -> list[Verdict]:
        rows = [
            r for r in _measured(results, self.suite, self.peer)
            if r.op.startswith(self.ops) and self.other in r.ratios
        ]  # fmt: skip
        if not rows:
            return []
        ratios = [r.ratios[self.other] for r in rows]
        geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        worst = min(rows, key=lambda r: r.ratios[self.other])
        head = f"{len(rows)} {self.ops} rows, {self.peer} vs {self.other}"
        return [
            Verdict(
                self.suite,
                f"{head}: geometric mean {format_ratio(geomean)} (goal >= {self.mean:g}x)",
                geomean >= self.mean,
            ),
            Verdict(
                self.suite,
                f"{head}: slowest {format_ratio(min(ratios))}, {worst.case} {worst.op} "
                f"(goal: none under {self.floor:g}x)",
                min(ratios) >= self.floor,
            ),
        ]


STEP_CPU, STEP_GPU = "tutorial-mnist b256", "tutorial-mnist b64"
GOALS = (
    Faster("step", STEP_CPU, "gpucnn-cpu", "pytorch-cpu", 0.8),
    Faster("step", STEP_CPU, "gpucnn-cpu", "tutorial-loops", 1000),
    Within("step", STEP_GPU, "gpucnn-cuda-graph", 60e-6),
    Faster("step", STEP_GPU, "gpucnn-cuda-graph", "pytorch-cuda", 6),
    Faster("step", STEP_GPU, "gpucnn-cuda-graph", "pytorch-cuda-graph", 1.2),
    Within("epoch", None, "gpucnn-cuda", 0.1),
    Within("epoch", None, "gpucnn-cuda-graph", 0.1),
    FasterOnAverage("ops", "conv", "gpucnn-cuda", "pytorch-cuda", 1.0, 0.8),
    FasterOnAverage("ops", "conv", "gpucnn-cuda-graph", "pytorch-cuda-graph", 1.0, 0.8),
)


def check(results: list[Result]) -> list[Verdict]:
    """Every goal whose rows ``results`` has (ratios already added), in GOALS order."""
    return [verdict for goal in GOALS for verdict in goal.check(results)]

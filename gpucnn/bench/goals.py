"""The project's speed goals, checked against one run's results and printed under its table.

Each goal names the rows it reads (suite, case, peers). A goal whose rows the run does not have
is left out; one whose peer could not run here (no PyTorch, no GPU) is printed as not checked,
with the reason, and one whose gpucnn peer failed (its setup, its graph capture or its timed
calls) as missed. The ``bandwidth`` and ``compile`` suites also note each row's goal on the row.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from . import bandwidth, coldstart
from .peers import own_failure
from .report import Result, format_ratio, format_time


@dataclass(frozen=True)
class Verdict:
    """One goal against what was measured: ``text`` says which rows, the value and the goal;
    ``met`` is None where a peer it needs could not run here (``text`` then says why)."""

    suite: str
    text: str
    met: bool | None

    def line(self) -> str:
        outcome = {True: "met", False: "missed", None: "not checked"}[self.met]
        return f"{self.suite}: {self.text}: {outcome}"


def _rows(results: list[Result], suite: str, peer: str, case: str | None = None) -> list[Result]:
    """The rows of ``peer`` in ``suite``, on ``case`` (None: on every case), run or not."""
    return [r for r in results if (r.suite, r.peer) == (suite, peer) and case in (None, r.case)]


def _not_checked(suite: str, text: str, rows: list[Result]) -> Verdict | None:
    """For the first of ``rows`` without a median, a verdict saying why: "not checked" where its
    peer could not run here, but "missed" where a gpucnn peer failed (its setup, its capture or
    its timed calls: gpucnn's own error, which no other peer can excuse)."""
    for r in rows:
        if r.median is None:
            reason = "no samples were taken" if r.status == "ok" else r.status
            met = False if own_failure(r.peer, r.status) else None
            return Verdict(suite, f"{text}: {r.peer} not available ({reason})", met)
    return None


def _unpaired(suite: str, text: str, mine: list[Result], theirs: list[Result]) -> list | None:
    """None where both peers' rows are there and ran (the goal can be checked); else what to
    report instead: nothing where either peer has no rows, or why one of them could not run."""
    if not mine or not theirs:
        return []
    skipped = _not_checked(suite, text, mine + theirs)
    return [skipped] if skipped else None


@dataclass(frozen=True)
class Faster:
    """``peer`` at least ``times`` as fast as ``other`` on ``case`` (the ratio of their medians)."""

    suite: str
    case: str
    peer: str
    other: str
    times: float

    def check(self, results: list[Result]) -> list[Verdict]:
        mine = _rows(results, self.suite, self.peer, self.case)
        theirs = _rows(results, self.suite, self.other, self.case)
        text = f"{self.case}, {self.peer} vs {self.other}"
        instead = _unpaired(self.suite, text, mine, theirs)
        if instead is not None:
            return instead
        ratio, goal = mine[0].ratios[self.other], format_ratio(self.times)
        text += f" {format_ratio(ratio, 4)} (goal >= {goal})"
        return [Verdict(self.suite, text, ratio >= self.times)]


@dataclass(frozen=True)
class Within:
    """``peer``'s median at most ``seconds`` on ``case`` (None: on every case of the suite), on
    ``op`` (None: every op); with ``epoch_of``, only for rows that are a whole epoch of that many
    samples (an epoch goal is for a whole Fashion-MNIST epoch; a shorter or longer one is not
    checked)."""

    suite: str
    case: str | None
    peer: str
    seconds: float
    op: str | None = None
    epoch_of: int = 0

    def _not_whole(self, r: Result) -> str | None:
        """Why ``r`` is not the whole epoch the goal is for; None where it is, or needs none. A
        whole epoch trains every whole batch of the set (the epoch suite drops the last partial
        one: 58,880 of 60,000 samples at batch 1280)."""
        if not self.epoch_of:
            return None
        whole = self.epoch_of // r.batch_size * r.batch_size
        if r.samples_per_unit == whole:
            return None
        return f"{r.samples_per_unit:,} samples, the goal is for a whole epoch's {whole:,}"

    def check(self, results: list[Result]) -> list[Verdict]:
        goal, verdicts = format_time(self.seconds), []
        for r in _rows(results, self.suite, self.peer, self.case):
            if self.op not in (None, r.op):
                continue
            text = f"{r.case}, {r.op}, {self.peer}" if self.op else f"{r.case}, {self.peer}"
            skipped = _not_checked(self.suite, text, [r])
            why = None if skipped else self._not_whole(r)
            if why:
                skipped = Verdict(self.suite, f"{text}: {why}", None)
            verdicts.append(
                skipped
                or Verdict(
                    self.suite,
                    f"{text} {format_time(r.median)} (goal <= {goal})",
                    r.median <= self.seconds,
                )
            )
        return verdicts


@dataclass(frozen=True)
class CopyFraction:
    """Every op of the bandwidth suite at least ``fraction`` of the same peer's copy bandwidth
    in the same run (the copy itself excepted)."""

    fraction: float

    def check(self, results: list[Result]) -> list[Verdict]:
        verdicts = []
        for r in results:
            if r.suite != "bandwidth" or r.op == "copy":  # only gpucnn peers run this suite
                continue
            text = f"{r.op}, {r.peer}"
            if r.copy_fraction is None:
                verdicts.append(_not_checked("bandwidth", text, [r]) or Verdict(
                    "bandwidth", f"{text}: no copy measured to compare with", None
                ))  # fmt: skip
                continue
            verdicts.append(Verdict(
                "bandwidth", f"{text} {r.copy_fraction:.0%} of the copy (goal >= {self.fraction:.0%})",
                r.copy_fraction >= self.fraction,
            ))  # fmt: skip
        return verdicts


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
        mine, theirs = (
            [r for r in _rows(results, self.suite, name) if r.op.startswith(self.ops)]
            for name in (self.peer, self.other)
        )
        head = f"{self.ops} rows, {self.peer} vs {self.other}"
        instead = _unpaired(self.suite, head, mine, theirs)
        if instead is not None:
            return instead
        paired = [r for r in mine if self.other in r.ratios]  # the ops both ran
        if not paired:
            return []
        geomean = statistics.geometric_mean(r.ratios[self.other] for r in paired)
        worst = min(paired, key=lambda r: r.ratios[self.other])
        slowest = worst.ratios[self.other]
        head = f"{len(paired)} {head}"
        return [
            Verdict(
                self.suite,
                f"{head}: geometric mean {format_ratio(geomean, 4)} (goal >= {self.mean:g}x)",
                geomean >= self.mean,
            ),
            Verdict(
                self.suite,
                f"{head}: slowest {format_ratio(slowest, 4)}, {worst.case} {worst.op} "
                f"(goal: none under {self.floor:g}x)",
                slowest >= self.floor,
            ),
        ]


STEP_CPU, STEP_GPU = "tutorial-mnist b256", "tutorial-mnist b64"
TRAINING_SET = 60_000  # Fashion-MNIST's training images: a whole epoch is every whole batch
GOALS = (
    Faster("step", STEP_CPU, "gpucnn-cpu", "pytorch-cpu", 0.8),
    Faster("step", STEP_CPU, "gpucnn-cpu", "tutorial-loops", 1000),
    Within("step", STEP_GPU, "gpucnn-cuda-graph", 60e-6),
    Faster("step", STEP_GPU, "gpucnn-cuda-graph", "pytorch-cuda", 6),
    Faster("step", STEP_GPU, "gpucnn-cuda-graph", "pytorch-cuda-graph", 1.2),
    Within("epoch", None, "gpucnn-cuda", 0.1, epoch_of=TRAINING_SET),
    Within("epoch", None, "gpucnn-cuda-graph", 0.1, epoch_of=TRAINING_SET),
    FasterOnAverage("ops", "conv", "gpucnn-cuda", "pytorch-cuda", 1.0, 0.8),
    FasterOnAverage("ops", "conv", "gpucnn-cuda-graph", "pytorch-cuda-graph", 1.0, 0.8),
    CopyFraction(bandwidth.GOAL),
    *(
        Within("compile", row.case, "gpucnn-cuda", row.goal, op=op)
        for op, row in coldstart.GOALS.items()
        if row.goal is not None
    ),
)


def check(results: list[Result]) -> list[Verdict]:
    """Every goal whose rows ``results`` has (ratios already added), in GOALS order."""
    return [verdict for goal in GOALS for verdict in goal.check(results)]

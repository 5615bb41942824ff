"""Benchmarks against the peers: ``gpucnn bench --suite ops|step|epoch --device cpu|cuda|cuda-emu``,
and against goals: ``--suite bandwidth`` (ops as a fraction of the device's copy) and ``--suite
compile`` (cold kernel compile and warm first step, CUDA only).

Peers run in one process, alternating after a warm-up; the table gives medians and ratios between
peers of the same device only; ``--json`` records every sample with versions and commit.
"""

from .command import add_arguments, main, run

__all__ = ["add_arguments", "main", "run"]

"""Shared fixtures: a freshly seeded ``rng`` (seed reported on failure) and the ``backend`` fixture;
GPUCNN_DEBUG unset in every test.

``backend`` runs a test once per device: ``cpu`` always; ``cuda`` (marked ``gpu``) and ``cuda-emu``
(marked ``emu``) are skipped, with the reason, where they cannot be created, so they show up as
skipped in the summary rather than vanishing. ``kernel_backend`` is the same without ``cpu``. Set ``GPUCNN_TEST_SEED`` to replay a failing seed.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from gpucnn.backend import get_backend
from gpucnn.errors import GpuUnavailableError

SEED_ENV = "GPUCNN_TEST_SEED"

BACKENDS = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.gpu),
    pytest.param("cuda-emu", id="cuda-emu", marks=pytest.mark.emu),
]


@pytest.fixture(autouse=True)
def _errors_as_users_see_them(monkeypatch):
    """Every test sees the command line's one-line errors, whatever the shell sets: GPUCNN_DEBUG
    (tracebacks instead) is for people debugging, and scripts/gpu_check.sh sets it for its logs."""
    monkeypatch.delenv("GPUCNN_DEBUG", raising=False)


def fresh_seed() -> int:
    """``$GPUCNN_TEST_SEED`` when set (to replay a failure), else 128 bits of fresh entropy."""
    fixed = os.environ.get(SEED_ENV)
    return int(fixed) if fixed else int(np.random.SeedSequence().entropy)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A new generator per test, seeded from entropy; a failing test's report shows the seed."""
    seed = fresh_seed()
    request.node.user_properties.append(("rng_seed", seed))
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Add the rng seed, and how to replay it, to the report of a failing test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, seed in item.user_properties:
            if name == "rng_seed":
                report.sections.append(("rng seed", f"replay with {SEED_ENV}={seed}"))


def make_backend(name: str):
    """The backend for ``name``, or a pytest skip with the reason when that device is not usable."""
    if name == "cpu":
        return get_backend("cpu")
    try:
        return get_backend(name)
    except GpuUnavailableError as err:  # no GPU / no CuPy, or (cuda-emu) no C++ compiler
        pytest.skip(f"{name} backend unavailable: {err}")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend in turn: cpu, cuda (gpu) and cuda-emu (emu), skipped with a reason if absent."""
    return make_backend(request.param)


@pytest.fixture(params=[p for p in BACKENDS if p.values[0] != "cpu"])
def kernel_backend(request):
    """Each backend that runs the CUDA kernels (cuda, cuda-emu), for the tests that compare one
    with the CPU backend (the CPU against itself would check nothing)."""
    return make_backend(request.param)


@pytest.fixture
def without_cupy(monkeypatch):
    """This machine as one without CuPy, GPU or not: ``import cupy`` fails and no backend is
    cached, so the missing-GPU errors can be checked everywhere."""
    import gpucnn.backend as backends

    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(backends, "_instances", {})
    monkeypatch.setattr(backends, "_auto_fallback_reported", False)


@pytest.fixture
def cpu():
    """The CPU backend, the baseline every other device is compared with."""
    return get_backend("cpu")

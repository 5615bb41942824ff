"""Shared fixtures: a freshly seeded ``rng`` (seed reported on failure) and the ``backend`` fixture;
GPUCNN_DEBUG unset in every test.

``backend`` runs a test once per device: ``cpu`` always; ``cuda`` (marked ``gpu``) and ``cuda-emu``
(marked ``emu``) are skipped, with the reason, where they cannot be created, so they show up as
skipped in the summary rather than vanishing. ``kernel_backend`` is the same without ``cpu``. Set ``GPUCNN_TEST_SEED`` to replay a failing seed.
On a GPU machine ``GPUCNN_REQUIRE_GPU=1`` (set by scripts/gpu_check.sh) makes an unusable ``cuda``
backend a failure, not a skip, so that a GPU run whose every cuda test skipped cannot pass.
In this suite ``np.testing.assert_allclose`` fails on NaN unless a test passes ``equal_nan=True``.
Likewise ``GPUCNN_REQUIRE_EMU=1`` and ``GPUCNN_REQUIRE_TORCH=1`` (set by .ci/run) stop the run at
its start if ``cuda-emu`` (a C++ compiler) or PyTorch is missing: their tests would all skip.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from gpucnn.atomic import _umask
from gpucnn.backend import get_backend
from gpucnn.data.datasets import write_idx_dataset
from gpucnn.errors import GpuUnavailableError

SEED_ENV = "GPUCNN_TEST_SEED"
REQUIRE_GPU_ENV = "GPUCNN_REQUIRE_GPU"
REQUIRE_EMU_ENV, REQUIRE_TORCH_ENV = "GPUCNN_REQUIRE_EMU", "GPUCNN_REQUIRE_TORCH"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# The devices that run kernels_cuda/: the GPU, and its emulation on the CPU.
KERNEL_BACKENDS = [
    pytest.param("cuda", id="cuda", marks=pytest.mark.gpu),
    pytest.param("cuda-emu", id="cuda-emu", marks=pytest.mark.emu),
]
BACKENDS = [pytest.param("cpu", id="cpu"), *KERNEL_BACKENDS]


def _assert_allclose_nan_fails(actual, desired, *args, equal_nan=False, **kwargs):
    """NumPy's assert_allclose with ``equal_nan`` off unless a test turns it on: NumPy's default
    lets NaN equal NaN, so two paths broken alike (a kernel that writes NaN, compared with
    itself eagerly and replayed) passed such a comparison."""
    return _numpy_assert_allclose(actual, desired, *args, equal_nan=equal_nan, **kwargs)


_numpy_assert_allclose = np.testing.assert_allclose
np.testing.assert_allclose = _assert_allclose_nan_fails


def pytest_sessionstart(session):
    """Stop the run before any test if a device or library that REQUIRE_EMU_ENV or
    REQUIRE_TORCH_ENV asks for is missing: every kernel or PyTorch check would skip, and the
    run would pass without them."""
    missing = []
    if os.environ.get(REQUIRE_EMU_ENV) == "1":
        try:
            get_backend("cuda-emu")
        except GpuUnavailableError as err:
            missing.append(f"{REQUIRE_EMU_ENV}=1 but cuda-emu is unavailable: {err}")
    if os.environ.get(REQUIRE_TORCH_ENV) == "1":
        try:
            import torch  # noqa: F401
        except ImportError as err:
            missing.append(f"{REQUIRE_TORCH_ENV}=1 but PyTorch cannot be imported: {err}")
    if missing:
        raise pytest.UsageError("; ".join(missing))


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
    """The backend for ``name``, or a pytest skip with the reason when that device is not usable
    (a failure instead for ``cuda`` under ``GPUCNN_REQUIRE_GPU=1``)."""
    if name == "cpu":
        return get_backend("cpu")
    try:
        return get_backend(name)
    except GpuUnavailableError as err:  # no GPU / no CuPy, or (cuda-emu) no C++ compiler
        if name == "cuda" and os.environ.get(REQUIRE_GPU_ENV) == "1":
            pytest.fail(f"{REQUIRE_GPU_ENV}=1 but the cuda backend is unavailable: {err}")
        pytest.skip(f"{name} backend unavailable: {err}")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend in turn: cpu, cuda (gpu) and cuda-emu (emu), skipped with a reason if absent."""
    return make_backend(request.param)


@pytest.fixture(params=KERNEL_BACKENDS)
def kernel_backend(request):
    """Each backend that runs the CUDA kernels (cuda, cuda-emu), for the tests that compare one
    with the CPU backend (the CPU against itself would check nothing)."""
    return make_backend(request.param)


@pytest.fixture
def fresh_registry(monkeypatch):
    """A backend registry with nothing cached and no fallback reported yet."""
    import gpucnn.backend as backends

    monkeypatch.setattr(backends, "_instances", {})
    monkeypatch.setattr(backends, "_auto_fallback_reported", False)


@pytest.fixture
def without_cupy(monkeypatch, fresh_registry):
    """This machine as one without CuPy, GPU or not: ``import cupy`` fails (and no backend is
    cached), so the missing-GPU errors can be checked everywhere."""
    monkeypatch.setitem(sys.modules, "cupy", None)


@pytest.fixture
def umask():
    """``umask(mask)`` sets the process's umask for the rest of the test, then puts it back."""
    old = _umask()
    yield os.umask
    os.umask(old)


@pytest.fixture
def one_plane_block(monkeypatch):
    """The plane-looping kernels' grids held to one block row (PLANE_LOOP_BLOCKS = 1); yields
    the pool2d launches' grids, recorded through ``record_pool_grids(backend)``. Pooling's
    cached launch plans are dropped before and after: a plan made earlier under the usual value
    keeps its grid of a row per plane, and the test would then walk no planes at all."""
    from gpucnn.backend.launchers import batchnorm, launching, pool2d

    monkeypatch.setattr(launching, "PLANE_LOOP_BLOCKS", 1)
    monkeypatch.setattr(batchnorm, "PLANE_LOOP_BLOCKS", 1)
    pool2d._pool_plan.cache_clear()
    grids: list[tuple] = []

    def record_pool_grids(backend) -> list[tuple]:
        launch = backend._launch

        def recording(family, kernel, grid, *args):
            if family == "pool2d":
                grids.append(tuple(grid))
            launch(family, kernel, grid, *args)

        monkeypatch.setattr(backend, "_launch", recording)
        return grids

    yield record_pool_grids
    pool2d._pool_plan.cache_clear()


def write_fake_idx_dataset(folder, n_train=20, n_test=10, gz=True):
    """Four small random 28x28 IDX files named like MNIST's, in ``folder``; labels cycle 0..9."""
    rng = np.random.default_rng(0)
    train, test = [
        (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10)
        for n in (n_train, n_test)
    ]
    return write_idx_dataset(folder, train, test, compress=gz)


def load_script(name: str):
    """scripts/<name>.py as a module, to call its main() in-process."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cpu():
    """The CPU backend, the baseline every other device is compared with."""
    return get_backend("cpu")

"""Device ``"cuda"``: the CUDA launchers over CuPy arrays; checks that say why a GPU is unusable."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import GpuUnavailableError, refused_in_capture
from . import kernels
from .cuda_backend import CudaBackend


class CupyBackend(CudaBackend):
    """Device ``"cuda"``: CuPy arrays on the current GPU, kernels compiled by CuPy (NVRTC)."""

    def __init__(self) -> None:
        import cupy

        super().__init__(kernels.CupyRunner())
        self.xp = cupy

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(a, dtype=dtype)

    def _host_copy(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)

    def owns(self, a: Any) -> bool:
        return isinstance(a, self.xp.ndarray)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def warmup(self) -> None:
        """Compile every kernel family now rather than at first use."""
        self.runner.warmup()

    def graph_session(self) -> CupyGraphSession:
        return CupyGraphSession(self)


class CupyGraphSession:
    """One step run eagerly, then captured as a CUDA graph, then replayed (see ``captured_step``).

    The step runs on a stream of its own (capture needs one other than the default stream) and
    allocates from a memory pool of its own, kept as long as the graph: a temporary freed inside
    the capture is still the graph's memory at every replay, so nothing else may be handed it.
    Eager runs on the same stream and pool first fill the pool (so the capture need not grow it),
    compile the kernels and create the optimizer's state. Replays go to the caller's stream.
    The arrays the captured step freed (a layer's activations once its backward is done) are
    still the graph's, in that pool's free list: nothing may free that pool's blocks while the
    graph lives.
    """

    def __init__(self, backend: CupyBackend) -> None:
        self._backend, self._cupy = backend, backend.xp
        self._stream = self._cupy.cuda.Stream(non_blocking=True)
        self._pool = self._cupy.cuda.MemoryPool()
        self._graph: Any = None
        self._outputs: Any = None

    @property
    def captured(self) -> bool:
        return self._graph is not None

    @contextlib.contextmanager
    def _session_stream(self) -> Iterator[None]:
        """The session's stream, pool and capture-safe ops, ordered after the caller's work and
        before the caller's next."""
        cuda = self._cupy.cuda
        caller = cuda.get_current_stream()
        self._stream.wait_event(caller.record())
        try:
            with self._backend.capture_safe_ops(), self._stream:
                with cuda.using_allocator(self._pool.malloc):
                    yield
        finally:
            caller.wait_event(self._stream.record())

    def run(self, fn: Callable, inputs: tuple) -> Any:
        """``fn(*inputs)``, eagerly, as the capture will see it."""
        with self._session_stream():
            return fn(*inputs)

    def capture(self, fn: Callable, inputs: tuple) -> None:
        """Record ``fn(*inputs)`` as the graph; nothing runs until :meth:`replay`. A read of the
        device in the step is a GraphCaptureError, not CUDA's bare refusal."""
        with self._session_stream(), self._backend.capturing_graph():
            self._stream.begin_capture()
            try:
                outputs = fn(*inputs)
            except BaseException as err:
                with contextlib.suppress(Exception):  # the step's error is the one to report
                    self._stream.end_capture()
                if _refused_in_capture(err):  # float(), print() of a CuPy array: no to_numpy
                    raise refused_in_capture(err) from err
                raise
            self._graph = self._stream.end_capture()
        self._outputs = outputs

    def replay(self) -> Any:
        """Launch the graph on the caller's stream; returns the captured outputs, rewritten."""
        self._graph.launch(stream=self._cupy.cuda.get_current_stream())
        return self._outputs


def _refused_in_capture(err: BaseException) -> bool:
    """True for a refusal of what a stream capture cannot record: CUDA's (a synchronising copy
    to the host: cudaErrorStreamCaptureUnsupported, ...Invalidated, ...Implicit; CuPy's
    CUDARuntimeError is a RuntimeError) or CuPy's own (a cuBLAS call while "capturing")."""
    return isinstance(err, RuntimeError) and "captur" in str(err).lower()


_INSTALL = "pip install 'gpucnn[cuda12]' (CUDA 12 driver) or 'gpucnn[cuda13]' (CUDA 13 driver)"


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def _check_device(cupy: Any) -> None:
    """Raise GpuUnavailableError naming what is missing: driver, device, or the right CuPy wheel."""
    runtime = cupy.cuda.runtime
    try:
        driver = runtime.driverGetVersion()
        wheel = runtime.runtimeGetVersion()
    except Exception as err:  # CuPy raises its own CUDARuntimeError, or fails to load libcudart
        raise GpuUnavailableError(
            f"the CUDA runtime could not be loaded ({err}); {_INSTALL}"
        ) from err
    if driver == 0:
        raise GpuUnavailableError("no NVIDIA driver found: install the NVIDIA driver to use 'cuda'")
    if driver // 1000 < wheel // 1000:
        raise GpuUnavailableError(
            f"the installed CuPy wheel needs CUDA {_cuda_version(wheel)} but the NVIDIA driver "
            f"supports CUDA {_cuda_version(driver)}: update the driver, or install the CuPy "
            f"wheel for your driver instead: {_INSTALL}"
        )
    try:
        count = runtime.getDeviceCount()
    except Exception as err:
        raise GpuUnavailableError(f"no usable NVIDIA GPU: {err}") from err
    if count == 0:
        raise GpuUnavailableError("no NVIDIA GPU found (the driver reports 0 devices)")


def create_cuda_backend() -> CupyBackend:
    """The ``"cuda"`` backend, or one GpuUnavailableError saying what is missing and the fix."""
    try:
        import cupy
    except ModuleNotFoundError as err:
        if err.name != "cupy":
            raise GpuUnavailableError(f"CuPy failed to import ({err}); {_INSTALL}") from err
        raise GpuUnavailableError(f"CuPy is not installed: {_INSTALL}") from err
    except Exception as err:  # a broken install: two CuPy wheels, missing CUDA libraries, ...
        raise GpuUnavailableError(
            f"CuPy failed to import ({err}); reinstall one wheel: {_INSTALL}"
        ) from err
    _check_device(cupy)
    return CupyBackend()

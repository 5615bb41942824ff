"""``CupyGraphSession`` driven by a stand-in for CuPy's stream, event, pool and graph API.

No GPU is needed: the stand-in logs each call, so the test pins down the order the session
promises (the session's stream waits for the caller's work, the capture sees the capture-safe ops
and the private pool, replays go to the caller's stream) and that a failing capture reports the
step's own error. The real capture runs in ``test_captured_step.py`` on a GPU.
"""

from __future__ import annotations

import contextlib
import types

import pytest

from gpucnn.backend.cuda_backend import CudaBackend
from gpucnn.backend.cupy_backend import CupyGraphSession
from gpucnn.errors import GraphCaptureError


class FakeCuda:
    """Just the parts of ``cupy.cuda`` the session uses, logging every call."""

    def __init__(self):
        self.log: list[tuple] = []
        self.current = FakeStream(self, "caller", non_blocking=False)

    def Stream(self, non_blocking=False):  # noqa: N802 (CuPy's name)
        return FakeStream(self, "session", non_blocking)

    def MemoryPool(self):  # noqa: N802
        return types.SimpleNamespace(malloc="private pool")

    def get_current_stream(self):
        return self.current

    @contextlib.contextmanager
    def using_allocator(self, allocator):
        self.log.append(("allocator", allocator))
        yield
        self.log.append(("allocator", "default"))


class FakeStream:
    def __init__(self, cuda, name, non_blocking):
        self.cuda, self.name, self.non_blocking = cuda, name, non_blocking

    def __enter__(self):
        self.previous, self.cuda.current = self.cuda.current, self
        return self

    def __exit__(self, *exc):
        self.cuda.current = self.previous

    def record(self):
        self.cuda.log.append(("record", self.name))
        return f"event of {self.name}"

    def wait_event(self, event):
        self.cuda.log.append(("wait", self.name, event))

    def begin_capture(self):
        self.cuda.log.append(("begin_capture", self.name))

    def end_capture(self):
        self.cuda.log.append(("end_capture", self.name))
        return types.SimpleNamespace(
            launch=lambda stream: self.cuda.log.append(("launch", stream.name))
        )


class CUDARuntimeError(RuntimeError):  # noqa: N818 (CuPy's name, which the session reads)
    """Stands in for ``cupy.cuda.runtime.CUDARuntimeError``."""


class FakeBackend(CudaBackend):
    """The CUDA backend's flags and checks over the fake ``cupy.cuda``; host copies are free."""

    def __init__(self, cuda):
        super().__init__(runner=None)
        self.xp = types.SimpleNamespace(cuda=cuda)

    def _host_copy(self, a):
        return a


@pytest.fixture
def session():
    cuda = FakeCuda()
    backend = FakeBackend(cuda)
    return CupyGraphSession(backend), backend, cuda


def test_capture_and_replay_order(session):
    graph_session, backend, cuda = session
    assert graph_session._stream.non_blocking  # capture refuses the legacy default stream

    def step(x):
        cuda.log.append(("step", cuda.current.name, backend.capture_safe))
        return x + 1

    assert graph_session.run(step, (1,)) == 2
    assert not graph_session.captured
    graph_session.capture(step, (5,))
    assert graph_session.captured and not backend.capture_safe
    assert graph_session.replay() == 6 and graph_session.replay() == 6  # the captured outputs
    assert cuda.log == [
        ("record", "caller"), ("wait", "session", "event of caller"),
        ("allocator", "private pool"), ("step", "session", True), ("allocator", "default"),
        ("record", "session"), ("wait", "caller", "event of session"),
        ("record", "caller"), ("wait", "session", "event of caller"),
        ("allocator", "private pool"), ("begin_capture", "session"), ("step", "session", True),
        ("end_capture", "session"), ("allocator", "default"),
        ("record", "session"), ("wait", "caller", "event of session"),
        ("launch", "caller"), ("launch", "caller"),
    ]  # fmt: skip


def test_a_failing_capture_reports_the_steps_error(session):
    graph_session, backend, cuda = session

    def step():
        raise RuntimeError("the step's own error")

    with pytest.raises(RuntimeError, match="the step's own error"):
        graph_session.capture(step, ())
    assert not graph_session.captured and not backend.capture_safe
    assert ("end_capture", "session") in cuda.log  # the capture was ended all the same


def test_a_read_of_the_device_in_the_capture_is_refused_by_name(session):
    """to_numpy() (through which the library reads: a loss's checks) is free in an eager run and
    a GraphCaptureError, before any copy, while the step is captured."""
    graph_session, backend, cuda = session

    def step():
        return backend.to_numpy("the loss")

    assert graph_session.run(step, ()) == "the loss"
    with pytest.raises(GraphCaptureError, match=r"read the device \(to_numpy\(\)\).*check_finite"):
        graph_session.capture(step, ())
    assert not graph_session.captured and not backend.capturing
    assert backend.to_numpy("after") == "after"


@pytest.mark.parametrize(
    "refusal",
    [
        "cudaErrorStreamCaptureUnsupported: operation not permitted when stream is capturing",
        "cuBLAS function cannot be called during stream capture",  # CuPy's own words may vary
    ],
)
def test_cudas_refusal_of_a_read_in_the_capture_is_named(session, refusal):
    """float() or print() of a CuPy array in the step reaches CUDA, which refuses the copy in a
    capture (and CuPy refuses cuBLAS there): that error becomes a GraphCaptureError that quotes
    it and says what a captured step must not do; other CUDA errors pass as they are."""
    graph_session, backend, cuda = session

    def step(message):
        raise CUDARuntimeError(message)

    quoted = rf"capturing the step as a CUDA graph failed \({refusal}\).*read the device"
    with pytest.raises(GraphCaptureError, match=quoted) as e:
        graph_session.capture(step, (refusal,))
    assert isinstance(e.value.__cause__, CUDARuntimeError)
    assert ("end_capture", "session") in cuda.log and not graph_session.captured
    with pytest.raises(CUDARuntimeError, match="cudaErrorIllegalAddress"):
        graph_session.capture(step, ("cudaErrorIllegalAddress: an illegal memory access",))

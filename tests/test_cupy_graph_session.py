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


@pytest.fixture
def session():
    cuda = FakeCuda()
    backend = types.SimpleNamespace(xp=types.SimpleNamespace(cuda=cuda), capture_safe=False)
    backend.capture_safe_ops = types.MethodType(CudaBackend.capture_safe_ops, backend)
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

"""``Module`` and ``Parameter``: the layer base class, with parameters, buffers and devices.

A module's forward caches what its backward needs; ``backward(grad_out)`` returns the input gradient
and *adds* parameter gradients into ``Parameter.grad``; an optimizer applies them. ``Sequential``
releases each layer's cache as soon as its backward is done (``release_forward``), so a model's
backward runs once per forward and its activations do not outlive the step. A layer's forward
keeps its output's shape, dtype and device (``_keep_output``) and its backward refuses a ``grad_out``
of any other (``_check_grad_out``): a kernel or a NumPy broadcast would otherwise read past it or
stretch it into a wrong gradient without a word, or the gradient would come back on the wrong
device. A module has no device of its own: it is wherever its arrays are (``to(device)`` moves
them).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..backend import Backend, backend_of, get_backend
from ..errors import device_mismatch
from ..functional import check_flag
from ..shapes import non_negative_int

_threads_inference = threading.local()


def _inference_counts() -> collections.Counter:
    """This thread's open ``Module.inference()`` contexts, counted per module (a module counted
    is in one, whatever order they end in; a copy of it is not)."""
    if not hasattr(_threads_inference, "counts"):
        _threads_inference.counts = collections.Counter()
    return _threads_inference.counts


class Parameter:
    """A trainable array ``data`` and its accumulated gradient ``grad`` (same shape and device).

    Zeroing is lazy: ``zero_grad()`` only marks the gradient zero, and the next ``accumulate(g)``
    takes ``g`` itself as the gradient, so a training step pays no memset and no add per parameter
    (on a GPU, two launches or graph nodes each). Reading ``grad`` while it is marked zero fills it
    with zeros first.
    """

    def __init__(self, data: Any):
        self.data = data
        self.grad = backend_of(data, "Parameter data").xp.zeros_like(data)

    @property
    def grad(self) -> Any:
        if self._grad_is_zero:
            self._grad[...] = 0
            self._grad_is_zero = False
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        self._grad, self._grad_is_zero = value, False

    def zero_grad(self) -> None:
        self._grad_is_zero = True

    def accumulate(self, g: Any) -> None:
        """``grad += g``. Right after ``zero_grad`` the gradient becomes ``g`` itself when ``g`` is
        like it (same array type, shape and dtype, C-contiguous): layers pass arrays they have just
        made and keep no other reference to. Otherwise ``g`` is copied in."""
        if not self._grad_is_zero:
            self._grad += g
            return
        old = self._grad
        alike = type(g) is type(old) and g.shape == old.shape and g.dtype == old.dtype
        if alike and g.flags.c_contiguous:
            self.grad = g
        else:
            old[...] = g
            self._grad_is_zero = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of layers and containers: ``layer(x)`` is ``layer.forward(x)``."""

    training: bool = True
    # Whether forward(x, relu=True) rectifies the output, and backward(g, relu=True) also passes
    # the gradient through a ReLU right before this layer (see ``Sequential``).
    fuses_next_relu: bool = False
    fuses_previous_relu: bool = False
    # (shape, dtype, backend) of the last forward's output, which backward's grad_out must have.
    _output_spec: tuple[tuple[int, ...], np.dtype, Backend] | None = None
    # The attributes in which forward keeps arrays for backward (``release_forward`` drops them).
    _forward_arrays: tuple[str, ...] = ()

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array: Any) -> None:
        """Keep ``array`` as state that moves and saves with the module but is not trained."""
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad_out: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def _keep_output(self, y: Any) -> Any:
        """Remember ``y``'s shape, dtype and device for :meth:`_check_grad_out`; returns ``y``."""
        self._output_spec = (tuple(y.shape), np.dtype(y.dtype), backend_of(y))
        return y

    def _check_forward_ran(self) -> None:
        """RuntimeError when there was no forward for a backward to follow."""
        if self._output_spec is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: called before forward (or after "
                "release_forward(), which a Sequential's backward calls on each layer once it is "
                "done, or after a forward within inference()); run the forward first"
            )

    @contextlib.contextmanager
    def inference(self) -> Iterator[Module]:
        """Within it, no backward follows this module's forwards (evaluation, prediction), much as
        within ``torch.no_grad()``, but for this module and those in it, in this thread: a
        Sequential frees each layer's arrays as soon as that layer's forward is done, so its peak
        is about a layer's input and output rather than every layer's, and whatever a forward
        kept is freed on the way out. The mode stays as it is: call ``eval()`` for batch norm's
        running statistics and no dropout. Contexts may nest, and end in any order."""
        modules = [module for _, module in self.named_modules()]
        open_here = _inference_counts()
        open_here.update(modules)
        try:
            yield self
        finally:
            open_here -= collections.Counter(modules)  # in place; drops the counts that reach 0
            self.release_forward()

    @property
    def _inference(self) -> bool:
        """Whether an ``inference()`` context around this module is open in this thread."""
        return _inference_counts()[self] > 0

    def release_forward(self) -> None:
        """Drop what the last forward kept for backward (in this module and every one in it), so
        that its arrays' memory goes back now, not at the next forward; a backward then needs a
        new forward. :class:`~gpucnn.nn.container.Sequential` calls it on each layer as soon as
        its backward is done, as PyTorch frees a graph's saved tensors."""
        for _, module in self.named_modules():
            for name in module._forward_arrays:
                object.__setattr__(module, name, None)
            module._output_spec = None

    def _check_grad_out(self, grad_out: Any) -> None:
        """Raise ValueError (TypeError, DeviceMismatchError) unless ``grad_out`` has the shape
        (dtype, device) of the last forward's output, and RuntimeError when there was no forward."""
        self._check_forward_ran()
        op = f"{type(self).__name__}.backward"
        shape, dtype, backend = self._output_spec
        got_shape, got_dtype = getattr(grad_out, "shape", None), getattr(grad_out, "dtype", None)
        if got_shape is None or got_dtype is None:
            raise TypeError(f"{op}: grad_out must be an array, got {type(grad_out).__name__}")
        if not isinstance(grad_out, np.generic) and not backend.owns(grad_out):  # scalars: any
            got = backend_of(grad_out).name
            raise device_mismatch("grad_out", got, "the forward's output", backend.name, op=op)
        if tuple(got_shape) != shape:
            raise ValueError(
                f"{op}: grad_out must have shape {shape} (the forward output's), "
                f"got {tuple(got_shape)}"
            )
        if np.dtype(got_dtype) != dtype:
            raise TypeError(
                f"{op}: grad_out must have dtype {dtype} (the forward output's), got {got_dtype}"
            )

    def backward_params(self, grad_out: Any) -> None:
        """Accumulate parameter gradients only, for a first layer whose input needs no gradient."""
        self.backward(grad_out)

    # ------------------------------------------------------------- traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant, with dotted names ("" for this one)."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}{name}.")

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """Every parameter once, with its PyTorch-style dotted name, e.g. "0.weight" (a
        parameter registered in two places is named by the first, as PyTorch does)."""
        seen: set[int] = set()
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield prefix + name, p

    def parameters(self) -> list[Parameter]:
        """Every trainable parameter, in registration order."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero (lazily: see ``Parameter``)."""
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode: bool = True) -> Module:
        """Training mode (batch statistics, dropout on) for this module and its children."""
        check_flag(mode, "mode")
        for _, module in self.named_modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (running statistics, dropout off)."""
        return self.train(False)

    # --------------------------------------------------------------- devices
    @property
    def backend(self) -> Backend:
        """The backend holding this module's parameters (the CPU for a module without any)."""
        for p in self.parameters():
            return backend_of(p.data)
        return get_backend("cpu")

    def to(self, device: str | Backend) -> Module:
        """Move every parameter, gradient and buffer to ``device`` ("cpu", "cuda", ...)."""
        backend = get_backend(device)
        for _, module in self.named_modules():
            for p in module._parameters.values():
                p.data = backend.asarray(p.data)
                p.grad = backend.asarray(p.grad)
            for name, buf in list(module._buffers.items()):
                setattr(module, name, backend.asarray(buf))
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of parameters and buffers under PyTorch's key names."""
        state = {}
        for prefix, module in self.named_modules():
            backend = module.backend
            for name, p in module._parameters.items():
                state[prefix + name] = backend.to_numpy(p.data).copy()
            for name, buf in module._buffers.items():
                state[prefix + name] = np.array(backend_of(buf).to_numpy(buf))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy ``state`` into the module's arrays on their current device; keys and shapes must
        match, and each value must take its array's dtype unchanged but for rounding (see
        :func:`loaded_copy`). Every entry is checked before any is taken, so a refused dict leaves
        the module as it was."""
        check_state_dict(state, "load_state_dict")
        own = {
            prefix + name: array
            for prefix, module in self.named_modules()
            for name, array in [(n, p.data) for n, p in module._parameters.items()]
            + list(module._buffers.items())
        }
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
        loaded = {key: loaded_copy(key, state[key], array) for key, array in own.items()}
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                p.data = loaded[prefix + name]
            for name in list(module._buffers):
                setattr(module, name, loaded[prefix + name])

    # ------------------------------------------------------------ randomness
    def random_state(self) -> dict[str, int]:
        """Counters of every random layer (e.g. dropout), to checkpoint and resume a run exactly."""
        state = {}
        for prefix, module in self.named_modules():
            for name, value in module.own_random_state().items():
                state[prefix + name] = value
        return state

    def set_random_state(self, state: dict[str, int]) -> None:
        """Restore what :meth:`random_state` returned: the same keys, each an int >= 0 (a layer
        missing from it was a KeyError, a count of 2.7 truncated, a negative one NumPy's
        OverflowError)."""
        expected = self.random_state()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected), key=str)
        if missing or unexpected:
            raise ValueError(f"random state mismatch: missing {missing}, unexpected {unexpected}")
        for key, value in state.items():
            non_negative_int(value, f"random state {key!r}")
        for prefix, module in self.named_modules():
            own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            module.load_own_random_state({k: v for k, v in own.items() if "." not in k})

    def own_random_state(self) -> dict[str, int]:
        """This module's own random counters (none unless overridden)."""
        return {}

    def load_own_random_state(self, state: dict[str, int]) -> None:
        """Restore this module's own random counters (nothing unless overridden)."""

    # ------------------------------------------------------------------ show
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = "".join(
            f"\n  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()
        )
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + (children + "\n)" if children else ")")

    def summary(self, input_shape: tuple[int, ...]) -> str:
        """Per-layer output shapes and parameter counts for one input of ``input_shape``, without
        the batch axis: (C, H, W) for images, (features,) for a fully connected model."""
        from .summary import summarize

        return summarize(self, input_shape)


def check_state_dict(state: Any, what: str) -> None:
    """A TypeError naming ``what`` unless ``state`` is a mapping (a list of pairs or None failed
    with Python's "unhashable type" or "is not iterable")."""
    if not isinstance(state, Mapping):
        raise TypeError(f"{what} takes a dict, as state_dict() returns, got {type(state).__name__}")


def loaded_copy(key: str, value: Any, own: Any, owner: str = "the module") -> Any:
    """``value`` as a copy of ``own``'s dtype on its device, for the state dict entry ``key`` of
    ``owner``, checked by :func:`_check_entry`; floats that are NaN or infinite once cast (float64 past
    float32's range becomes inf) are refused, naming the key.

    A copy, as PyTorch's copy_: training updates weights and buffers in place, which must not
    write into the caller's arrays (a snapshot, or another model loaded from them)."""
    _check_entry(key, value, own, owner)
    backend = backend_of(own)
    with np.errstate(over="ignore"):  # no NumPy overflow warning: the check below names the key
        copy = backend.asarray(value, dtype=own.dtype).copy()
    if copy.dtype.kind == "f":
        bad = int((~backend.xp.isfinite(copy)).sum())
        if bad:
            raise ValueError(
                f"state dict entry {key!r} has {bad} NaN or infinite values as {own.dtype} "
                f"(beyond its largest, {np.finfo(own.dtype).max:.4g}, a value becomes inf)"
            )
    return copy


def _check_entry(key: str, value: Any, own: Any, owner: str) -> None:
    """A ValueError naming ``key`` unless ``value`` has ``own``'s shape and kind of number: an
    integer array for float weights, or a float one for an integer buffer, would be cast
    silently (a count truncated)."""
    if tuple(np.shape(value)) != tuple(own.shape):
        raise ValueError(
            f"state dict entry {key!r} has shape {tuple(np.shape(value))}, "
            f"{owner} expects {tuple(own.shape)}"
        )
    dtype = np.dtype(value.dtype) if hasattr(value, "dtype") else np.asarray(value).dtype
    floating = np.dtype(own.dtype).kind == "f"
    if dtype.kind not in ("f" if floating else "iu"):
        raise ValueError(
            f"state dict entry {key!r} has dtype {dtype}, {owner} expects "
            f"{'a floating' if floating else 'an integer'} array (its own is {own.dtype})"
        )

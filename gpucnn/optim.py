"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules (StepLR, CosineAnnealingLR).

Update rules are PyTorch's. The update runs on the parameters' device through the backend
(``sgd_update_many`` / ``adam_update_many``: on the GPU one fused kernel launch per 8 parameters,
so one for the tutorial's net). State is kept beside each parameter and saved as a flat dict of
host arrays, ready for ``numpy.savez``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .backend import backend_of
from .functional import check_flag, check_float_array
from .nn.module import Parameter, check_state_dict, loaded_copy
from .shapes import check_non_negative, is_real, non_negative_int, positive_int, scalar


class Optimizer:
    """Base: holds the parameters, a learning rate ``lr`` and per-parameter state arrays.

    The step count and the learning rate live in a clock, a (2,) float64 array {step, lr} on the
    parameters' device that the update kernels read there: ``step()`` advances it on the device
    and setting ``lr`` writes it, so a captured CUDA graph of the step replays with the current
    values rather than those of the capture. Reading :attr:`steps` waits for the device.
    """

    state_names: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Parameter], lr: float):
        try:
            self.params = list(params)
        except TypeError:  # a model or a single Parameter: "'Linear' object is not iterable"
            raise TypeError(
                "optimizer parameters must be an iterable of gpucnn Parameters, such as "
                f"model.parameters(), got {type(params).__name__}"
            ) from None
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):  # an array would fail at the first step() instead
                raise TypeError(
                    f"optimizer parameters must be gpucnn Parameters (e.g. from "
                    f"model.parameters()), got {type(p).__name__} at index {i}"
                )
            # An int one failed at the first step with NumPy's casting words, a float16 one took
            # NaN updates (its squared gradients underflow) with only a NumPy warning.
            check_float_array(p.data, f"optimizer parameter {i}")
        if len({id(p) for p in self.params}) < len(self.params):
            # Each copy would keep its own state and update the same weights: twice in turn on
            # the CPU, racing in one launch on a GPU.
            raise ValueError("optimizer got the same parameter twice; pass each one once")
        # Nor two parameters over the same memory (Parameter(other.data), overlapping views):
        # the same race on a GPU, which the check above does not see.
        for i, p in enumerate(self.params):
            xp = backend_of(p.data).xp
            for j, q in enumerate(self.params[:i]):
                if type(q.data) is type(p.data) and xp.may_share_memory(q.data, p.data):
                    raise ValueError(
                        f"optimizer parameters {j} and {i} share memory; each parameter needs "
                        "its own array"
                    )
        self._clock = np.zeros(2)
        self.lr = lr
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        check_non_negative(**{"learning rate": value})
        self._lr = float(value)
        self._clock[1] = self._lr

    @property
    def steps(self) -> int:
        """Updates applied so far."""
        return int(backend_of(self._clock).to_numpy(self._clock)[0])

    @steps.setter
    def steps(self, value: int) -> None:
        self._clock[0] = non_negative_int(value, "steps")  # int() would truncate 2.5

    def _device_clock(self):
        """The clock, moved to the parameters' device if the model has moved since."""
        backend = backend_of(self.params[0].data)
        if not backend.owns(self._clock):
            self._clock = backend.asarray(self._clock)
        return self._clock

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero (lazily: see ``nn.Parameter``)."""
        for p in self.params:
            p.zero_grad()

    def _buffer(self, i: int, name: str):
        """State array ``name`` of parameter i: created as zeros on the parameter's device, and
        moved there if the model has moved since (``model.to(device)`` after building this)."""
        state = self.state[i]
        data = self.params[i].data
        if name not in state:
            state[name] = backend_of(data).xp.zeros_like(data)
        elif not backend_of(data).owns(state[name]):
            state[name] = backend_of(data).asarray(state[name])
        return state[name]

    def step(self) -> None:
        """Apply one update to every parameter from its accumulated gradient."""
        clock = self._device_clock()
        backend = backend_of(clock)
        # In place: one kernel (a node of a captured step) on a GPU, where clock[0] += 1 is two,
        # the add on a view of clock[0] and then CuPy's copy of it back into clock[0].
        backend.xp.add(clock[:1], 1, out=clock[:1])
        self._update(backend, clock)

    def _update(self, backend: Any, clock: Any) -> None:
        """Update every parameter on ``backend``, the clock's (and the parameters') device."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat host copy of the optimizer: lr, step count and every state array."""
        out = {"lr": np.array(self.lr), "steps": np.array(self.steps)}
        for i, state in enumerate(self.state):
            for name, array in state.items():
                out[f"{i}.{name}"] = backend_of(array).to_numpy(array).copy()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, onto each parameter's device. Every entry is
        checked before any is taken, so a refused state leaves the optimizer as it was."""
        lr, steps = _saved_rate_and_count(state, "optimizer", ("lr", "learning rate"), "steps")
        loaded: list[dict[str, Any]] = [{} for _ in self.params]
        for key, value in state.items():
            if key in ("lr", "steps"):
                continue
            index, _, name = key.partition(".")
            if (
                not index.isdecimal()  # a digit int() takes ("²" is a digit it refuses)
                or int(index) >= len(self.params)
                or name not in self.state_names
            ):
                raise ValueError(
                    f"optimizer state has unexpected entry {key!r} (expected lr, steps and "
                    f"I.NAME for parameter I < {len(self.params)}, NAME in {self.state_names})"
                )
            i, param = int(index), self.params[int(index)].data
            if tuple(np.shape(value)) != tuple(param.shape):
                raise ValueError(
                    f"optimizer state {key!r} has shape {np.shape(value)}, parameter {i} has "
                    f"{tuple(param.shape)}"
                )
            # Checked as a model's weights are (no NaN, complex or text), and copied.
            loaded[i][name] = loaded_copy(key, value, param, f"parameter {i}")
        self.lr, self.steps, self.state = lr, steps, loaded


def _saved_rate_and_count(
    state: Any, owner: str, rate: tuple[str, str], count: str
) -> tuple[float, int]:
    """The learning rate ``state[rate[0]]`` (named ``rate[1]``) and the count ``state[count]``
    that ``owner``'s state_dict saved as 0-d arrays: a number (not "0.1" or True) and an int (not
    2.7, which int() would truncate), both >= 0; a ValueError or TypeError naming them otherwise."""
    check_state_dict(state, f"{owner} load_state_dict")
    missing = [key for key in (rate[0], count) if key not in state]
    if missing:
        raise ValueError(f"{owner} state is missing {missing}")
    lr = scalar(state[rate[0]])  # saved as a 0-d array, on the device where it was
    if not is_real(lr):  # the value as given: "0.5", not np.str_('0.5')
        raise TypeError(f"{rate[1]} must be a number, got {state[rate[0]]!r}")
    check_non_negative(**{rate[1]: lr})
    return float(lr), non_negative_int(state[count], f"{owner} state's {count}")


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    state_names = ("momentum_buffer",)

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        check_flag(nesterov, "nesterov")
        check_non_negative(momentum=momentum, weight_decay=weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        # Python floats: a NumPy float64 would promote a float32 step's arithmetic in places
        # (NumPy 2), so its result would depend on how the backend orders the step.
        self.momentum, self.nesterov = float(momentum), nesterov
        self.weight_decay = float(weight_decay)

    def _update(self, backend, clock):
        # A parameter's first step with momentum is the one that creates its buffer.
        firsts = ["momentum_buffer" not in state for state in self.state]
        velocities = [
            self._buffer(i, "momentum_buffer") if self.momentum else None
            for i in range(len(self.params))
        ]
        hyper = (self.momentum, self.nesterov, self.weight_decay)
        for first in sorted(set(firsts)):
            chosen = [i for i, f in enumerate(firsts) if f == first]
            backend.sgd_update_many(
                [self.params[i].data for i in chosen],
                [self.params[i].grad for i in chosen],
                [velocities[i] for i in chosen],
                clock,
                *hyper,
                first,
            )


class Adam(Optimizer):
    """Adam; L2 weight decay added to the gradient (``decoupled=False``), as PyTorch's Adam."""

    state_names = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        check_non_negative(eps=eps, weight_decay=weight_decay)
        # Python floats, as SGD's hyperparameters
        self.betas, self.eps, self.weight_decay = _betas(betas), float(eps), float(weight_decay)

    def _update(self, backend, clock):
        indices = range(len(self.params))
        backend.adam_update_many(
            [p.data for p in self.params],
            [p.grad for p in self.params],
            [self._buffer(i, "exp_avg") for i in indices],
            [self._buffer(i, "exp_avg_sq") for i in indices],
            clock,
            *self.betas,
            self.eps,
            self.weight_decay,
            self.decoupled,
        )


def _betas(betas) -> tuple[float, float]:
    """Adam's ``betas`` as a tuple of Python floats: a TypeError for what holds no numbers (None,
    one number), a ValueError for another count than two or a value outside [0, 1)."""
    expected = f"betas must be two numbers in [0, 1), such as (0.9, 0.999), got {betas!r}"
    try:
        pair = tuple(betas)
    except TypeError:  # not iterable: len() would say "object of type 'NoneType' has no len()"
        raise TypeError(expected) from None
    if len(pair) != 2 or not all(is_real(b) and 0 <= b < 1 for b in pair):
        raise ValueError(expected)
    return float(pair[0]), float(pair[1])


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01), as PyTorch's AdamW."""

    decoupled = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        super().__init__(params, lr, betas, eps, weight_decay)


class LRScheduler:
    """Base of schedules: ``step()`` once per epoch sets ``optimizer.lr`` from the epoch count."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):  # it would fail on .lr, naming nothing
            raise TypeError(f"a schedule needs a gpucnn optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"base_lr": np.array(self.base_lr), "last_epoch": np.array(self.last_epoch)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lr, self.last_epoch = _saved_rate_and_count(
            state, "schedule", ("base_lr", "schedule state's base_lr"), "last_epoch"
        )
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        step_size = positive_int(step_size, "step_size")
        check_non_negative(gamma=gamma)  # here, not an epoch later at the first step()
        self.step_size, self.gamma = step_size, gamma

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):  # noqa: N803
        super().__init__(optimizer)
        T_max = positive_int(T_max, "T_max")
        check_non_negative(eta_min=eta_min)
        self.T_max, self.eta_min = T_max, eta_min

    def lr_at(self, epoch: int) -> float:
        cosine = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cosine

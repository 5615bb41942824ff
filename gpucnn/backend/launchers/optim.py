"""Launchers of kernels_cuda/optim.cu: SGD and Adam updates, up to 8 parameters a launch."""

from __future__ import annotations

from typing import Any

import numpy as np

from .launching import Launching, grid_1d, i32, i64, shaped

_OPTIM_SLOTS = 8  # FOR_SLOTS in optim.cu: parameters updated by one launch


class OptimLaunchers(Launching):
    """optim.cu's launchers."""

    def _launch_slots(self, kernel: str, slots: list[tuple], scalars) -> None:
        """Launch optim.cu's ``kernel`` over ``slots`` (each a parameter's arrays, then its
        size): up to _OPTIM_SLOTS of one dtype a launch, the unused slots repeating the first
        with size 0; ``scalars(dtype)`` gives the arguments after the slots. grid = (blocks of
        the largest, slots in use), block 256."""
        groups: dict[Any, list[tuple]] = {}
        for slot in slots:
            groups.setdefault(np.dtype(slot[0].dtype), []).append(slot)
        for dtype, group in groups.items():
            for start in range(0, len(group), _OPTIM_SLOTS):
                used = group[start : start + _OPTIM_SLOTS]
                filler = (*used[0][:-1], i64(0))
                args = [a for slot in used + [filler] * (_OPTIM_SLOTS - len(used)) for a in slot]
                grid = (grid_1d(max(int(slot[-1]) for slot in used))[0], len(used))
                self._launch("optim", kernel, grid, *args, *scalars(dtype))

    def sgd_update(self, p, g, velocity, clock, momentum, nesterov, weight_decay, first_step):
        """In place on p (and velocity); lr read from ``clock`` on the device. One slot of
        :meth:`sgd_update_many`."""
        hyper = (momentum, nesterov, weight_decay, first_step)
        self.sgd_update_many([p], [g], [velocity], clock, *hyper)

    def sgd_update_many(
        self, params, grads, velocities, clock, momentum, nesterov, weight_decay, first_step
    ):
        """In place on each p (and velocity), 8 parameters a launch (:meth:`_launch_slots`)."""
        clock = self._counter("sgd_update", "clock", clock, np.float64, 2)
        slots = []
        for p, g, velocity in zip(params, grads, velocities, strict=True):
            self._in_place("sgd_update", p=p, velocity=velocity)
            if momentum and velocity is None:
                raise ValueError("sgd_update: momentum needs a velocity buffer")
            g = self._floats("sgd_update", p, g, *([velocity] if momentum else []))[1]
            shaped("sgd_update", p.shape, g=g, **({"velocity": velocity} if momentum else {}))
            # Without momentum the kernel never touches velocity; p stands in for it.
            slots.append((p, g, velocity if momentum else p, i64(p.size)))
        flags = (i32(bool(momentum)), i32(bool(nesterov)), i32(bool(first_step)))
        self._launch_slots(
            "sgd_update",
            slots,
            lambda dtype: (clock, dtype.type(momentum), dtype.type(weight_decay), *flags),
        )

    def adam_update(self, p, g, m, v, clock, beta1, beta2, eps, weight_decay, decoupled):
        """In place on p, m, v; step and lr read from ``clock`` on the device, the bias corrections
        derived there. One slot of :meth:`adam_update_many`."""
        hyper = (beta1, beta2, eps, weight_decay, decoupled)
        self.adam_update_many([p], [g], [m], [v], clock, *hyper)

    def adam_update_many(
        self, params, grads, ms, vs, clock, beta1, beta2, eps, weight_decay, decoupled
    ):
        """In place on each p, m, v, 8 parameters a launch (:meth:`_launch_slots`)."""
        clock = self._counter("adam_update", "clock", clock, np.float64, 2)
        slots = []
        for p, g, m, v in zip(params, grads, ms, vs, strict=True):
            self._in_place("adam_update", p=p, m=m, v=v)
            g = self._floats("adam_update", p, g, m, v)[1]
            shaped("adam_update", p.shape, g=g, m=m, v=v)
            slots.append((p, g, m, v, i64(p.size)))
        betas = (np.float64(beta1), np.float64(beta2))
        decay = (np.float64(weight_decay), i32(bool(decoupled)))
        self._launch_slots(
            "adam_update", slots, lambda dtype: (clock, *betas, dtype.type(eps), *decay)
        )

"""Where a training step's time goes: wall and CPU time of every backend call, per call site.

Trains a zoo model's step (tutorial-mnist unless ``--model``) as ``gpucnn bench --suite step``
does (same model, optimizer and random batch) and times each backend method around the call. Rows are (method, call): the n-th
call of that method within a step, so conv1's and conv2's forwards come apart. "CPU / wall" is
process CPU time (all threads) over wall time: 2 means both of 2 cores busy throughout. On a GPU
the calls only enqueue work, so this profiles the host side there.

    python scripts/profile_step.py --batch-size 256 --device cpu
    python scripts/profile_step.py --model fashion-net --batch-size 128
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

from gpucnn.backend import get_backend
from gpucnn.bench.command import positive_int
from gpucnn.bench.training import MODEL, gpucnn_step, random_batch
from gpucnn.cli import add_device_argument, run_reporting_errors
from gpucnn.nn.zoo import model_names

SKIP = {"asarray", "owns", "to_numpy"}  # bookkeeping, not ops


def instrument(backend) -> tuple[dict, dict, dict]:
    """Wrap the backend's public methods (on its class) to add up wall and CPU seconds per
    (method, n-th call in the step); returns (wall, cpu, calls), calls counting per step. A call
    made inside another (a default method built on others) counts in the outer one only."""
    wall, cpu, calls = collections.defaultdict(float), collections.defaultdict(float), {}
    depth = [0]
    cls = type(backend)
    names = {n for klass in cls.__mro__ for n in vars(klass) if not n.startswith("_")}
    for name in sorted(names - SKIP):
        method = getattr(cls, name)
        if not callable(method) or isinstance(method, type):
            continue

        def timed(*args, _method=method, _name=name, **kwargs):
            if depth[0]:
                return _method(*args, **kwargs)
            key = (_name, calls.get(_name, 0))
            calls[_name] = key[1] + 1
            depth[0] += 1
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                wall[key] += time.perf_counter() - t0
                cpu[key] += time.process_time() - c0
                depth[0] -= 1

        setattr(cls, name, timed)
    return wall, cpu, calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=positive_int, default=256)
    parser.add_argument(
        "--model", choices=model_names(), default=MODEL, help=f"zoo model (default {MODEL})"
    )
    add_device_argument(parser)
    parser.add_argument(
        "--steps", type=positive_int, default=30, help="timed steps (after 5 untimed)"
    )
    parser.add_argument("--top", type=positive_int, default=12, help="rows shown")
    args = parser.parse_args(argv)

    backend = get_backend(args.device)
    wall, cpu, calls = instrument(backend)
    step = gpucnn_step(backend, model=args.model)
    x, y = (backend.asarray(a) for a in random_batch(args.batch_size, model=args.model))
    for _ in range(5):
        step(x, y)
    wall.clear(), cpu.clear()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(args.steps):
        calls.clear()
        step(x, y)
    step_wall = (time.perf_counter() - t0) / args.steps
    step_cpu = (time.process_time() - c0) / args.steps

    ms = 1e3 / args.steps
    print(f"{args.model} {args.device} b{args.batch_size}: step {step_wall * 1e3:.2f} ms wall, "
          f"{step_cpu * 1e3:.2f} ms CPU; in backend calls {sum(wall.values()) * ms:.2f} ms wall")  # fmt: skip
    print(f"{'method':32s} {'call':>4s} {'wall ms':>8s} {'CPU ms':>8s} {'CPU / wall':>10s}")
    for key in sorted(wall, key=wall.get, reverse=True)[: args.top]:
        ratio = cpu[key] / wall[key] if wall[key] else 0.0
        print(f"{key[0]:32s} {key[1]:4d} {wall[key] * ms:8.2f} {cpu[key] * ms:8.2f} {ratio:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors("profile_step.py", main))

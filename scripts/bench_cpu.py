"""Train-step throughput of the tutorial's MNIST net on the CPU: gpucnn's NumPy backend vs PyTorch CPU.

Both run in this process on the same random batch, alternating, after a warm-up; the table gives
medians of the repeats and the ratio of gpucnn's throughput to PyTorch's measured in the same run.

    python scripts/bench_cpu.py --batch-size 256 --repeats 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gpucnn import nn, optim


def tutorial_mnist(rng) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 128, rng=rng), nn.ReLU(), nn.Linear(128, 10, rng=rng),
    )  # fmt: skip


def gpucnn_step(x, y):
    model = tutorial_mnist(np.random.default_rng(0))
    opt = optim.SGD(model.parameters(), 0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        return loss

    return step


def torch_step(x, y, threads):
    import torch

    torch.set_num_threads(threads)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(800, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10),
    )  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), 0.01, momentum=0.9)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        loss = torch.nn.functional.cross_entropy(net(tx), ty)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size)
    peers = {"gpucnn numpy": gpucnn_step(x, y)}
    try:
        peers["pytorch cpu"] = torch_step(x, y, args.threads)
    except ImportError:
        print("PyTorch is not installed: gpucnn measured alone")
    times: dict[str, list[float]] = {name: [] for name in peers}
    for step in peers.values():
        step()  # warm-up
    for _ in range(args.repeats):
        for name, step in peers.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    print(f"tutorial MNIST net, train step, batch {args.batch_size}, {args.repeats} repeats")
    print(f"{'peer':<16}{'median ms':>12}{'samples/s':>12}")
    medians = {name: float(np.median(t)) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:<16}{median * 1e3:>12.2f}{args.batch_size / median:>12,.0f}")
    if "pytorch cpu" in medians:
        ratio = medians["pytorch cpu"] / medians["gpucnn numpy"]
        print(f"gpucnn throughput / PyTorch CPU throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()

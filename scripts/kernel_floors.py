"""Roofline floors of gpucnn's kernels on an H100 SXM, and the launches of one training step.

Prints the markdown tables of ``benchmarks/NOTES.md``:

- every op of the ``ops`` bench suite (``gpucnn/bench/ops.py`` ``cases()``): FLOPs (2 x MACs for a
  convolution), the least bytes moved (float32 inputs read once, outputs written once; int32 argmax,
  int64 labels), the compute floor (FLOPs / peak), the memory floor (bytes / bandwidth), and which
  of the two dominates;
- the whole training step of ``tutorial-mnist`` (Adam, no input gradient for conv1, as
  ``gpucnn/train.py`` trains), op by op and in total;
- the families outside the ops suite (batch norm, dropout, the optimizers) on fashion-net's shapes;
- with ``--launches B [B ...]``: the launches of our kernels (``CudaBackend._launch``) in one such
  step on ``cuda-emu`` at each batch size, by kernel. CuPy's own ops (matmuls, ``xp`` elementwise,
  fills) are not ours and are not counted here.

Figures used: float32 without tensor cores 66.9 TFLOP/s, HBM3 3.35 TB/s (H100 SXM5 data sheet).
FLOPs of elementwise ops, pooling and the loss are nominal counts (an exp or a compare is one).

    python scripts/kernel_floors.py [--launches 16 64]
"""

from __future__ import annotations

import argparse
from collections import Counter

from gpucnn.backend.launchers.winograd import winograd_applies
from gpucnn.bench.ops import cases

PEAK_FLOPS = 66.9e12  # float32, non-tensor-core
BANDWIDTH = 3.35e12  # bytes/s
F32, I32, I64 = 4, 4, 8


def conv_ops(n, c, h, w, k, pad=0):
    """{op: (flops, bytes)} of a 3x3 stride-1 convolution and its two gradients."""
    ho, wo = h + 2 * pad - 2, w + 2 * pad - 2
    flops = 2 * n * k * ho * wo * c * 9
    x, wt, y = n * c * h * w, k * c * 9, n * k * ho * wo
    return {
        "conv forward": (flops, F32 * (x + wt + k + y)),
        "conv backward-input": (flops, F32 * (y + wt + x)),
        "conv backward-weight": (flops, F32 * (y + x + wt)),
    }


def winograd_ops(n, c, h, w, k, pad=0):
    """{op: (flops, bytes)} of the three passes as Winograd (winograd.cu; where the launchers
    choose it): the 16 GEMMs' FLOPs (the transforms' additions not counted); the filters'
    transform (read w, write 16 values a filter) and the fused kernel's least traffic (read the
    input and the transformed filters, write the output: the transformed operands and products
    stay on chip); the weight gradient reads x and gy and writes gw and gb (its split's partial
    sums not counted)."""
    ho, wo = h + 2 * pad - 2, w + 2 * pad - 2

    def cost(image, channels_in, out_hw, channels_out):
        tiles = n * -(-out_hw[0] // 2) * -(-out_hw[1] // 2)
        filters = 9 * k * c + 2 * 16 * k * c  # read w; write, then read, the transforms
        data = n * channels_in * image + channels_out + n * channels_out * out_hw[0] * out_hw[1]
        return 2 * 16 * k * c * tiles, F32 * (filters + data)

    tiles = n * -(-ho // 2) * -(-wo // 2)
    weight = (2 * 16 * k * c * tiles, F32 * (n * c * h * w + n * k * ho * wo + 9 * k * c + k))
    return {
        "conv forward (Winograd)": cost(h * w, c, (ho, wo), k),
        "conv backward-input (Winograd)": cost(ho * wo, k, (h, w), c),
        "conv backward-weight (Winograd)": weight,  # read x and gy, write gw and gb
    }


def pool_ops(n, c, h, w):
    """{op: (flops, bytes)} of 2x2 stride-2 max and average pooling (max keeps an int32 argmax)."""
    x, y = n * c * h * w, n * c * (h // 2) * (w // 2)
    return {
        "max-pool forward": (3 * y, F32 * (x + y) + I32 * y),
        "max-pool backward": (y, F32 * (y + x) + I32 * y),
        "avg-pool forward": (4 * y, F32 * (x + y)),
        "avg-pool backward": (x, F32 * (y + x)),
    }


def xent_ops(n, k):
    """{op: (flops, bytes)} of softmax cross-entropy (max, subtract, exp, sum, divide per logit)."""
    return {
        "softmax-xent forward": (5 * n * k + 2 * n, F32 * (2 * n * k + 1) + I64 * n),
        "softmax-xent backward": (2 * n * k, F32 * 2 * n * k + I64 * n),
    }


def elementwise(count, reads, writes, flops_each=1):
    return flops_each * count, F32 * count * (reads + writes)


def add(*costs):
    """(flops, bytes) costs summed."""
    return sum(c[0] for c in costs), sum(c[1] for c in costs)


def linear_ops(n, i, o):
    """Forward GEMM + bias add; backward gx and gw GEMMs, gb sum, both += into the grads."""
    return {
        "fwd x@w.T": (2 * n * i * o, F32 * (n * i + i * o + n * o)),
        "fwd += b": elementwise(n * o, 2, 1),
        "bwd gw": (2 * n * i * o, F32 * (n * o + n * i + i * o)),
        "bwd gb": elementwise(n * o, 1, 0),
        "grad += gw, gb": elementwise(i * o + o, 2, 1),
        "bwd gx": (2 * n * i * o, F32 * (n * o + i * o + n * i)),
    }


def step_ops(n):
    """{op: (flops, bytes)} of one tutorial-mnist training step at batch n, as train.py runs it."""
    c1, c2 = conv_ops(n, 1, 28, 28, 16), conv_ops(n, 16, 13, 13, 32)
    p1, p2 = pool_ops(n, 16, 26, 26), pool_ops(n, 32, 11, 11)
    a1, a2, a3 = n * 16 * 26 * 26, n * 32 * 11 * 11, n * 128
    params = 16 * 10 + 32 * 145 + 128 * 801 + 10 * 129  # weights + biases of conv1, conv2, fc1, fc2
    ops = {
        "conv1 forward": c1["conv forward"],
        "conv1 backward-weight": c1["conv backward-weight"],
        "conv2 forward": c2["conv forward"],
        "conv2 backward-input": c2["conv backward-input"],
        "conv2 backward-weight": c2["conv backward-weight"],
        "conv bias grads": elementwise(a1 + n * 32 * 121, 1, 0),
        "conv grads +=": elementwise(16 * 10 + 32 * 145, 2, 1),  # weight.grad += gw, bias too
        "max-pool forward x2": add(p1["max-pool forward"], p2["max-pool forward"]),
        "max-pool backward x2": add(p1["max-pool backward"], p2["max-pool backward"]),
        "relu forward x3": elementwise(a1 + a2 + a3, 1, 1),
        "relu backward x3": elementwise(a1 + a2 + a3, 2, 1),
        "softmax-xent fwd+bwd": add(*xent_ops(n, 10).values()),
        "zero_grad": elementwise(params, 0, 1, 0),
        "adam": elementwise(params, 4, 3, 13),
    }
    for name, (i, o) in {"fc1": (800, 128), "fc2": (128, 10)}.items():
        for op, cost in linear_ops(n, i, o).items():
            ops[f"{name} {op}"] = cost
    return ops


def floors(flops, nbytes):
    compute, memory = flops / PEAK_FLOPS * 1e6, nbytes / BANDWIDTH * 1e6
    return compute, memory, "memory" if memory > compute else "compute"


def row(name, op, flops, nbytes):
    compute, memory, bound = floors(flops, nbytes)
    return (
        f"| {name} | {op} | {flops / 1e6:,.3f} | {nbytes / 1e6:,.3f} | {flops / nbytes:.1f} "
        f"| {compute:.3f} | {memory:.3f} | {bound} |"
    )


HEAD = (
    "| case | op | MFLOP | MB | FLOP/B | compute floor us | memory floor us | bound |\n"
    "|---|---|---|---|---|---|---|---|"
)


def ops_table():
    lines = [HEAD]
    for case in cases([64, 256]):
        if case.kind == "conv":
            ops = conv_ops(case.n, case.c, case.h, case.w, case.k, case.pad)
            x_shape, w_shape = (case.n, case.c, case.h, case.w), (case.k, case.c, 3, 3)
            if winograd_applies(x_shape, w_shape, (1, 1), (1, 1), 1):
                ops |= winograd_ops(case.n, case.c, case.h, case.w, case.k, case.pad)
        elif case.kind == "pool":
            ops = pool_ops(case.n, case.c, case.h, case.w)
        else:
            ops = xent_ops(case.n, case.c)
        lines += [row(case.name, op, *cost) for op, cost in ops.items()]
    return "\n".join(lines)


def step_table(n=64):
    ops = step_ops(n)
    lines = [HEAD] + [row(f"step b{n}", op, *cost) for op, cost in ops.items()]
    lines.append(row(f"**step b{n} total**", "all of the above", *add(*ops.values())))
    serial = sum(max(floors(*cost)[:2]) for cost in ops.values())
    lines.append(f"\nSum of each op's larger floor (ops one after another): {serial:.2f} us")
    return "\n".join(lines)


def _norm_and_dropout_shapes(spec: dict) -> tuple[list[tuple[int, int]], list[int]]:
    """(channels, side) at each BatchNorm2d and the features at each Dropout of a zoo spec of
    square images, 'same'-padded stride-1 convolutions, pooling by its kernel and Linear layers."""
    channels, side = spec["input_shape"][0], spec["input_shape"][1]
    features, norms, dropouts = None, [], []
    for kind, args in spec["layers"]:
        if kind == "Conv2d":
            channels = args["out_channels"]
            side += 2 * args.get("padding", 0) - args["kernel_size"] + 1
        elif kind == "MaxPool2d":
            side //= args["kernel_size"]
        elif kind == "BatchNorm2d":
            norms.append((channels, side))
        elif kind == "Flatten":
            features = channels * side * side
        elif kind == "Linear":
            features = args["out_features"]
        elif kind == "Dropout":
            dropouts.append(features)
    return norms, dropouts


def other_table(n=128):
    """Kernel families outside the ops suite, on the shapes they see in training: fashion-net's
    batch norm and dropout at batch ``n``, and the optimizers over each zoo model's parameters."""
    from gpucnn.nn.summary import count_parameters
    from gpucnn.nn.zoo import build_model, model_spec

    lines = [HEAD]
    norms, dropouts = _norm_and_dropout_shapes(model_spec("fashion-net"))
    for c, hw in norms:
        count = n * c * hw * hw
        name = f"fashion-net batch-norm {n}x{c}x{hw}x{hw}"
        lines.append(row(name, "forward (train)", *elementwise(count, 1, 1, 7)))
        lines.append(row(name, "backward", *elementwise(count, 2, 1, 8)))
    for features in dropouts:  # y and the float32 mask written
        lines.append(
            row(f"fashion-net dropout {n}x{features}", "forward", *elementwise(n * features, 1, 2))
        )
    for model in ("tutorial-mnist", "fashion-net"):
        params = count_parameters(build_model(model, rng=0))
        lines.append(row(f"{model} ({params:,} params)", "adam", *elementwise(params, 4, 3, 13)))
        lines.append(
            row(f"{model} ({params:,} params)", "sgd momentum", *elementwise(params, 3, 2, 5))
        )
    return "\n".join(lines)


def count_launches(batch):
    """Counter of the kernels launched by one Adam training step of tutorial-mnist on
    cuda-emu at ``batch``, as ``train.train_epoch`` runs it (the second step is counted, so the
    optimizer state already exists)."""
    import numpy as np

    from gpucnn import nn, optim
    from gpucnn.backend import get_backend
    from gpucnn.nn.zoo import build_model

    backend = get_backend("cuda-emu")
    model = build_model("tutorial-mnist", rng=0).to(backend)
    loss_fn, opt = nn.CrossEntropyLoss(), optim.Adam(model.parameters(), 1e-3)
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32))
    y = backend.asarray(rng.integers(0, 10, batch))
    launched, launch = Counter(), backend._launch

    def counting(family, kernel, grid, *args):
        launched[kernel] += bool(all(grid))  # an empty grid launches nothing
        launch(family, kernel, grid, *args)

    backend._launch = counting
    try:
        for _ in range(2):
            launched.clear()
            loss_fn(model(x), y)
            opt.zero_grad()
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
    finally:
        del backend._launch
    return launched


def launch_table(batches):
    counts = {b: count_launches(b) for b in batches}
    names = list(dict.fromkeys(k for c in counts.values() for k in c))
    lines = ["| kernel | " + " | ".join(f"b{b}" for b in batches) + " |"]
    lines.append("|---" * (len(batches) + 1) + "|")
    lines += [f"| `{k}` | " + " | ".join(str(counts[b][k]) for b in batches) + " |" for k in names]
    totals = " | ".join(f"**{sum(counts[b].values())}**" for b in batches)
    return "\n".join(lines + [f"| **total** | {totals} |"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--launches",
        type=int,
        nargs="*",
        metavar="B",
        default=[],
        help="also count one training step's kernel launches on cuda-emu",
    )
    args = parser.parse_args()
    print(f"H100 SXM: {PEAK_FLOPS / 1e12} TFLOP/s float32, {BANDWIDTH / 1e12} TB/s\n")
    print(ops_table(), step_table(), other_table(), sep="\n\n")
    if args.launches:
        print("\n" + launch_table(args.launches))


if __name__ == "__main__":
    main()

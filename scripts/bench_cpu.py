"""Train-step throughput of the tutorial MNIST net on the CPU: gpucnn NumPy vs PyTorch CPU.

Both run in one process on the same batch and weights, alternating after a warm-up; the table gives
medians and the ratio of the two measured in the same run. Any ``gpucnn bench`` option overrides
these defaults (the tutorial's loops too: ``--peers gpucnn-cpu,pytorch-cpu,tutorial-loops``).

    python scripts/bench_cpu.py --repeats 20
"""

import sys

from gpucnn.bench import main

if __name__ == "__main__":
    sys.exit(
        main(
            sys.argv[1:],
            suite="step",
            device="cpu",
            batch_size=[256],
            peers=["gpucnn-cpu", "pytorch-cpu"],
        )
    )

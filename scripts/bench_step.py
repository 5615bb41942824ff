"""A training step of the tutorial's MNIST net against the peers: ``gpucnn bench --suite step``.

python scripts/bench_step.py --device cpu --batch-size 64,256 --json step.json
"""

import sys

from gpucnn.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], suite="step"))

"""Each backend op vs PyTorch's on the tutorial net's layer shapes: ``gpucnn bench --suite ops``.

python scripts/bench_ops.py --device cpu --batch-size 64,256 --json ops.json
"""

import sys

from gpucnn.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], suite="ops"))

"""CUDA C sources of gpucnn's kernels, shipped in the wheel as the package ``gpucnn.kernels_cuda``."""

"""gpucnn: a CNN library whose sliding-window ops run on the CPU (NumPy) or as CUDA kernels (GPU).

from gpucnn import nn, optim, functional as F
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(36, 2))
model.to("cuda")   # or "cpu", or "auto"
"""

from . import functional, nn, optim
from .backend import backend_of, get_backend, to_device
from .errors import DeviceMismatchError, GpuUnavailableError
from .gradcheck import gradcheck
from .shapes import conv_output_size

__version__ = "0.1.0"


__all__ = [
    "DeviceMismatchError",
    "GpuUnavailableError",
    "backend_of",
    "conv_output_size",
    "functional",
    "get_backend",
    "gradcheck",
    "nn",
    "optim",
    "to_device",
]

"""Weight initialisation: He (Kaiming) normal, the tutorial's ``randn * sqrt(2 / fan_in)``."""

from __future__ import annotations

import numpy as np

from ..shapes import make_rng


def he_normal(shape: tuple[int, ...], fan_in: int, rng, dtype) -> np.ndarray:
    """Normal(0, 2 / fan_in) weights of ``shape``, suited to ReLU networks."""
    return (make_rng(rng).standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)

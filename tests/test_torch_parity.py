"""The CPU backend, and the reference itself, against PyTorch (torch.nn.functional and torch.optim):
forward outputs, every gradient and optimiser states. Skipped, with the reason, without torch."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")

from op_cases import TORCH_CASES, assert_outputs_close  # noqa: E402

pytestmark = pytest.mark.torch

SUBJECTS = [
    pytest.param("cpu", np.float32, id="cpu-f32"),
    pytest.param("cpu", np.float64, id="cpu-f64"),
    pytest.param("reference", np.float64, id="reference-f64"),
]


@pytest.mark.parametrize(("subject", "dtype"), SUBJECTS)
@pytest.mark.parametrize("case", TORCH_CASES, ids=repr)
def test_matches_torch(case, subject, dtype, cpu, rng):
    """Same inputs and upstream gradient through gpucnn and through torch, in the same dtype."""
    if subject == "reference" and case.reference is None:
        pytest.skip(f"{case.name} has no reference implementation")
    inputs = case.sample(rng, dtype)
    got = case.run(cpu, inputs) if subject == "cpu" else case.reference(inputs)
    assert_outputs_close(got, case.torch(inputs), case, dtype, f"{subject} vs torch")


def test_reference_max_pool_propagates_nan_as_torch(rng):
    """The reference's NaN rule (a window with a NaN gives NaN), which every backend follows
    (test_parity), is PyTorch's: NaN in the same output places."""
    import torch

    from gpucnn import reference as ref

    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    x.reshape(-1)[rng.choice(x.size, 12, replace=False)] = np.nan
    for kernel, stride, padding in [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1))]:
        want, _ = ref.max_pool2d_forward(x, kernel, stride, padding)
        pooled = torch.nn.functional.max_pool2d(torch.from_numpy(x), kernel, stride, padding)
        assert np.isnan(want).any()
        assert np.array_equal(np.isnan(pooled.numpy()), np.isnan(want))

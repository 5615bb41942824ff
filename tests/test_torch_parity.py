"""Every backend, and the reference itself, against PyTorch (torch.nn.functional and torch.optim):
forward outputs, every gradient and optimiser states. Skipped, with the reason, without torch."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")

from op_cases import DTYPES, TORCH_CASES, assert_outputs_close  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TORCH_CASES, ids=repr)
def test_backend_matches_torch(case, dtype, backend, rng):
    """Same inputs and upstream gradient through gpucnn and through torch, in the same dtype, on
    every device (the kernel devices directly, not only through the CPU)."""
    inputs = case.sample(rng, dtype)
    got = case.run(backend, inputs)
    assert_outputs_close(got, case.torch(inputs), case, dtype, f"{backend.name} vs torch")


@pytest.mark.parametrize("case", [c for c in TORCH_CASES if c.reference is not None], ids=repr)
def test_reference_matches_torch(case, rng):
    """The oracle itself, in float64."""
    inputs = case.sample(rng, np.float64)
    got = case.reference(inputs)
    assert_outputs_close(got, case.torch(inputs), case, np.float64, "reference vs torch")


def test_reference_batch_norm_eval_gradients_are_torchs(rng):
    """The reference's eval-mode batch-norm backward (the oracle of the layer's, which no op case
    reaches) against autograd through PyTorch's eval-mode batch_norm."""
    import torch

    from gpucnn import reference as ref

    x, gy = rng.standard_normal((2, 3, 4, 5)) * 2 + 1, rng.standard_normal((2, 3, 4, 5))
    mean, var = rng.standard_normal(3), rng.uniform(0.2, 3.0, 3)
    gamma, beta = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    leaves = [torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    y = torch.nn.functional.batch_norm(
        leaves[0], torch.tensor(mean), torch.tensor(var), leaves[1], leaves[2], eps=1e-5
    )
    y.backward(torch.tensor(gy))
    want = [leaf.grad.numpy() for leaf in leaves]
    got = ref.batch_norm2d_backward_eval(gy, x, gamma, mean, var, 1e-5)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


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

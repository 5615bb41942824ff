"""On a GPU: the emulated kernels (cuda-emu) and the real ones (cuda) agree on the same inputs.

The outputs the parity table marks exact (dropout masks, argmax indices) must agree bit for bit;
every other output is held to the parity table's tolerances, since nvcc contracts a*b+c into fused
multiply-adds while the emulation compiles with -ffp-contract=off, so sums and products may differ
in their last bits.
"""

import numpy as np
import pytest
from conftest import make_backend
from op_cases import CASES, assert_outputs_close

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_emulated_kernels_match_the_gpu(case, dtype, rng):
    cuda, emu = make_backend("cuda"), make_backend("cuda-emu")
    inputs = case.sample(rng, dtype)
    assert_outputs_close(case.run(cuda, inputs), case.run(emu, inputs), case, dtype, "cuda vs emu")

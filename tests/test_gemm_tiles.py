"""conv2d.cu's two GEMM tiles: which one the launchers pick, and that both give the same bits.

The square 64 x 64 tile and the narrow 16 x 256 one sum each output over its reduction in the same
order, so forcing either must give identical results. The launchers only pick the narrow tile for
16 rows or fewer; forcing it on more rows also runs its row-tile boundaries.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import KERNEL_BACKENDS, make_backend
from op_cases import SUMS

from gpucnn.backend.launchers import conv2d as conv_launchers
from gpucnn.backend.launchers.conv2d import (
    NARROW_TILE,
    SQUARE_TILE,
    _weight_plan,
    gemm_tile,
    square_tiles_only,
)

TILES = {"square": SQUARE_TILE, "narrow": NARROW_TILE}

# x shape, w shape, (stride, padding, dilation, groups): few and many rows per pass, a strided
# and dilated window, groups, and a reduction long enough to split the weight gradient.
GEOMETRIES = {
    "few_rows": ((2, 3, 11, 9), (5, 3, 3, 3), ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)),
    "many_rows": ((2, 40, 7, 6), (37, 40, 3, 2), ((1, 1), ((0, 1), (1, 0)), (1, 1), 1)),
    "strided_groups": ((3, 8, 13, 12), (6, 4, 3, 3), ((2, 1), ((1, 0), (2, 1)), (1, 2), 2)),
    "long_reduction": ((8, 9, 20, 20), (7, 9, 3, 3), ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)),
}


@pytest.mark.parametrize(
    ("rows", "columns", "expected"),
    [
        (16, 64 * 26 * 26, NARROW_TILE),  # conv1's forward at batch 64: 16 filters
        (1, 64 * 28 * 28, NARROW_TILE),  # conv1's input gradient: 1 channel
        (16, 64 * 13 * 13, NARROW_TILE),  # conv2's input gradient: 16 channels
        (32, 64 * 11 * 11, SQUARE_TILE),  # conv2's forward: 32 filters, two narrow tiles
        (17, 10**6, SQUARE_TILE),  # past one narrow tile of rows
        (16, 10, SQUARE_TILE),  # conv1's weight gradient: both pad to 4096 entries, a tie
        (16, 64, SQUARE_TILE),  # a tie again
        (16, 65, NARROW_TILE),  # 16 x 256 padded against 64 x 128
    ],
)
def test_gemm_tile_is_the_least_padded_work(rows: int, columns: int, expected):
    assert gemm_tile(rows, columns) == expected


def run_passes(backend, x, w, gy, geometry) -> list[np.ndarray]:
    """Forward (bias and ReLU), input gradient, and weight and bias gradients, on the host."""
    b = backend.asarray(np.linspace(-1, 1, w.shape[0]).astype(x.dtype))
    xd, wd, gyd = (backend.asarray(a) for a in (x, w, gy))
    y = backend.conv2d_forward(xd, wd, b, *geometry, relu=True)
    gx = backend.conv2d_backward_input(gyd, wd, x.shape, *geometry)
    gw, gb = backend.conv2d_backward_params(gyd, xd, w.shape, *geometry)
    return [backend.to_numpy(a) for a in (y, gx, gw, gb)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry_name", GEOMETRIES)
@pytest.mark.parametrize("device", KERNEL_BACKENDS)
def test_both_tiles_give_the_same_bits(device: str, geometry_name: str, dtype, rng, monkeypatch):
    backend = make_backend(device)
    x_shape, w_shape, geometry = GEOMETRIES[geometry_name]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    y_shape = backend.to_numpy(
        backend.conv2d_forward(backend.asarray(x), backend.asarray(w), None, *geometry)
    ).shape
    gy = rng.standard_normal(y_shape).astype(dtype)
    # The weight gradient's split follows the tile's block count; on these sizes both tiles'
    # splits are capped by the reduction's length, so they are the same and so are the bits.
    reduction, rows = y_shape[0] * y_shape[2] * y_shape[3], w_shape[0] // geometry[3]
    columns, groups = int(np.prod(w_shape[1:])) + 1, geometry[3]
    splits = {_weight_plan(t, rows, columns, reduction, groups)[:2] for t in TILES.values()}
    assert len(splits) == 1, f"the tiles split the weight gradient differently: {splits}"
    results = {}
    for name, tile in TILES.items():
        monkeypatch.setattr(conv_launchers, "gemm_tile", lambda rows, columns, t=tile: t)
        results[name] = run_passes(backend, x, w, gy, geometry)
    expected = run_passes(make_backend("cpu"), x, w, gy, geometry)
    # The CPU sums in another order: the op table's bound for sums, max|diff| / max|cpu|.
    for square, narrow, cpu, what in zip(
        results["square"], results["narrow"], expected, ("y", "gx", "gw", "gb"), strict=True
    ):
        assert np.isfinite(square).all() and np.abs(cpu).max() > 0, what
        np.testing.assert_array_equal(narrow, square, err_msg=what)
        err = np.abs(square.astype(np.float64) - cpu).max() / np.abs(cpu).max()
        assert err <= SUMS(dtype), (what, err, SUMS.why)


def test_square_tiles_only_holds_the_choice_and_gives_it_back():
    """The bench's square-tile peer: within square_tiles_only every GEMM is square, after it (an
    error included) the choice is the launcher's again."""
    narrow_case = (16, 64 * 26 * 26)
    with square_tiles_only():
        assert gemm_tile(*narrow_case) == SQUARE_TILE
    assert gemm_tile(*narrow_case) == NARROW_TILE
    with pytest.raises(KeyError), square_tiles_only():
        raise KeyError("a failed capture")
    assert gemm_tile(*narrow_case) == NARROW_TILE

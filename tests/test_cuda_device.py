"""The "cuda" device: one clear GpuUnavailableError per missing piece, "auto" falling back to the
CPU once, and on a GPU (marked ``gpu``, skipped with the reason elsewhere) bitwise-reproducible
kernels and indexing past 2^31 elements."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from conftest import REQUIRE_GPU_ENV, make_backend

from gpucnn.backend import cupy_backend, get_backend
from gpucnn.backend.launchers.winograd import convolution_algorithm
from gpucnn.errors import GpuUnavailableError


def _fake_cupy(driver=12040, runtime=12040, count=1) -> types.SimpleNamespace:
    """A stand-in for the cupy module with just the runtime queries create_cuda_backend makes."""

    def device_count():
        if isinstance(count, Exception):
            raise count
        return count

    runtime_api = types.SimpleNamespace(
        driverGetVersion=lambda: driver,
        runtimeGetVersion=lambda: runtime,
        getDeviceCount=device_count,
    )
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime_api))


def test_missing_cupy_names_the_extras(without_cupy):
    with pytest.raises(GpuUnavailableError, match=r"CuPy is not installed.*\[cuda12\].*\[cuda13\]"):
        get_backend("cuda")


def test_broken_cupy_install_says_so(monkeypatch):
    class Broken:
        def find_spec(self, name, path=None, target=None):
            if name == "cupy":
                raise ImportError("libcudart.so.12: cannot open shared object file")

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(GpuUnavailableError, match=r"CuPy failed to import \(libcudart"):
        cupy_backend.create_cuda_backend()


@pytest.mark.parametrize(
    "fake, message",
    [
        (_fake_cupy(driver=0), r"no NVIDIA driver found"),
        (
            _fake_cupy(driver=11080, runtime=12040),
            r"CuPy wheel needs CUDA 12\.4 but the NVIDIA driver supports CUDA 11\.8.*\[cuda12\]",
        ),
        (_fake_cupy(count=0), r"no NVIDIA GPU found"),
        (_fake_cupy(count=RuntimeError("cudaErrorNoDevice")), r"no usable NVIDIA GPU: cudaErr"),
    ],
    ids=["no-driver", "wrong-wheel", "no-device", "device-query-fails"],
)
def test_device_problems_get_one_clear_message(monkeypatch, fake, message):
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(GpuUnavailableError, match=message):
        cupy_backend.create_cuda_backend()


@pytest.mark.parametrize(("driver", "runtime"), [(12020, 12080), (13000, 12090), (12080, 12080)])
def test_a_driver_of_the_wheels_major_version_or_newer_is_enough(driver, runtime):
    """CUDA's minor version compatibility: a CUDA 12.2 driver runs a wheel built for 12.8, and a
    newer major version runs an older one; only an older major version is refused."""
    cupy_backend._check_device(_fake_cupy(driver=driver, runtime=runtime))


def test_auto_falls_back_to_cpu_and_says_so_once(monkeypatch, capsys, fresh_registry):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert get_backend("auto").name == "cpu"
    assert get_backend("auto").name == "cpu"
    err = capsys.readouterr().err
    assert err.count("device 'auto' uses the CPU") == 1
    assert "CuPy is not installed" in err


def test_an_unusable_cuda_skips_its_tests_or_fails_them_when_a_gpu_is_required(
    monkeypatch, fresh_registry
):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.delenv(REQUIRE_GPU_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="cuda backend unavailable: CuPy is not"):
        make_backend("cuda")
    monkeypatch.setenv(REQUIRE_GPU_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_GPU_ENV}=1 but the cuda backend"):
        make_backend("cuda")


# ----------------------------------------------------------------------------- on a GPU
@pytest.fixture(scope="module")
def cuda():
    return make_backend("cuda")


def _ops(backend, x, w, gy, dt):
    """Every reduction-bearing op once on ``backend`` (device arrays in, host arrays out)."""
    geometry = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    a = [backend.asarray(v) for v in (x, w, gy)]
    y, argmax = backend.max_pool2d_forward(a[0], (3, 3), (2, 2), (1, 1))
    gamma = backend.asarray(np.ones(x.shape[1], dt))
    out = [
        backend.conv2d_forward(a[0], a[1], None, *geometry),
        backend.conv2d_backward_input(a[2], a[1], x.shape, *geometry),
        backend.conv2d_backward_weight(a[2], a[0], w.shape, *geometry),
        backend.conv2d_backward_bias(a[2]),
        backend.max_pool2d_backward(y, argmax, x.shape, (3, 3), (2, 2), (1, 1)),
        backend.avg_pool2d_backward(y, x.shape, (3, 3), (2, 2), (1, 1)),
        backend.global_avg_pool2d_forward(a[0]),
        *backend.batch_norm2d_forward_train(a[0], gamma, gamma, 1e-5),
        *backend.softmax_cross_entropy_forward(
            a[0].reshape(x.shape[0], -1), np.zeros(x.shape[0], np.int64)
        ),
    ]
    return [backend.to_numpy(o) for o in out]


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ["direct", "winograd"])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_gpu_results_are_bitwise_identical_run_to_run(cuda, dt, algorithm):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 32, 30, 30)).astype(dt)  # N*H*W large enough to split bwd-weight
    w = rng.standard_normal((32, 32, 3, 3)).astype(dt)
    gy = rng.standard_normal((16, 32, 30, 30)).astype(dt)
    with convolution_algorithm(algorithm):
        first, second = _ops(cuda, x, w, gy, dt), _ops(cuda, x, w, gy, dt)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["direct", "winograd"])
def test_gpu_indexing_past_2_31_elements(cuda, algorithm):
    """A 2 x 1 x 32770 x 32770 float32 input (2^31 + 262152 elements, 8.6 GB): the corners of the
    last image, which only 64-bit index arithmetic reaches, match NumPy, with the convolutions
    direct and as Winograd (exact either way: small integers times eighths)."""
    xp = cuda.xp
    n, side = 2, 32770
    assert n * side * side > 2**31
    rows = xp.arange(side, dtype=xp.float32) % 7
    x = rows[:, None] + 2 * rows[None, :] + xp.arange(n, dtype=xp.float32)[:, None, None]
    x = x.reshape(n, 1, side, side)
    w = xp.asarray(np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3) / 8)
    geometry = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    cpu = get_backend("cpu")
    corner = cuda.to_numpy(x[-1:, :, -6:, -6:])  # the bottom-right input corner, with its halo
    expect = cpu.conv2d_forward(corner, cuda.to_numpy(w), None, (1, 1), ((0, 1), (0, 1)), (1, 1), 1)
    with convolution_algorithm(algorithm):
        y = cuda.conv2d_forward(x, w, None, *geometry)
        assert np.array_equal(cuda.to_numpy(y[-1:, :, -5:, -5:]), expect[:, :, -5:, -5:])
        gx = cuda.conv2d_backward_input(y, w, x.shape, *geometry)
    del y
    expect_gx = cpu.conv2d_backward_input(
        expect, cuda.to_numpy(w), (1, 1, 6, 6), (1, 1), ((0, 1), (0, 1)), (1, 1), 1
    )
    got = cuda.to_numpy(gx[-1:, :, -4:, -4:])
    assert np.allclose(got, expect_gx[:, :, -4:, -4:], rtol=1e-5)
    del gx
    relu = cuda.to_numpy(cuda.relu_forward(x - 3)[-1, 0, -3:, -3:])
    assert np.array_equal(relu, np.maximum(corner[0, 0, -3:, -3:] - 3, 0))

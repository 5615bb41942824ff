"""The CUDA sources build: every .cu compiles with nvcc for sm_80 and sm_90 with no register spills
(skipped where nvcc is absent), and the loader finds, inlines and names the kernels correctly."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import SCRIPTS, load_script

from gpucnn.backend import kernels

REPO = Path(__file__).resolve().parents[1]
SCRIPT = SCRIPTS / "compile_kernels.sh"
SOURCES = sorted((REPO / "kernels_cuda").glob("*.cu"))
ARCHS = ("80", "90")
needs_nvcc = pytest.mark.skipif(
    shutil.which("nvcc") is None, reason="nvcc (the CUDA toolkit) is not installed"
)


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_kernel_compiles_without_spills(source: Path, arch: str):
    env = {**os.environ, "ARCHS": arch}
    run = subprocess.run(
        ["bash", str(SCRIPT), str(source)], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stdout + run.stderr
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", run.stdout)]
    assert spills, f"no ptxas report for {source.name}:\n{run.stdout}"
    assert not any(spills), run.stdout


@needs_nvcc
@pytest.mark.parametrize("family", kernels.families())
def test_inlined_source_compiles_without_include_path(family: str, tmp_path: Path):
    """What CuPy compiles (headers pasted in) builds with no -I: the cache key covers it all."""
    source = tmp_path / f"{family}.cu"
    source.write_text(kernels.load_source(family))
    cmd = [
        "nvcc",
        "-std=c++17",
        "-cubin",
        "-arch=sm_90",
        "-o",
        str(tmp_path / "k.cubin"),
        str(source),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("family", kernels.families())
def test_name_expressions_match_the_instantiations(family: str):
    """Every kernel the loader names has explicit float/double instantiations for nvcc, and back."""
    text = (kernels.kernel_dir() / f"{family}.cu").read_text()
    instantiated = set(re.findall(r"template\s+__global__\s+void\s+(\w+)<T>", text))
    named = {n.split("<")[0] for n in kernels.name_expressions(family)}
    assert named == instantiated
    assert set(kernels.name_expressions(family)) == {
        f"{n}<{t}>" for n in named for t in kernels.KERNEL_TYPES
    }


@pytest.mark.parametrize("family", kernels.families())
def test_every_global_in_the_source_is_a_kernel_the_loader_names(family: str):
    """Each ``__global__`` in a source (its included headers too, comments left out) is either a
    ``<T>`` instantiation or the definition of a kernel the loader names, and so one that
    scripts/launch_all_kernels.py checks it launched (compute-sanitizer's coverage). A kernel
    written in a form the loader's pattern misses, ``__global__ __launch_bounds__(256) void
    k(...)`` say, with no instantiation, was named by neither and passed every check."""
    source = re.sub(r"//[^\n]*|/\*.*?\*/", "", kernels.load_source(family), flags=re.DOTALL)
    instantiations = re.findall(r"template\s+__global__\s+void\s+\w+<T>\s*\(", source)
    definitions = len(re.findall(r"\b__global__\b", source)) - len(instantiations)
    named = {n.split("<")[0] for n in kernels.name_expressions(family)}
    assert definitions == len(named), (
        f"{family}.cu: {definitions} kernels, the loader names {named}"
    )


def test_load_source_inlines_local_headers():
    source = kernels.load_source("conv2d")
    assert not re.search(r'^\s*#\s*include\s*"', source, re.MULTILINE)
    assert "GPUCNN_COMMON_CUH" in source and "block_reduce" in source


def test_kernel_dir_override(monkeypatch, tmp_path: Path):
    (tmp_path / "common.cuh").write_text("// header\n")
    (tmp_path / "toy.cu").write_text(
        '#include "common.cuh"\ntemplate <typename T>\n__global__ void toy(T* y) {}\n'
        "template <typename T>\n__global__ void __launch_bounds__(256, sizeof(T) == 4 ? 2 : 1)\n"
        "bounded(T* y) {}\n"
    )
    monkeypatch.setenv(kernels.KERNEL_DIR_ENV, str(tmp_path))
    assert kernels.kernel_dir() == tmp_path
    assert kernels.families() == ["toy"]
    assert kernels.load_source("toy").count("// header") == 1
    expected = ("toy<float>", "toy<double>", "bounded<float>", "bounded<double>")
    assert kernels.name_expressions("toy") == expected
    with pytest.raises(FileNotFoundError, match="missing.cu"):
        kernels.load_source("missing")


def test_a_kernel_name_the_loader_cannot_read_is_an_error(monkeypatch, tmp_path: Path):
    """__launch_bounds__ arguments nested two deep are past the name pattern: an error that says
    so, not a kernel called __launch_bounds__."""
    (tmp_path / "toy.cu").write_text(
        "template <typename T>\n__global__ void __launch_bounds__(256, (sizeof(T) > 4) + 1)\n"
        "toy(T* y) {}\n"
    )
    monkeypatch.setenv(kernels.KERNEL_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="toy.cu: a kernel's __launch_bounds__"):
        kernels.name_expressions("toy")


def test_default_kernel_dir_holds_the_sources(monkeypatch):
    monkeypatch.delenv(kernels.KERNEL_DIR_ENV, raising=False)
    assert {"conv2d", "pool2d", "optim"} <= set(kernels.families())


def test_kernel_dir_is_the_checkouts_before_an_installed_package(monkeypatch, tmp_path: Path):
    """The sources beside the imported package win over ``gpucnn.kernels_cuda``, which an editable
    install of another checkout maps to that checkout (its kernels would run with this code)."""
    checkout, other = tmp_path / "checkout", tmp_path / "other"
    for folder in (checkout / "kernels_cuda", other):
        folder.mkdir(parents=True)
        (folder / "toy.cu").write_text("")
    monkeypatch.delenv(kernels.KERNEL_DIR_ENV, raising=False)
    monkeypatch.setattr(kernels.importlib.resources, "files", lambda package: other)
    monkeypatch.setattr(kernels, "__file__", str(checkout / "gpucnn" / "backend" / "kernels.py"))
    assert kernels.kernel_dir() == checkout / "kernels_cuda"
    (checkout / "kernels_cuda" / "toy.cu").unlink()  # a wheel: no sources beside the package
    assert kernels.kernel_dir() == other


def test_cupy_runner_compiles_nothing_until_asked(monkeypatch):
    """Building a runner needs no CuPy; the first module() call is what imports and compiles."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    runner = kernels.CupyRunner()
    with pytest.raises(ImportError):
        runner.module("activation", kernels.name_expressions("activation"))


@pytest.fixture
def compile_log(monkeypatch) -> list[tuple]:
    """A stand-in for CuPy whose modules log each compile: (source, options, name expressions,
    the device current in the compiling thread). The caller's device is 3; one worker thread, so
    the log keeps the order compiles were started in."""
    import threading
    import types

    log: list[tuple] = []
    current = threading.local()

    class RawModule:
        def __init__(self, code, options, name_expressions):
            self.code, self.options, self.names = code, options, name_expressions

        def compile(self):
            log.append((self.code, self.options, self.names, getattr(current, "device", None)))

        def get_function(self, name):
            assert (name,) == self.names, f"{name} asked of the module of {self.names}"
            return name

    def set_device(device):
        current.device = device

    runtime = types.SimpleNamespace(getDevice=lambda: 3, setDevice=set_device)
    fake = types.SimpleNamespace(RawModule=RawModule, cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(kernels.os, "sched_getaffinity", lambda pid: {0})
    return log


def test_cupy_runner_warmup_compiles_every_kernel_once_on_the_callers_device(compile_log):
    """warmup() compiles each kernel and float type once, as a module of its own (its name
    expression only, explicit instantiations off), in worker threads, each of which first sets
    the caller's device (a new thread has no current context to load a module into); after it,
    get_function finds each kernel in its own module and compiles nothing more."""
    runner = kernels.CupyRunner()
    runner.warmup()
    want = [
        (kernels.load_source(family), ("-DGPUCNN_NAMED_ONLY",), (name,), 3)
        for family in kernels.families()
        for name in kernels.name_expressions(family)
    ]
    assert sorted(compile_log) == sorted(want)
    first = kernels.name_expressions("conv2d")  # the slowest family's kernels start first
    assert [names[0] for _, _, names, _ in compile_log[: len(first)]] == list(first)
    module = runner.module("conv2d", kernels.name_expressions("conv2d"))
    for name in ("conv2d_forward<float>", "conv2d_forward<double>"):
        assert module.get_function(name) == name
    assert len(compile_log) == len(want)


def test_first_kernel_of_a_type_compiles_the_familys_kernels_of_that_type(compile_log):
    """Without warmup, the first kernel asked of a float type compiles the family's kernels of
    that type (side by side, on the caller's device), and no other type's; later kernels of that
    type compile nothing."""
    names = kernels.name_expressions("conv2d")
    module = kernels.CupyRunner().module("conv2d", names)
    assert compile_log == []  # nothing at creation
    module.get_function("conv2d_forward<float>")
    floats = [n for n in names if n.endswith("<float>")]
    assert [(logged[2][0], logged[3]) for logged in compile_log] == [(n, 3) for n in floats]
    module.get_function("conv2d_backward_input<float>")
    assert len(compile_log) == len(floats)
    module.get_function("sum_partials<double>")
    assert [logged[2][0] for logged in compile_log[len(floats) :]] == [
        n for n in names if n.endswith("<double>")
    ]


@needs_nvcc
def test_a_named_only_module_instantiates_just_its_kernel(tmp_path: Path):
    """With GPUCNN_NAMED_ONLY (as CupyRunner compiles) a family instantiates no kernel itself
    (NVRTC then builds the one its name expression names: the test below); without it, nvcc's
    check builds them all."""
    source = tmp_path / "conv2d.cu"
    source.write_text(kernels.load_source("conv2d"))
    command = ["nvcc", "-std=c++17", "-cubin", "-arch=sm_90", "-Xptxas", "-v", str(source)]
    named = subprocess.run(
        [*command, "-DGPUCNN_NAMED_ONLY", "-o", str(tmp_path / "a.cubin")],
        capture_output=True,
        text=True,
        check=True,
    )
    everything = subprocess.run(
        [*command, "-o", str(tmp_path / "b.cubin")], capture_output=True, text=True, check=True
    )
    assert "Compiling entry function" not in named.stderr
    entries = everything.stderr.count("Compiling entry function")
    assert entries == len(kernels.name_expressions("conv2d"))


@functools.cache
def nvrtc_or_none():
    """scripts/nvrtc_times.py's NVRTC, or None where no NVRTC library is installed (looked for
    once: the skip markers ask at collection)."""
    script = load_script("nvrtc_times")
    try:
        return script.Nvrtc(script.find_nvrtc())
    except OSError:
        return None


needs_nvrtc = pytest.mark.skipif(
    nvrtc_or_none() is None, reason="no NVRTC library (nvidia-cuda-nvrtc)"
)


@needs_nvrtc
@pytest.mark.parametrize("name", ["conv2d_forward<float>", "sum_partials<double>"])
def test_nvrtc_builds_just_the_named_kernel(name: str):
    """As CupyRunner compiles it (GPUCNN_NAMED_ONLY and one name expression), a module holds
    the one kernel it names: its lowered name, and one kernel's code."""
    mangled = {
        "conv2d_forward<float>": b"_Z14conv2d_forwardIfEv",
        "sum_partials<double>": b"_Z12sum_partialsIdEv",
    }
    _, cubin = nvrtc_or_none().build("conv2d", name, "sm_90")
    assert mangled[name] in cubin
    assert len(set(re.findall(rb"\.text\._Z\w+", cubin))) == 1, "one kernel's code, no other"


@needs_nvrtc
def test_nvrtc_builds_every_kernel_module_as_cupy_asks():
    """Every kernel and float type builds under NVRTC, which CuPy compiles with on a GPU machine,
    with CupyRunner's options (C++17, GPUCNN_NAMED_ONLY, one name expression), to a cubin of that
    one kernel. NVRTC has neither host headers nor a host compiler, so a source nvcc builds can
    still fail there; here that shows without a GPU (the dev extra installs NVRTC)."""
    nvrtc = nvrtc_or_none()
    modules = [(f, name) for f in kernels.families() for name in kernels.name_expressions(f)]
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        cubins = list(pool.map(lambda module: nvrtc.build(*module, "sm_90")[1], modules))
    for module, cubin in zip(modules, cubins, strict=True):
        assert len(set(re.findall(rb"\.text\._Z\w+", cubin))) == 1, module


@needs_nvrtc
def test_a_source_nvrtc_refuses_shows_nvrtcs_messages(monkeypatch):
    """A failed build says which kernel and what NVRTC said, not only its status number."""
    script = load_script("nvrtc_times")
    monkeypatch.setattr(script, "_source", lambda family: b"__global__ void k() { undeclared; }")
    with pytest.raises(RuntimeError, match=r"(?s)cannot build k \(conv2d\):.*undeclared"):
        script.Nvrtc(script.find_nvrtc()).build("conv2d", "k", "sm_90")


def test_nvrtc_times_builds_each_kernel_as_cupy_does(monkeypatch, capsys):
    """scripts/nvrtc_times.py (the no-GPU stand-in for the cold-compile goal) times one module per
    kernel and float type, the name expressions CuPy's modules get."""
    script = load_script("nvrtc_times")
    built = []

    class FakeNvrtc:
        def __init__(self, path):
            assert path == "libnvrtc.so"

        def compile_seconds(self, family, name, arch):
            assert arch == "sm_90"
            built.append((family, name))
            return 0.5 if name == "conv2d_forward<float>" else 0.1

    monkeypatch.setattr(script, "Nvrtc", FakeNvrtc)
    assert script.main(["--library", "libnvrtc.so"]) == 0
    assert built == [(f, n) for f in kernels.families() for n in kernels.name_expressions(f)]
    assert "slowest conv2d_forward<float> 0.50 s" in capsys.readouterr().out


def test_every_package_ships_in_the_wheel():
    """pyproject.toml lists the packages by hand (kernels_cuda is mapped in under gpucnn): each
    folder of gpucnn/ with an __init__.py must be in that list, or a wheel would lack it."""
    tomllib = pytest.importorskip("tomllib", reason="Python before 3.11 has no tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(path.parent.relative_to(REPO).parts)
        for path in (REPO / "gpucnn").rglob("__init__.py")
    }
    assert folders <= set(config["packages"]), sorted(folders - set(config["packages"]))


def test_a_header_included_twice_is_pasted_once(monkeypatch, tmp_path: Path):
    """Headers that include each other (each behind its include guard) are pasted once each, the
    second include left as a comment, instead of pasting without end."""
    (tmp_path / "a.cuh").write_text('#ifndef A\n#define A\n#include "b.cuh"\nint a;\n#endif\n')
    (tmp_path / "b.cuh").write_text('#ifndef B\n#define B\n#include "a.cuh"\nint b;\n#endif\n')
    (tmp_path / "toy.cu").write_text('#include "a.cuh"\n#include "b.cuh"\n')
    monkeypatch.setenv(kernels.KERNEL_DIR_ENV, str(tmp_path))
    source = kernels.load_source("toy")
    assert source.count("int a;") == source.count("int b;") == 1
    assert "// b.cuh: already inlined above" in source


def fake_nvcc(tmp_path: Path, report: str, status: int = 0) -> str:
    """A stand-in for nvcc that logs its arguments (one call a line), prints ``report`` (what
    ptxas -v would) and exits ``status``."""
    path = tmp_path / "nvcc"
    path.write_text(
        f'#!/bin/sh\necho "$@" >>"{tmp_path}/calls"\nprintf "{report}"\nexit {status}\n'
    )
    path.chmod(0o755)
    return str(path)


def ptxas(spill_stores: int = 0) -> str:
    return (
        "ptxas info    : Compiling entry function 'k' for 'sm_90'\\n"
        f"    0 bytes stack frame, {spill_stores} bytes spill stores, 0 bytes spill loads\\n"
    )


def compile_with(tmp_path: Path, nvcc: str):
    sources = [tmp_path / "a.cu", tmp_path / "b.cu"]
    for source in sources:
        source.write_text("")
    env = {**os.environ, "NVCC": nvcc, "ARCHS": "80 90"}
    args = ["bash", str(SCRIPT), *map(str, sources)]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)


def test_compile_report_builds_each_file_for_each_arch_with_warnings_as_errors(tmp_path: Path):
    """Without nvcc: scripts/compile_kernels.sh (gpu_check.sh's nvcc-report) runs $NVCC once per
    file and architecture of $ARCHS, warnings as errors and ptxas verbose, and passes a clean
    report."""
    result = compile_with(tmp_path, fake_nvcc(tmp_path, ptxas()))
    assert result.returncode == 0, result.stdout
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [(c.split()[-1], c.split()[2]) for c in calls] == [
        (str(tmp_path / f), f"-arch=sm_{arch}") for f in ("a.cu", "b.cu") for arch in ("80", "90")
    ]
    assert all(" -Xptxas -v -Werror all-warnings -I kernels_cuda " in c for c in calls), calls
    assert result.stdout.count(": 1 kernels, no spills") == 4


@pytest.mark.parametrize(
    "report, status, failure",
    [
        (ptxas(spill_stores=8), 0, "register spills (1 nonzero spill counts above)"),
        ("ptxas info    : Used 0 registers\\n", 0, "no kernel instantiated"),
        ("error: expected a ;\\n", 1, "compile error"),
    ],
    ids=["spill", "no-kernel", "compile-error"],
)
def test_compile_report_fails_and_goes_on_to_the_next_build(
    tmp_path: Path, report, status, failure
):
    """A spill, a source with no kernel, or a compile error fails the report (exit 1), each build
    of each file still reported."""
    result = compile_with(tmp_path, fake_nvcc(tmp_path, report, status))
    assert result.returncode == 1
    for name in ("a.cu", "b.cu"):
        for arch in ("80", "90"):
            assert f"FAIL {tmp_path / name} sm_{arch}: {failure}" in result.stdout, result.stdout

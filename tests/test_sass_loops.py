"""scripts/sass_loops.py: the static cost of a kernel's FMA loops, read from nvdisasm's listing.

The parsing is checked on a hand-written listing in nvdisasm's format (no CUDA tools needed); the
whole script runs on conv2d.cu where nvcc and nvdisasm are installed.
"""

from __future__ import annotations

import shutil

import pytest
from conftest import load_script

script = load_script("sass_loops")

# An outer loop (.L_x_0 .. 0x0070) around an inner FMA loop (.L_x_1 .. 0x0050), then a loop
# without FMAs (.L_x_2 .. 0x0090): only the inner loop counts, outer loops hold it.
LISTING = """
.L_x_0:
        /*0000*/                   LDG.E R2, desc[UR4][R4.64] ;
.L_x_1:
        /*0010*/                   LDS.128 R8, [R3] ;
        /*0020*/                   FFMA R12, R8, R9, R12 ;
        /*0030*/              @!P1 CALL.REL.NOINC `($__internal_0_$__cuda_sm20_div_s64) ;
        /*0040*/                   FFMA R13, R10, R11, R13 ;
        /*0050*/              @P0 BRA `(.L_x_1) ;
        /*0060*/                   STS [R3], R12 ;
        /*0070*/              @P2 BRA `(.L_x_0) ;
.L_x_2:
        /*0080*/                   IADD3 R1, R1, 0x1, RZ ;
        /*0090*/              @P3 BRA `(.L_x_2) ;
        /*00a0*/                   EXIT ;
"""


def test_only_the_innermost_fma_loop_counts():
    ((size, counts),) = script.fma_loops(LISTING)
    assert size == 5  # 0x0010 .. 0x0050
    assert (counts["fma"], counts["lds"], counts["call"], counts["ldg"]) == (2, 1, 1, 0)


def test_a_function_without_fma_loops_has_none():
    assert script.fma_loops(LISTING.replace("FFMA", "FADD")) == []


@pytest.mark.parametrize(
    ("symbol", "name"),
    [
        ("_Z14conv2d_forwardIfEvPKT_S2_S2_PS0_xxxxxxxxxxxxxxxxiii", "conv2d_forward<float>"),
        ("_Z12sum_partialsIdEvPKT_PS0_xx", "sum_partials<double>"),
        ("plain_kernel", "plain_kernel"),
    ],
)
def test_kernel_names_are_demangled(symbol: str, name: str):
    assert script.kernel_name(symbol) == name


def cuda_tools_missing() -> bool:
    """True where nvcc or nvdisasm is not installed."""
    try:
        script.find_nvdisasm()
    except OSError:
        return True
    return shutil.which("nvcc") is None


@pytest.mark.skipif(cuda_tools_missing(), reason="nvcc or nvdisasm is not installed")
def test_conv2d_has_an_fma_loop_per_tile():
    rows = script.family_rows("conv2d", "sm_90", "float", script.find_nvdisasm())
    forward = [row for row in rows if row[0] == "conv2d_forward<float>"]
    assert sorted(int(row[3]) for row in forward) == [128, 256]  # narrow and square slabs


def test_registers_are_each_kernels_own():
    """A device function's report has no register line: the next kernel's must not be taken."""
    report = (
        "ptxas info    : Function properties for __internal_accurate_pow\n"
        "    8 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Compiling entry function '_Z3sgdIfEvPT_' for 'sm_90'\n"
        "ptxas info    : Function properties for _Z3sgdIfEvPT_\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 32 registers, used 0 barriers\n"
    )
    assert dict(script._REGISTERS.findall(report)) == {"_Z3sgdIfEvPT_": "32"}

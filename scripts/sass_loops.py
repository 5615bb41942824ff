"""Static cost of each kernel's hottest loop, read from its machine code (SASS), no GPU needed.

Compiles a kernel family with nvcc for one architecture and float type (as
``scripts/compile_kernels.sh`` does), disassembles the cubin with ``nvdisasm`` and prints, per
kernel: its registers (ptxas's report) and, for each innermost loop that holds multiply-adds,
the instructions from its head to its back branch, how many are FFMA/DFMA, global loads, shared
loads and stores, and calls (a 64-bit integer division is a call to a ~70-instruction
subroutine). The counts are static: every path of the loop's body, so a branch taken by few
threads (a GEMM slab's decode, by 16) counts in full. What a CPU-only machine can read of a
kernel's code: a conv2d main loop of 256 FMAs in 620 instructions, say.

nvdisasm is not part of every CUDA install: ``pip install nvidia-cuda-nvdisasm`` provides it
(found on PATH, else in that wheel's ``nvidia/*/bin``).

    python scripts/sass_loops.py [conv2d ...] [--arch sm_90] [--type float]
"""

from __future__ import annotations

import argparse
import glob
import re
import shutil
import site
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from gpucnn.backend.kernels import families, kernel_dir
from gpucnn.cli import run_reporting_errors

_FUNCTION = re.compile(r"^\.text\.(\w+):$", re.M)
_LABEL = re.compile(r"^(\.L_x_\d+):$")
_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*);")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")
# A function's "Used N registers" line, before the next function's report starts (device
# functions such as __internal_accurate_pow have a report without one).
_REGISTERS = re.compile(
    r"Function properties for (\w+)\n(?:(?!.*Function properties)[^\n]*\n)*?[^\n]*Used (\d+) registers"
)
# What each column counts: an instruction counts in the first class whose prefix it starts with.
_CLASSES = {
    "fma": ("FFMA", "DFMA"),
    "ldg": ("LDG",),
    "lds": ("LDS",),
    "sts": ("STS",),
    "call": ("CALL",),
}


def find_nvdisasm() -> str:
    """nvdisasm on PATH, else the one in the pip wheel ``nvidia-cuda-nvdisasm``."""
    found = shutil.which("nvdisasm")
    roots = [*site.getsitepackages(), site.getusersitepackages()]
    wheel = [p for root in roots for p in sorted(glob.glob(f"{root}/nvidia/*/bin/nvdisasm"))]
    if found or wheel:
        return found or wheel[0]
    raise OSError(
        "nvdisasm not found: pip install nvidia-cuda-nvdisasm (or add CUDA's bin to PATH)"
    )


def compile_family(family: str, arch: str, folder: Path) -> tuple[Path, str]:
    """(cubin, ptxas report) of ``family`` for ``arch``, every kernel and float type."""
    cubin = folder / f"{family}.cubin"
    command = [
        *("nvcc", "-std=c++17", "-cubin", f"-arch={arch}", "-Xptxas", "-v"),
        *("-I", str(kernel_dir()), "-o", str(cubin), str(kernel_dir() / f"{family}.cu")),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"nvcc failed on {family}.cu:\n{done.stderr}")
    return cubin, done.stderr


def fma_loops(listing: str) -> list[tuple[int, Counter]]:
    """(instructions, counts by class) of each innermost loop in ``listing`` (one function's
    disassembly) that holds FMAs: the span from a backward branch's target to the branch. A
    kernel that picks one of two tiles at run time has one such loop per tile."""
    labels: dict[str, int] = {}
    code: list[tuple[int, str, str]] = []  # (address, opcode, operands)
    pending: list[str] = []
    for line in listing.splitlines():
        label = _LABEL.match(line.strip())
        if label:
            pending.append(label.group(1))
            continue
        instruction = _INSTRUCTION.search(line)
        if instruction:
            address = int(instruction.group(1), 16)
            labels.update((name, address) for name in pending)
            pending = []
            code.append((address, instruction.group(2), instruction.group(3)))
    spans = {}
    for address, opcode, operands in code:
        target = _TARGET.search(operands)
        if opcode.startswith("BRA") and target and labels[target.group(1)] <= address:
            body = [op for at, op, _ in code if labels[target.group(1)] <= at <= address]
            counts = Counter(
                name
                for op in body
                for name, prefixes in _CLASSES.items()
                if op.startswith(prefixes)
            )
            if counts["fma"]:
                spans[(labels[target.group(1)], address)] = (len(body), counts)
    innermost = [
        span
        for span in spans
        if not any(other != span and span[0] <= other[0] <= other[1] <= span[1] for other in spans)
    ]
    return [spans[span] for span in sorted(innermost)]


def kernel_name(symbol: str) -> str:
    """``conv2d_forward<float>`` for the mangled ``_Z14conv2d_forwardIfEv...``."""
    mangled = re.match(r"_Z(\d+)", symbol)
    if not mangled:
        return symbol
    start = mangled.end()
    name = symbol[start : start + int(mangled.group(1))]
    types = {"If": "<float>", "Id": "<double>"}
    return name + types.get(symbol[start + len(name) : start + len(name) + 2], "")


def family_rows(family: str, arch: str, float_type: str, nvdisasm: str) -> list[list[str]]:
    """One row per FMA loop of each ``float_type`` kernel of ``family`` (a kernel without one
    gets a row that says so): name, registers, the loop's instructions and class counts."""
    with tempfile.TemporaryDirectory() as folder:
        cubin, report = compile_family(family, arch, Path(folder))
        listing = subprocess.run(
            [nvdisasm, "-c", str(cubin)], capture_output=True, text=True, check=True
        ).stdout
    registers = dict(_REGISTERS.findall(report))
    parts = _FUNCTION.split(listing)
    rows = []
    for symbol, body in sorted(zip(parts[1::2], parts[2::2], strict=True)):
        name = kernel_name(symbol)
        if not name.endswith(f"<{float_type}>"):
            continue
        loops = fma_loops(body) or [(0, Counter())]
        for size, counts in loops:
            row = [name, registers.get(symbol, "?")]
            if not size:
                rows.append(row + ["no FMA loop"] + [""] * 6)
                continue
            row += [str(size), str(counts["fma"]), f"{counts['fma'] / size:.0%}"]
            rows.append(row + [str(counts[c]) for c in ("ldg", "lds", "sts", "call")])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("families", nargs="*", help="kernel families (default: all)")
    parser.add_argument("--arch", default="sm_90", help="nvcc architecture (default sm_90)")
    parser.add_argument("--type", default="float", choices=("float", "double"))
    args = parser.parse_args(argv)
    nvdisasm = find_nvdisasm()
    header = ["kernel", "regs", "loop instr", "FMA", "FMA share", "LDG", "LDS", "STS", "CALL"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for family in args.families or families():
        for row in family_rows(family, args.arch, args.type, nvdisasm):
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors("sass_loops.py", main))

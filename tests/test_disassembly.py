"""The int8 GEMMs really run on the dot-product instructions: disassemble the built ARM library and
find SDOT (or, on ARMv8.0 cores, SMULL) inside a loop of each int8 kernel's body."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import coverage_specs

OBJDUMP = next((t for t in ("aarch64-linux-gnu-objdump", "llvm-objdump") if shutil.which(t)), None)
INT8_OPS = ("qgemm_w8a8", "qgemm_w4a8", "qkv_proj")
BRANCH = re.compile(r"^(b|b\.\w+|cbn?z|tbn?z)$")


def functions(library) -> dict[str, list[tuple[int, str, str]]]:
    """symbol -> [(address, mnemonic, operands)] from objdump -d."""
    text = subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True,
                          check=True).stdout
    funcs: dict[str, list] = {}
    current = None
    for line in text.splitlines():
        header = re.match(r"^([0-9a-f]+) <(.+)>:$", line)
        if header:
            current = funcs.setdefault(header.group(2), [])
            continue
        insn = re.match(r"^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$", line)
        if insn and current is not None:
            current.append((int(insn.group(1), 16), insn.group(2), insn.group(3)))
    return funcs


def in_loop(body, mnemonic: str) -> bool:
    """Is some `mnemonic` instruction between a backward branch and its target?"""
    hits = [addr for addr, m, _ in body if m == mnemonic]
    loops = []
    for addr, m, ops in body:
        target = re.search(r"\b([0-9a-f]+) <", ops)
        if BRANCH.match(m) and target and int(target.group(1), 16) < addr:
            loops.append((int(target.group(1), 16), addr))
    return any(start <= hit < end for hit in hits for start, end in loops)


def int8_kernels():
    return [s for s in coverage_specs()
            if s.op in INT8_OPS and (s.op != "qkv_proj" or s.opt("quant") not in ("w4a16", "w8a16"))]


@pytest.mark.skipif(OBJDUMP is None, reason="needs aarch64-linux-gnu-objdump (binutils-aarch64-linux-gnu)")
@pytest.mark.parametrize("target, instruction", [("arm", "sdot"), ("arm-i8mm", "sdot"), ("arm-a53", "smull")])
def test_int8_kernels_use_dot_instructions_in_loops(build_library, target, instruction):
    funcs = functions(build_library(target, coverage_specs()) / "kernels.so")
    for spec in int8_kernels():
        for symbol in (spec.name, f"{spec.name}__m1"):  # the any-length GEMM and the decode GEMV
            body = funcs[f"{symbol}_compute_"]
            assert in_loop(body, instruction), f"{symbol} on {target}: no {instruction} inside a loop"


@pytest.mark.skipif(OBJDUMP is None, reason="needs aarch64-linux-gnu-objdump (binutils-aarch64-linux-gnu)")
def test_armv8_0_build_has_no_sdot(build_library):
    """A Cortex-A53 build must not contain SDOT: it would be an illegal instruction there."""
    funcs = functions(build_library("arm-a53", coverage_specs()) / "kernels.so")
    assert not any(m == "sdot" for body in funcs.values() for _, m, _ in body)

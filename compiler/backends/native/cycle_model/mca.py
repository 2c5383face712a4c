"""Steady-state cycles of straight-line blocks of aarch64 code on a named core, from llvm-mca.

llvm-mca's core models change a lot between LLVM versions (one W8A8 GEMV loop is 17 / 10 / 20
cycles per iteration on neoverse-n1 in LLVM 16 / 19 / 22), so one version is pinned and any other
is refused: Debian bookworm's llvm-19 (19.1.7)."""

from __future__ import annotations

import re
import shutil
import subprocess

LLVM_MCA = "llvm-mca-19"
PINNED_VERSION = "19.1.7"
ITERATIONS = 100  # each block repeated back to back: the per-iteration cycles are its steady state

# Instructions whose last operand objdump prints as an address ("b.ne 1234 <f+0x10>"): llvm-mca
# needs a symbol there; the target does not change a block's cost.
_ADDRESS_OPERAND = re.compile(r"^(b(\.\w+)?|bl|cbn?z|tbn?z|adrp?|ldr|prfm)$")


class ModelError(RuntimeError):
    """The cycle model cannot run here (a tool missing or of the wrong version)."""


def check_version() -> str:
    """The pinned llvm-mca's path, or ModelError saying what to install."""
    path = shutil.which(LLVM_MCA)
    if path is None:
        raise ModelError(f"the cycle model needs {LLVM_MCA} {PINNED_VERSION} (Debian bookworm: apt-get install llvm-19)")
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    version = re.search(r"LLVM version (\S+)", out)
    if not version or version.group(1) != PINNED_VERSION:
        raise ModelError(f"{path} is LLVM {version.group(1) if version else 'unknown'}; the cycle model is pinned to "
                         f"{PINNED_VERSION}, whose core models its figures come from")
    return path


# A call is costed as the branch it is: the callee's own blocks are counted where they run (llvm-mca
# would charge a call 100 cycles of latency).
_CALLS = {"bl": "b", "blr": "br"}


def assembly(mnemonic: str, operands: str) -> str:
    """One objdump instruction as llvm-mca's assembler reads it."""
    mnemonic = _CALLS.get(mnemonic, mnemonic)
    operands = re.sub(r"\s*<[^>]*>\s*$", "", re.sub(r"\s*//.*$", "", operands)).strip()
    if _ADDRESS_OPERAND.match(mnemonic) and re.search(r"(^|,\s*)(0x)?[0-9a-f]+$", operands) and "[" not in operands:
        operands = re.sub(r"(^|,\s*)(0x)?[0-9a-f]+$", r"\1target", operands)
    return f"{mnemonic}\t{operands}" if operands else mnemonic


def cycles_per_run(blocks: dict[str, list[str]], mcpu: str) -> dict[str, float]:
    """{block name: cycles per execution in steady state} for blocks of instructions (llvm-mca
    regions, one llvm-mca run for all)."""
    path = check_version()
    source = ["target:"]
    for name, lines in blocks.items():
        # An SVE MOVPRFX that ends a block (qemu split the pair at a page boundary: a translated
        # block never crosses one) would prefix the next region's first instruction, which
        # llvm-mca's assembler refuses; its instruction is counted where it runs, the prefix dropped.
        if lines and lines[-1].split()[0] == "movprfx":
            lines = lines[:-1]
        source += [f"# LLVM-MCA-BEGIN {name}", *lines, f"# LLVM-MCA-END {name}"]
    # Instructions the core model has no timing for (e.g. the thread pool's atomics) cost nothing.
    proc = subprocess.run([path, "-mtriple=aarch64", f"-mcpu={mcpu}", f"-iterations={ITERATIONS}",
                           "-skip-unsupported-instructions=lack-sched"],
                          input="\n".join(source) + "\n", capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(f"llvm-mca failed on the kernel's blocks: {proc.stderr.strip()[-2000:]}")
    regions = re.findall(r"\[\d+\] Code Region - (\S+)\s.*?Total Cycles:\s+(\d+)", proc.stdout, re.S)
    cycles = {name: int(total) / ITERATIONS for name, total in regions}
    missing = set(blocks) - set(cycles)
    if missing:
        raise ModelError(f"llvm-mca reported no cycles for {len(missing)} block(s), e.g. {sorted(missing)[0]}")
    return cycles

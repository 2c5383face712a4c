"""Reading a built library's machine code back (objdump -d) for the compile-tier tests: which
instructions each function has, and whether one sits inside a loop."""

from __future__ import annotations

import re
import subprocess

# Branch mnemonics per ISA (a backward branch closes a loop).
BRANCHES = {
    "aarch64": re.compile(r"^(b|b\.\w+|cbn?z|tbn?z)$"),
    "x86_64": re.compile(r"^j[a-z]+$"),
}


def functions(objdump: str, library) -> dict[str, list[tuple[int, str, str]]]:
    """symbol -> [(address, mnemonic, operands)] from objdump -d."""
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True,
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


def loops(body, isa: str) -> list[tuple[int, int]]:
    """(start, end) address ranges between each backward branch's target and the branch."""
    found = []
    for addr, m, ops in body:
        target = re.search(r"\b([0-9a-f]+) <", ops)
        if BRANCHES[isa].match(m) and target and int(target.group(1), 16) < addr:
            found.append((int(target.group(1), 16), addr))
    return found


def in_loop(body, isa: str, wanted) -> bool:
    """Is some instruction for which wanted(mnemonic, operands) holds between a backward branch and
    its target?"""
    hits = [addr for addr, m, ops in body if wanted(m, ops)]
    return any(start <= hit < end for hit in hits for start, end in loops(body, isa))



def innermost_loops_with(body, isa: str, wanted) -> list[list[tuple[int, str, str]]]:
    """The instructions of each loop holding an instruction for which wanted(mnemonic, operands)
    holds, and no smaller such loop inside it (a kernel's hot loop, without what its outer loops do)."""
    hits = [addr for addr, m, ops in body if wanted(m, ops)]
    holding = [(s, e) for s, e in loops(body, isa) if any(s <= hit < e for hit in hits)]
    inner = [(s, e) for s, e in holding if not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in holding)]
    return [[insn for insn in body if s <= insn[0] <= e] for s, e in inner]

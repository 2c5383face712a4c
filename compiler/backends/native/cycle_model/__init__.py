"""A cycle model of ARM cores for kernels built here, since there is no board: one kernel call runs
under qemu-aarch64 with a plugin that counts exactly how often each translated block executes
(counts.py); each block's steady-state cycles on a named core come from the pinned llvm-mca
(mca.py); modelled time = sum of count x cycles at the core's clock (targets/cores.toml).

A MODEL, not a measurement: one core, every load an L1 hit, no front-end or branch effects, no
memory hierarchy (the bytes a kernel must move are reported beside it, with the time the core's
DRAM bandwidth would need), never validated on silicon. Use it to rank schedules and to find
waste, never to claim a speed."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from compiler import models, ops
from compiler.backends.native.cycle_model import mca
from compiler.backends.native.cycle_model.counts import Block, binutils, count_blocks
from compiler.runtime.checks import bucket_matches
from compiler.verify import spec_of
from schedules import layouts


@dataclass(frozen=True)
class KernelModel:
    kernel: str
    variant: str
    sizes: dict
    core: str
    instructions: int  # executed in one call
    cycles: float  # modelled, one core
    microseconds: float  # cycles at the core's clock
    multiply_adds: float  # of one call (int8 MACs or fp32 FMAs)
    peak_share: float  # multiply_adds / (cycles x the core's MACs per cycle)
    bytes: float  # the least one call must move (arguments once, weights as packed)
    memory_microseconds: float  # bytes at the core's DRAM bandwidth
    hot_block_instructions: int  # instructions of the block that costs most cycles
    hot_block_share: float  # its share of the cycles

    @property
    def bound_microseconds(self) -> float:
        """max(core time, memory time): which of the two limits this call."""
        return max(self.microseconds, self.memory_microseconds)


def instruction_text(library: Path) -> dict[int, str]:
    """Every instruction of the library by address, as llvm-mca's assembler reads it."""
    out = subprocess.run([binutils("aarch64-linux-gnu-objdump", "llvm-objdump"), "-d", "--no-show-raw-insn", str(library)],
                         capture_output=True, text=True, check=True).stdout
    text = {}
    for line in out.splitlines():
        insn = re.match(r"^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$", line)
        if insn:
            text[int(insn.group(1), 16)] = mca.assembly(insn.group(2), insn.group(3))
    return text


def block_cycles(text: dict[int, str], blocks: list[Block], core) -> dict[Block, float]:
    """Cycles per execution of each block on the core (llvm-mca steady state); `text` is the
    library's instruction_text()."""
    regions = {}
    for index, block in enumerate(blocks):
        lines = [text[a] for a in range(block.start, block.end, 4) if a in text]
        regions[f"b{index}"] = lines
    cycles = mca.cycles_per_run(regions, core.mca_cpu)
    return {block: cycles[f"b{index}"] for index, block in enumerate(blocks)}


def blocks_cost(text: dict[int, str], blocks: list[Block], core) -> tuple[int, float, Block, float]:
    """(instructions, cycles, the costliest block, its share of the cycles) of running `blocks`
    (with their counts) on `core`; `text` is the library's instruction_text()."""
    cycles_of = block_cycles(text, blocks, core)
    cost = {block: block.executions * cycles_of[block] for block in blocks}
    cycles = sum(cost.values())
    hot = max(blocks, key=cost.get)
    return sum(b.instructions * b.executions for b in blocks), cycles, hot, cost[hot] / cycles if cycles else 0.0


def model_kernel(directory: Path, manifest: dict, kernel_name: str, sizes: dict[str, int], core) -> KernelModel:
    """The modelled cost of one call of a kernel at these runtime sizes on `core` (targets.Core)."""
    return model_kernel_on(directory, manifest, kernel_name, sizes, [core])[0]


def model_kernel_on(directory: Path, manifest: dict, kernel_name: str, sizes: dict[str, int], cores) -> list[KernelModel]:
    """model_kernel for several cores: the call is counted once (the counts do not depend on the core)."""
    entry = manifest["kernels"][kernel_name]
    spec = spec_of(entry)
    op = ops.get(spec.op)
    variant = next(v for v in entry["variants"] if bucket_matches(v["bucket"], sizes))
    layout = layouts.from_json(variant["layout"])
    library = (directory / manifest["library"]).resolve()
    blocks = count_blocks(directory, manifest, kernel_name, sizes)
    macs = op.flops(spec, sizes) / 2
    nbytes = op.bytes_moved(spec, sizes, layout)
    int8 = models.multiplies_int8(spec)
    results = []
    text = instruction_text(library)  # disassembled once for every core
    for core in cores:
        instructions, cycles, hot, hot_share = blocks_cost(text, blocks, core)
        per_cycle = core.int8_macs_per_cycle if int8 else core.fp32_macs_per_cycle
        results.append(KernelModel(
            kernel=kernel_name, variant=variant["symbol"], sizes=dict(sizes), core=core.name,
            instructions=instructions, cycles=cycles, microseconds=cycles / (core.ghz * 1e3), multiply_adds=macs,
            peak_share=macs / (cycles * per_cycle) if cycles else 0.0, bytes=nbytes,
            memory_microseconds=nbytes / (core.dram_gbs * 1e3), hot_block_instructions=hot.instructions,
            hot_block_share=hot_share))
    return results

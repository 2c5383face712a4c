"""CPU schedule for the int8-activation GEMMs (W8A8, W4A8 and their fused-QKV forms).

Micro-kernel: m_tile rows x n_block columns of int32 accumulators; per 4 k, each row's 4
activation bytes meet each 4-column x 4-k weight tile on the target's dot-product instruction
(SDOT on ARMv8.2+, SMULL + pairwise adds on ARMv8.0, LLVM's vectoriser on x86), so a weight tile
loaded once serves every row. int4 weights are unpacked to int8 just before use (one 16-byte tile
per instruction group), so no unpacked copy of the weight exists in memory.
"""

from __future__ import annotations

from schedules.cpu.blocks import has_block
from schedules.cpu.gemm_tiles import tile_gemm
from schedules.cpu.intrinsics import dot_intrinsic, has_dot_intrinsic


def schedule_gemm(sch, spec, target, layout) -> None:
    schedule_int_gemm(sch, target, layout, n=spec.dim("n"), out="y")


def schedule_int_gemm(sch, target, layout, *, n: int, out: str) -> None:
    nt, kt = layout["n_tile"], layout["k_tile"]

    unpack_int4 = has_block(sch, "w_unpack")

    def micro_kernel(sch, acc, k, rows, cols, group):
        ko, kl = sch.split(k, [None, kt])
        ct, cl = sch.split(cols, [None, nt])
        sch.reorder(ko, rows, ct, cl, kl)
        if unpack_int4:  # the group's int4 tile, unpacked once for every row tile
            unpack = sch.get_sblock("w_unpack")
            sch.compute_at(unpack, group)
            sch.vectorize(sch.fuse(*sch.get_loops(unpack)[-2:]))
        sch.unroll(rows)
        sch.unroll(ct)
        sch.decompose_reduction(acc, ko)
        if has_dot_intrinsic(layout["int8_dot"]):
            sch.tensorize(cl, dot_intrinsic(layout["int8_dot"]))
        else:
            sch.unroll(kl)

    tile_gemm(sch, n=n, out=out, m_tile=layout["m_tile"], n_multiple=nt, n_preferred=max(16, nt),
              n_limit=max(64, 4 * nt), micro_kernel=micro_kernel, groups_outside_rows=unpack_int4)

"""CPU schedule for the int8-activation GEMMs (W8A8, W4A8 and their fused-QKV forms).

Per output tile of `n_block` columns (parallel over tiles) and per token row: the int32 dot
products over a K group run on the target's dot-product instruction (SDOT on ARMv8.2+, SMULL +
pairwise adds on ARMv8.0, LLVM's vectoriser on x86), with 4 output channels x 4 k per instruction;
int4 weights are unpacked to int8 just before use, one 16-byte tile per instruction group, so no
unpacked copy of the weight ever exists in memory.
"""

from __future__ import annotations

from schedules.cpu.blocks import has_block
from schedules.cpu.intrinsics import dot_4x4_intrinsic, has_dot_4x4
from schedules.cpu.knobs import sample_divisor


def schedule_gemm(sch, spec, target) -> None:
    schedule_int_gemm(sch, target, n=spec.dim("n"), out="y")


def schedule_int_gemm(sch, target, n: int, out: str) -> None:
    y = sch.get_sblock(out)
    acc = sch.get_sblock("acc")
    i, j = sch.get_loops(y)
    n_block = sample_divisor(sch, n, multiple_of=4, preferred=16, limit=64)
    jo, ji = sch.split(j, [None, n_block])
    sch.reorder(jo, i, ji)
    sch.parallel(jo)
    sch.vectorize(ji)

    if has_block(sch, "ysum"):  # group-wise scales: int32 sums per group, scaled and summed in fp32
        ysum = sch.get_sblock("ysum")
        sch.compute_at(ysum, i)
        yj, yg = sch.get_loops(ysum)[-2:]
        sch.reorder(yg, yj)
        sch.vectorize(yj)
        sch.compute_at(acc, yg)
    else:
        sch.compute_at(acc, i)

    aj, ak = sch.get_loops(acc)[-2:]
    aj4, ajl = sch.split(aj, [None, 4])
    ako, akl = sch.split(ak, [None, 4])
    sch.reorder(ako, aj4, ajl, akl)
    if has_block(sch, "w_unpack"):
        unpack = sch.get_sblock("w_unpack")
        sch.compute_at(unpack, ako)
        sch.vectorize(sch.fuse(*sch.get_loops(unpack)[-2:]))
    sch.unroll(aj4)
    sch.decompose_reduction(acc, ako)
    if has_dot_4x4(target.int8_dot):
        sch.tensorize(ajl, dot_4x4_intrinsic(target.int8_dot))
    else:
        sch.unroll(akl)

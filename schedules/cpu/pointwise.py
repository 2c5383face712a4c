"""CPU schedules for the memory-bound kernels around the GEMMs: quantisation and the fused-QKV epilogue."""

from __future__ import annotations

from schedules.cpu.gemm_float import schedule_w4a16
from schedules.cpu.gemm_int import schedule_int_gemm
from schedules.gemm_facts import float_weights, gemm_n, int_weight_bits


def schedule_quantize(sch, spec, target, layout) -> None:
    """One row per task: max |x|, scale, then a SIMD quantise of the row."""
    scale = sch.get_sblock("scale")
    (i,) = sch.get_loops(scale)
    sch.compute_at(sch.get_sblock("amax"), i)
    q = sch.get_sblock("q")
    sch.reverse_compute_at(q, i)
    sch.parallel(i)
    row_loops = sch.get_loops(q)[1:]  # none when K == 1 (TVM drops unit loops)
    if row_loops:
        _, lanes = sch.split(row_loops[-1], [None, target.float_lanes])
        sch.vectorize(lanes)


def schedule_qkv(sch, spec, target, layout) -> None:
    n = gemm_n(spec)
    if float_weights(spec):
        schedule_w4a16(sch, target, layout, n=n, out="proj")
    else:
        schedule_int_gemm(sch, target, layout, n=n, out="proj", weight_bits=int_weight_bits(spec))
    # Epilogue: RoPE (or copy) of each head, token rows in parallel, SIMD over the head dim.
    for name in ("q_out", "k_out", "v_out") if spec.opt("v") else ("q_out", "k_out"):
        block = sch.get_sblock(name)
        h, i, c = sch.get_loops(block)
        sch.reorder(i, h, c)
        sch.parallel(i)
        sch.vectorize(c)

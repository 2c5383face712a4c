"""CPU schedule for the weight-only int4 GEMM (W4A16) and its fused-QKV form.

Per tile of `n_block` output columns (parallel over tiles) and per token row: for each K group, a
register tile of fp32 partial sums walks the group; at each k the tile's weight bytes are
contiguous, so the int4 unpack (one constant shift per half-tile), convert and FMA are SIMD over
output columns. The group's scale (and zero point) is applied once per group, also SIMD.
"""

from __future__ import annotations

from schedules.cpu.blocks import has_block
from schedules.cpu.knobs import sample_divisor


def w4a16_tile(n: int, target) -> int:
    """Output columns per weight tile: two SIMD registers' worth when n allows, else the largest even divisor."""
    lanes = target.float_lanes
    return next(t for t in (2 * lanes, lanes, lanes // 2, 4, 2) if t >= 2 and n % t == 0)


def schedule_gemm(sch, spec, target) -> None:
    n = spec.dim("n")
    schedule_w4a16(sch, target, n=n, out="y", n_tile=w4a16_tile(n, target))


def schedule_w4a16(sch, target, n: int, out: str, n_tile: int) -> None:
    store = sch.get_sblock(out)
    i, j = sch.get_loops(store)
    n_block = sample_divisor(sch, n, multiple_of=n_tile, preferred=2 * n_tile, limit=8 * n_tile)
    jo, ji = sch.split(j, [None, n_block])
    sch.reorder(jo, i, ji)
    sch.parallel(jo)
    sch.vectorize(ji)

    ysum = sch.get_sblock("ysum")
    sch.compute_at(ysum, i)
    yj, yg = sch.get_loops(ysum)[-2:]
    sch.reorder(yg, yj)
    sch.vectorize(yj)
    acc = sch.get_sblock("acc")
    sch.compute_at(acc, yg)
    if has_block(sch, "xsum"):  # zero points: sum of x over the group
        sch.compute_at(sch.get_sblock("xsum"), yg)
    aj, ak = sch.get_loops(acc)[-2:]
    tiles, half, lanes = sch.split(aj, [None, 2, n_tile // 2])
    sch.reorder(ak, tiles, half, lanes)
    sch.unroll(tiles)
    sch.unroll(half)
    sch.vectorize(lanes)
    sch.decompose_reduction(acc, ak)
    sch.decompose_reduction(ysum, yg)

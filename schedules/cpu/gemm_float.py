"""CPU schedule for the weight-only int4 GEMM (W4A16) and its fused-QKV form.

Per tile of `n_block` output columns (parallel over tiles) and per token row, a register tile of
accumulators walks K; at each k the weight bytes of the tile are contiguous, so the int4 unpack
(one constant shift per half-tile), dequantisation and FMA are SIMD over output columns.
"""

from __future__ import annotations

from schedules.cpu.knobs import sample_divisor


def w4a16_tile(n: int, target) -> int:
    """Output columns per weight tile: two SIMD registers' worth when n allows, else the largest even divisor."""
    lanes = target.float_lanes
    return next(t for t in (2 * lanes, lanes, lanes // 2, 4, 2) if t >= 2 and n % t == 0)


def schedule_gemm(sch, spec, target) -> None:
    n = spec.dim("n")
    schedule_w4a16(sch, target, n=n, out="y", n_tile=w4a16_tile(n, target))


def schedule_w4a16(sch, target, n: int, out: str, n_tile: int) -> None:
    try:  # with a bias the reduction is its own block "acc", feeding the output block
        reduce_block = sch.get_sblock("acc")
        store_block = sch.get_sblock(out)
    except Exception:  # noqa: BLE001 - no bias: accumulate in a local tile, then store
        reduce_block = sch.get_sblock(out)
        store_block = sch.cache_write(reduce_block, 0, "local")  # the copy local -> out
    i, j = sch.get_loops(store_block)
    n_block = sample_divisor(sch, n, multiple_of=n_tile, preferred=2 * n_tile, limit=8 * n_tile)
    jo, ji = sch.split(j, [None, n_block])
    sch.reorder(jo, i, ji)
    sch.parallel(jo)
    sch.vectorize(ji)
    sch.compute_at(reduce_block, i)
    rj, rk = sch.get_loops(reduce_block)[-2:]
    tiles, half, lanes = sch.split(rj, [None, 2, n_tile // 2])
    sch.reorder(rk, tiles, half, lanes)
    sch.unroll(tiles)
    sch.unroll(half)
    sch.vectorize(lanes)
    sch.decompose_reduction(reduce_block, rk)

"""CPU schedule for the weight-only int4 GEMM (W4A16) and its fused-QKV form.

Micro-kernel: m_tile rows x n_block columns of fp32 partial sums per K group; at each k the tile's
weight bytes are contiguous, so the int4 unpack (one constant shift per half-tile), convert and FMA
are SIMD over output columns, and an unpacked weight vector serves every row of the tile. The
group's scale (and zero point) is applied once per group.
"""

from __future__ import annotations

from schedules.cpu.gemm_tiles import tile_gemm


def w4a16_tile(n: int, target) -> int:
    """Output columns per weight tile: two SIMD registers' worth when n allows, else the largest even divisor."""
    lanes = target.float_lanes
    return next(t for t in (2 * lanes, lanes, lanes // 2, 4, 2) if t >= 2 and n % t == 0)


def schedule_gemm(sch, spec, target, layout) -> None:
    schedule_w4a16(sch, target, layout, n=spec.dim("n"), out="y")


def schedule_w4a16(sch, target, layout, *, n: int, out: str) -> None:
    n_tile = layout["n_tile"]

    def micro_kernel(sch, acc, k, rows, cols):
        tiles, half, lanes = sch.split(cols, [None, 2, n_tile // 2])
        sch.reorder(k, rows, tiles, half, lanes)
        sch.unroll(rows)
        sch.unroll(tiles)
        sch.unroll(half)
        sch.vectorize(lanes)
        sch.decompose_reduction(acc, k)

    tile_gemm(sch, n=n, out=out, m_tile=layout["m_tile"], n_multiple=n_tile, n_preferred=2 * n_tile,
              n_limit=8 * n_tile, micro_kernel=micro_kernel)

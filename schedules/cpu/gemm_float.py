"""CPU schedule for the weight-only GEMMs with float activations (W4A16, its fused-QKV form, W8A16).

Micro-kernel: m_tile rows x n_block columns of fp32 partial sums per K group; at each k (a pair of
k for int4) the tile's weight bytes are contiguous, so the unpack, converts and FMAs are SIMD over
output columns, and an unpacked weight vector serves every row of the tile. The group's scale (and
zero point) is applied once per group.
"""

from __future__ import annotations

from schedules.cpu.blocks import has_block
from schedules.cpu.intrinsics_half import COLUMNS, half_intrinsic
from schedules.cpu.gemm_tiles import tile_gemm


def w4a16_tile(n: int, target, float16: bool = False) -> int:
    """Output columns per weight tile: two SIMD registers' worth (of float16 lanes where the products
    are float16) when n allows, else the largest even divisor."""
    lanes = simd_lanes(target, float16)
    return next(t for t in (2 * lanes, lanes, lanes // 2, 4, 2) if t >= 2 and n % t == 0)


def simd_lanes(target, float16: bool) -> int:
    return target.float_lanes * 2 if float16 else target.float_lanes


def schedule_gemm(sch, spec, target, layout) -> None:
    schedule_w4a16(sch, target, layout, n=spec.dim("n"), out="y")


def schedule_w4a16(sch, target, layout, *, n: int, out: str) -> None:
    n_tile = layout.n_tile
    lanes = min(n_tile, simd_lanes(target, layout.float_math == "float16"))

    half_tiles = layout.float_math == "float16" and n_tile == COLUMNS and has_block(sch, "x_f16")

    def micro_kernel(sch, acc, k, rows, cols, inner):
        if half_tiles:  # int4 on float16 lanes: a tile of 16 columns x 2 k (`inner`: the nibble) per call
            *together, nibble = inner  # (chunks walked together, a one-row tile's)
            # the accumulator chunk-major, so a tile's region is its trailing (rows, columns) dims
            sch.transform_layout(acc, ("write", 0), lambda i, c, j: (c, i, j))
            tiles, tile = sch.split(cols, [None, COLUMNS])
            sch.reorder(k, *together, tiles, nibble, rows, tile)
            for loop in (*together, tiles):
                sch.unroll(loop)
            sch.decompose_reduction(acc, k)
            sch.tensorize(nibble, half_intrinsic(layout.m_tile))
            return
        # int4: `inner` is which factor of a weight byte (the low nibble, the byte)
        tiles, vector = sch.split(cols, [None, lanes])
        sch.reorder(k, *inner, rows, tiles, vector)
        for term in inner:
            sch.unroll(term)
        sch.unroll(rows)
        sch.unroll(tiles)
        sch.vectorize(vector)
        sch.decompose_reduction(acc, k)

    # Per-token passes before the tiles (a fused RMSNorm / SwiGLU, int4's activation rearrangement and
    # group sums): parallel over tokens, except for one token (a fork/join costs more than the pass).
    if has_block(sch, "rms_inv"):
        sch.compute_inline(sch.get_sblock("rms_inv"))
    for name in ("rms_ss", "xact", "xpair", "xgroup", "x_amax", "x_inv", "x_f16"):
        if has_block(sch, name) and layout.m_tile > 1:
            sch.parallel(sch.get_loops(sch.get_sblock(name))[0])
    if has_block(sch, "x_f16"):  # the float16 form's activations, divided by their row's max|x|
        sch.vectorize(sch.split(sch.get_loops(sch.get_sblock("x_f16"))[-1], [None, lanes])[1])

    # Half the register file holds the accumulators of m_tile rows; the rest unpacked weights. A
    # one-token GEMV streams its weights from DRAM: one weight tile per task keeps each core on one
    # contiguous stream, which the hardware prefetcher follows (measured on a cold 3072 x 576 Q4_1
    # GEMV: 65 us per call against 96 us with two or four tiles per task; hot, all ~57 us). The
    # tuner measures with hot caches and cannot see this, so it is fixed, not a knob, there.
    per_row = max(1, target.vector_registers // 2 // layout.m_tile)
    tile_gemm(sch, n=n, out=out, m_tile=layout.m_tile, n_multiple=n_tile, n_preferred=max(n_tile, per_row * lanes),
              n_limit=8 * n_tile, micro_kernel=micro_kernel, n_fixed=n_tile if layout.m_tile == 1 else None,
              lanes=target.float_lanes if n_tile % target.float_lanes == 0 else 1, simd_scaling=True,
              groups_at_once=_chunks_at_once(sch, layout) if half_tiles else 1)


def _chunks_at_once(sch, layout) -> int:
    """Float16 chunks a one-row tile walks together. Alone, its two accumulators each wait out two
    dependent FMLAs (4 cycles each on the A76 model) per call: the loop is latency-bound at 8 cycles
    for 12 NEON ops, which two pipes issue in 6. Two chunks side by side give four chains."""
    chunks = int(sch.get(sch.get_loops(sch.get_sblock("acc"))[1]).extent)
    return 2 if layout.m_tile == 1 and chunks % 2 == 0 else 1

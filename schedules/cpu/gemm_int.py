"""CPU schedule for the int8-activation GEMMs (W8A8, W4A8 and their fused-QKV forms, also with
activations quantised in the kernel: the q8 model path).

Micro-kernel: m_tile rows x n_block columns of int32 accumulators; per k tile, each row's
activation bytes meet each weight tile on the target's dot-product instruction (SDOT on ARMv8.2+,
SMULL + pairwise adds on ARMv8.0, VPMADDWD / VPMADDUBSW / VPDPBUSD on x86, VRMPY on Hexagon:
schedules/cpu/intrinsics.py), so a weight tile loaded once serves every row. int4 weights are
unpacked in registers inside the intrinsic (nibble halves where the layout says so: an AND or a
shift per half), except in an ARM GEMM of several rows (Layout.weights_unpacked): there each
column block's weights are unpacked once into a scratch of bytes that every row tile reads, in the
tiles of the layout's unpacked form: SDOT's (4 channels x 4 k), or with i8mm SMMLA's (each
channel's 8 k contiguous; the activations copied in tiles of 2 rows x 8 k and the int32
accumulators laid out in 2 x 2 tiles, so one SMMLA reads and writes whole registers).
"""

from __future__ import annotations

from schedules.cpu.blocks import has_block
from schedules.cpu.gemm_tiles import tile_gemm
from schedules.cpu.intrinsics import dot_intrinsic, dot_tile, has_dot_intrinsic
from schedules.cpu.unpacked import unpack_intrinsic, unpacked_intrinsic
from schedules.gemm_facts import int_weight_bits

# Per-token stages before the tiles when the kernel quantises its float input (the q8 path):
# the fused RMSNorm / SwiGLU, then the blocks' amax, scale, rounding and sums (ops/q8_act.py).
ACTIVATION_STAGES = ("rms_ss", "xact", "q8_amax", "q8_inv", "q8_d", "xq", "q8_isum", "q8_s", "acc_start")


def schedule_gemm(sch, spec, target, layout) -> None:
    schedule_int_gemm(sch, target, layout, n=spec.dim("n"), out="y", weight_bits=int_weight_bits(spec))


def schedule_activation_stages(sch, target, layout) -> None:
    """Parallel over tokens (not for one token: a fork/join costs more than the pass), the
    rounding SIMD over each row."""
    if has_block(sch, "rms_inv"):
        sch.compute_inline(sch.get_sblock("rms_inv"))
    for name in ACTIVATION_STAGES:
        if has_block(sch, name) and layout.m_tile > 1:
            sch.parallel(sch.get_loops(sch.get_sblock(name))[0])
    if has_block(sch, "xq"):
        row = sch.get_loops(sch.get_sblock("xq"))[-1]
        _, lanes = sch.split(row, [None, target.float_lanes])
        sch.vectorize(lanes)
    if has_block(sch, "xact") and target.activation_vectors > 1:
        _interleave_vectors(sch, sch.get_sblock("xact"), target.float_lanes, target.activation_vectors)


def _interleave_vectors(sch, block, lanes: int, most: int) -> None:
    """The fused activation's row loop (SiLU's exp: a chain of ~20 dependent SIMD ops and a
    division per vector) as steps of up to `most` independent SIMD vectors, unrolled, so an in-order
    core issues one's ops while another's wait (the most that divides the row; a row that is no
    whole vector is left to LLVM's vectoriser, as on targets without the fact)."""
    row = sch.get_loops(block)[-1]
    extent = int(sch.get(row).extent)
    vectors = next((v for v in range(most, 0, -1) if extent % (v * lanes) == 0), 0)
    if not vectors:
        return
    _, unrolled, vector = sch.split(row, [None, vectors, lanes])
    sch.unroll(unrolled)
    sch.vectorize(vector)


def schedule_int_gemm(sch, target, layout, *, n: int, out: str, weight_bits: int) -> None:
    nt, kt = layout.n_tile, layout.k_tile
    channels = dot_tile(layout.int8_dot)[0]  # the instruction's (a weight tile may hold several side by side)
    intrinsic, tile_rows, unpack = None, 1, None
    # the tiles read the scratch of bytes, several k steps (or rows: SMMLA) per call
    if layout.weights_unpacked and weight_bits != 8:
        kind = layout.unpacked_form or layout.int8_dot
        intrinsic, form = unpacked_intrinsic(kind)
        channels, kt, tile_rows = form.channels, form.k, form.rows
        unpack = unpack_intrinsic(kind, weight_bits)
    elif has_dot_intrinsic(layout.int8_dot, weight_bits):
        intrinsic = dot_intrinsic(layout.int8_dot, weight_bits, halves=layout.int4_halves)
    schedule_activation_stages(sch, target, layout)
    if tile_rows > 1:
        # the activations' copy in row tiles: rows in parallel, a SIMD copy of each row's k run
        tiles = sch.get_sblock("x_tiles")
        tile, _, row, values = sch.get_loops(tiles)
        sch.parallel(tile)
        sch.unroll(row)
        sch.vectorize(values)

    def micro_kernel(sch, acc, k, rows, cols, inner):
        ko, kl = sch.split(k, [None, kt])
        ct, cl = sch.split(cols, [None, channels])
        if tile_rows > 1:
            # Intrinsics on tiles of several rows (SMMLA: 2 x 2) write their accumulators as one
            # vector: the accumulator laid out in such tiles (after the loops are placed: its
            # region is then a whole row tile), so each stays one register; the group scaling
            # reads its rows back from two tiles.
            sch.transform_layout(acc, ("write", 0), lambda i, g, j: (
                i // tile_rows, g, j // channels, i % tile_rows, j % channels))
            ro, ri = sch.split(rows, [None, tile_rows])
            sch.reorder(ko, ro, ct, ri, cl, kl)
            sch.unroll(ro)
            sch.unroll(ct)
            sch.decompose_reduction(acc, ko)
            sch.tensorize(ri, intrinsic)
            return
        sch.reorder(ko, rows, ct, cl, kl)
        sch.unroll(rows)
        sch.unroll(ct)
        sch.decompose_reduction(acc, ko)
        if intrinsic:
            sch.tensorize(cl, intrinsic)
        else:
            sch.unroll(kl)

    # Half the register file holds the accumulators of m_tile rows (int32 lanes per register).
    per_row = max(1, target.vector_registers // 2 // layout.m_tile)
    preferred = max(nt, per_row * target.vector_bits // 32)
    # A q8-path GEMV streams its weights from DRAM (every layer's are new): one weight tile per
    # task keeps each core on one contiguous stream, as for W4A16 (schedules/cpu/gemm_float.py).
    stream = layout.m_tile == 1 and has_block(sch, "q8_d")
    # On the q8 path up to a quarter of the register file holds a tile's int32 sums, another its
    # float32 ones (schedules/cpu/gemm_tiles.py), in columns that divide the weight tile: NEON 4 rows
    # x 8 columns, AVX2 4 x 8, AVX-512 4 x 16.
    acc_cols = min(nt, max(channels, target.vector_registers // 4 * (target.vector_bits // 32) // layout.m_tile))
    while nt % acc_cols:
        acc_cols -= channels
    tile_gemm(sch, n=n, out=out, m_tile=layout.m_tile, n_multiple=nt, n_preferred=preferred,
              n_limit=max(64, 4 * nt), micro_kernel=micro_kernel, n_fixed=nt if stream else None,
              lanes=target.float_lanes, acc_cols=acc_cols, unpack=unpack)

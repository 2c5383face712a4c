"""The loop nest every CPU GEMM shares: tiles of `n_block` output columns (parallel) x `m_tile`
token rows, walked group by group over K; the caller's micro-kernel fills the inner (rows x
columns x k) tile; scaling (`ysum`, per group) and the epilogue (`out`) follow per tile."""

from __future__ import annotations

from schedules.cpu.blocks import has_block
from schedules import KNOB_PREFIX
from schedules.decisions import sample_choice, sample_divisor

UNROLL_STEPS = [0, 16, 64]
WIDENED_SCALES = ("w_scale_f32", "w_min_f32")  # ops/qgemm_int.py's float32 copies of float16 block scales


def tile_gemm(sch, *, n: int, out: str, m_tile: int, n_multiple: int, n_preferred: int, n_limit: int,
              micro_kernel, n_fixed: int | None = None, lanes: int = 1, acc_cols: int | None = None,
              unpack: tuple[str, int] | None = None, simd_scaling: bool = False, groups_at_once: int = 1) -> None:
    """n_fixed: a column block that is not tuned. micro_kernel(sch, acc, k_loop, row_loop, col_loop, inner_loops) splits, orders and
    vectorises/tensorises the block `acc` below its group loop; it receives the loops of one K
    group (inner_loops: further reduction loops of acc after k, e.g. the nibble of a byte).
    lanes: float32 SIMD lanes, for the group scaling. acc_cols: on the q8 path, the columns of one
    accumulator tile, walked through every group before the next (a divisor of n_multiple).
    unpack: (intrinsic, channels) making the unpacked weight scratch, where a SIMD loop cannot.
    simd_scaling: the per-group scaling of a tile's rows on `lanes` SIMD lanes (W4A16), outside the q8 path.
    groups_at_once: groups walked together, k step by k step (outside the q8 path; a divisor of
    the group count): each one's accumulators are a chain of their own, which a one-row tile needs
    to keep the SIMD pipes busy (the micro-kernel receives the loop over them first in inner_loops)."""
    acc = sch.get_sblock("acc")
    if n_fixed is None:
        n_block = sample_divisor(sch, "n_block", acc, n, multiple_of=n_multiple, preferred=n_preferred, limit=n_limit)
    else:  # not a knob (the tuner could not judge it), but still recorded
        n_block = n_fixed
        sch.annotate(acc, KNOB_PREFIX + "n_block", n_block)
    # Activations quantised in the kernel (q8_act.py): the group scaling reads per-call stages
    # (block scales), which TVM will not let it be moved below, so the tiles are laid out on it.
    on_scaling = has_block(sch, "q8_d")
    if on_scaling:
        i, j, g = sch.get_loops(sch.get_sblock("ysum"))
    else:
        i, g, j, k, *inner = sch.get_loops(acc)
    together = []
    if groups_at_once > 1:
        g, together_loop = sch.split(g, [None, groups_at_once])
        together = [together_loop]
    io, ii = sch.split(i, [None, m_tile])
    jo, jb = sch.split(j, [None, n_block])
    # On the q8 path each group's int32 sums are scaled into float32 ones: both live in registers
    # through the group loop, so an accumulator tile (m_tile x acc_cols) is walked through every
    # group on its own. The 3072 x 576 Q4_0 prefill GEMM (M=128), MODELLED: m_tile 4 with 16 columns
    # through the groups spilled both (7.5 ms on the A76, 34.5 ms on the A55); 8 columns at a time
    # (and the scaling vectorised, below) 6.0 / 24.2 ms.
    # acc_cols divides n_multiple, so the split fits every column block the tuner may sample.
    outer = []
    if on_scaling and acc_cols:
        jbo, jb = sch.split(jb, [None, acc_cols])
        outer = [jbo]
    if on_scaling:
        sch.reorder(jo, io, *outer, g, ii, jb)
    else:
        sch.reorder(jo, io, g, k, *together, *inner, ii, jb)
    sch.parallel(jo)
    # Float16 block scales are widened once per column block, for all its rows; in a one-row GEMV on
    # the q8 path (a single row tile) per group instead, where they are used, with no pass over a
    # scratch buffer. Per group, MEASURED hot on AVX2 / AVX-512 here: a 576 x 1536 Q4_K GEMV 1.11x /
    # 1.11x, a 3072 x 576 Q4_1 one 1.08x / 1.36x, Q6_K 1.03x / 1.04x, Q5_0 1.03x / 1.09x faster;
    # MODELLED on the A76 / A55: Q4_K 1.10x / 1.24x, Q4_1 1.24x / 1.13x, Q5_0 1.05x / 1.04x faster,
    # Q6_K (twice as many groups) 1.08x / 1.07x slower. Not a knob: a compute location sampled by
    # MetaSchedule would not be a value the manifest's knob annotations could record.
    for name in WIDENED_SCALES:
        if has_block(sch, name):
            widened = sch.get_sblock(name)
            sch.compute_at(widened, g if m_tile == 1 and on_scaling else jo)
            sch.vectorize(sch.get_loops(widened)[-1])
    # Knob "unroll": TVM's auto-unroll limit below the column blocks (0 leaves loops to LLVM).
    sch.annotate(jo, "pragma_auto_unroll_max_step", sample_choice(sch, "unroll", acc, UNROLL_STEPS, default=0))
    sch.annotate(jo, "pragma_unroll_explicit", 1)
    if on_scaling:
        sch.compute_at(acc, g, preserve_unit_loops=True)
        ii, _, jb, k, *inner = sch.get_loops(acc)[3 + len(outer):]  # the group's rows, (unit) group, columns, k
        sch.reorder(k, *inner, ii, jb)
    elif has_block(sch, "ysum"):  # group scales: fp32 sum over groups, one SIMD pass per group
        sch.reverse_compute_at(sch.get_sblock("ysum"), g)
        if together:  # the groups outermost, so each is one SIMD pass over the tile's (rows and) columns
            loops = sch.get_loops(sch.get_sblock("ysum"))
            below = loops[[sch.get(loop).same_as(sch.get(g)) for loop in loops].index(True) + 1:]
            sch.reorder(below[-1], *below[:-1])
    _unpack_once(sch, jo, unpack)
    store = sch.get_sblock(out)
    if has_block(sch, "corr") or has_block(sch, "x_amax"):
        # A term outside the tiles (W4A16's block minimum: group sums of x times w_min; the float16
        # form's row scale) feeds the output, so the output is its own pass after them, over rows x
        # column vectors, each vector's term computed in place.
        rows_out, cols_out = sch.get_loops(store)
        vectors, vector = sch.split(cols_out, [None, n_multiple])
        tiles = sch.fuse(rows_out, vectors)
        sch.parallel(tiles)
        sch.vectorize(vector)
        if has_block(sch, "corr"):
            corr = sch.get_sblock("corr")
            sch.compute_at(corr, tiles)
            own = sch.get_loops(corr)[1:]  # columns, groups (a one-group loop is dropped by compute_at)
            if len(own) == 2:
                sch.reorder(own[1], own[0])  # FMAs over a column vector per group (LLVM vectorises the columns)
    else:
        sch.reverse_compute_at(store, io)
        sch.vectorize(sch.get_loops(store)[-1])
    if has_block(sch, "ysum"):
        ysum = sch.get_sblock("ysum")
        if (on_scaling and m_tile > 1 and acc_cols and acc_cols % lanes == 0) or (simd_scaling and lanes > 1):
            # SIMD over columns, rows and vectors unrolled (TVM vectorises a reduction update only
            # before its init is split off). LLVM's own vectoriser had built the scale vectors
            # lane by lane, with shuffles (the q8 path), or scaled W4A16's float16 sums of several
            # rows two lanes at a time, gathered (46% of a 4-row tile's instructions).
            rows_loop, cols_loop = sch.get_loops(ysum)[-2:]
            vectors, simd = sch.split(cols_loop, [None, lanes])
            sch.vectorize(simd)
            sch.unroll(rows_loop)
            sch.unroll(vectors)
        sch.decompose_reduction(ysum, g)
    micro_kernel(sch, acc, k, ii, jb, together + inner)


def _unpack_once(sch, column_block, unpack: tuple[str, int] | None) -> None:
    """Layout.weights_unpacked: the scratch made once per column block, SIMD over a k step's bytes
    (or by the unpack intrinsic)."""
    if not has_block(sch, "w_unpacked"):
        return
    unpacked = sch.get_sblock("w_unpacked")
    # unit loops kept: a column block of one weight tile would drop one, and a trace must replay
    # with the same loops whatever n_block the tuner samples
    sch.compute_at(unpacked, column_block, preserve_unit_loops=True)
    channels, values = sch.get_loops(unpacked)[-2:]
    if unpack:
        _, channel_tile = sch.split(channels, [None, unpack[1]])
        sch.tensorize(channel_tile, unpack[0])
    else:
        sch.vectorize(sch.fuse(channels, values))

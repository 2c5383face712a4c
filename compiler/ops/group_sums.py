"""An int GEMM's int32 group sums (ops/qgemm_int.py): where each group's sum starts, and how it
becomes a float32 and meets its scales.

Biased sums (Layout.biased_sums): a sum that starts at the bits of SUM_BIAS = 2^23 + 2^22, read as a
float, is exactly SUM_BIAS plus the sum while |sum| < 2^22 (a float in [2^23, 2^24) steps by 1), so
its float value is one subtraction instead of a conversion (SCVTF on 4 lanes: two uops on one of the
A76's and A710's two NEON pipes)."""

from __future__ import annotations

SUM_BIAS = 12582912.0
SUM_BIAS_BITS = 0x4B400000


def biased_sums_exact(group: int, bits: int) -> bool:
    """Whether every group sum of q8 activations (|x| <= 127) and `bits`-bit weights (offset-binary
    ones up to 2^bits - 1) stays inside the bias's exact range."""
    return group * 127 * (2 ** bits - 1) < 2 ** 22


def starts(ph, rows: int, ngroups: int, columns: int, offset_sum, biased: bool):
    """The stage each group's accumulators start from ([rows, ngroups, columns] int32; None where they
    start at 0): `offset_sum(i, g)` (offset-binary weights: -half sum(x)) plus the bias. Repeated over
    `columns` so that each accumulator register may be set by a vector load of its own."""
    from tvm import te

    if offset_sum is None and not biased:
        return None
    ph.reduction_starts.append(("acc", "acc_start"))  # TE lowers the init as 0 (ops/reduction_start.py)
    return te.compute((rows, ngroups, columns), lambda i, g, c: (offset_sum(i, g) if offset_sum else 0)
                      + (SUM_BIAS_BITS if biased else 0), name="acc_start")


def as_float(int_sum, biased: bool):
    """A group's int32 sum as float32: biased, its bits less the bias."""
    from tvm import tirx

    if biased:
        return tirx.reinterpret("float32", int_sum) - tirx.const(SUM_BIAS, "float32")
    return int_sum.astype("float32")


def scaled(group_sum, row_scale, channel_scale, lean: bool):
    """A group's float sum times its row's (activation block's) and channel's scales. Lean (NEON,
    Layout.lean_group_scaling): the row's first, so each register of sums is scaled in place, with no
    product of the two scales held per register; else the scales' product first."""
    if lean:
        return group_sum * row_scale * channel_scale
    return group_sum * (channel_scale * row_scale)

"""Float activations quantised inside an int GEMM to ggml's Q8_0 / Q8_1 blocks, as llama.cpp's CPU
backend does before its integer dot products, so the int32 sums equal llama.cpp's.

Per block of 32 values of a row: amax = max |x|, d = fp16(amax / 127) (the scale as stored, in
fp32 arithmetic after), q = round_half_even(x * id) with id = 127 / amax on x86 (AVX2) and 1 /
(amax / 127) on ARM (NEON) (compiler/llm/q8_blocks.py has both, from ggml's source); Q8_1 adds s
= fp16((amax / 127) * sum(q)). A block with a NaN gets d NaN (and an Inf one d Inf) and q 0, so
the poison reaches the output through the scale. One deliberate difference: a block whose amax is
not 0 but below ~3.7e-37 (id overflows to Inf) gets q 0 here, where ggml's x86 conversion of Inf
makes -128 (q8_blocks.py reproduces ggml; no model's activations come near).

The quantised row is a stage of the GEMM's function, computed once per call from the float input
(after the fused RMSNorm or SwiGLU): no pass over activations in memory besides the fusion's.
"""

from __future__ import annotations

import numpy as np

from compiler.ops.base import Option

BLOCK = 32
ACT_FORMS = ("int8", "q8_0", "q8_1")  # int8: quantised by the caller (x int8 + a per-token x_scale)
RECIPROCALS = ("127/amax", "1/d")  # how ggml inverts the scale: x86 (AVX2) / ARM (NEON)
OPTIONS = {
    "act": Option("int8", ACT_FORMS, tag=lambda a: "" if a == "int8" else a),
    "q8_recip": Option("127/amax", RECIPROCALS, tag=lambda r: "" if r == "127/amax" else "recipd"),
}


def in_kernel(spec) -> bool:
    """Whether the spec's activations arrive as float and are quantised to blocks inside the kernel."""
    return spec.opt("act") != "int8"


def validate(name: str, spec, group: int, bits: int) -> None:
    if not in_kernel(spec):
        return
    if group != BLOCK:
        raise ValueError(f"{name}: act={spec.opt('act')} quantises activations in blocks of {BLOCK}, so the "
                         f"weight group must be {BLOCK} (got {group})")
    if spec.opt("act") == "q8_1" and not (bits == 4 and spec.opt("min", False)):
        raise ValueError(f"{name}: act=q8_1 (block sums) goes with int4 weights that have a block minimum (min=True)")


def validate_minimum(name: str, spec) -> None:
    """A block minimum needs the activations' block sums: act=q8_1."""
    if spec.opt("min", False) and spec.opt("act") != "q8_1":
        raise ValueError(f"{name}: a block minimum (min=True) needs the block sums of act=q8_1")


def fp16_round(value):
    """A non-negative float32 rounded to the nearest fp16 value (ties to even), in float32: what
    ggml stores as a block scale. Bit arithmetic, so every backend computes it alike."""
    from tvm import tirx

    bits = tirx.reinterpret("int32", value)
    normal = tirx.reinterpret("float32", (bits + 0xFFF + ((bits >> 13) & 1)) & tirx.const(~0x1FFF, "int32"))
    tiny = tirx.const(2.0 ** -14, "float32")
    subnormal = tirx.nearbyint(value * tirx.const(2.0 ** 24, "float32")) * tirx.const(2.0 ** -24, "float32")
    rounded = tirx.Select(value < tiny, subnormal, normal)
    # 65520 is the tie between 65504 and the next step, 65536, which is past fp16's range: Inf
    rounded = tirx.Select(value >= tirx.const(65520.0, "float32"), tirx.const(float("inf"), "float32"), rounded)
    return tirx.Select(value != value, value, rounded)  # NaN stays NaN


class Quantised:
    """te stages of a row quantised to blocks: q int8 [M, K], d float32 [M, K/32] (fp16 values),
    and for Q8_1 isum int32 [M, K/32] (sum of q) and s float32 [M, K/32] (fp16 values).
    sum_span: the values per isum entry where a weight's groups are finer than a block (Q6_K's 16:
    its offset is paid back per sub-block); Q8_1's s stays per block."""

    def __init__(self, x, k: int, form: str, recip: str, block_sums: bool = False, sum_span: int = BLOCK):
        from tvm import te, tirx

        from compiler.ops.quantize import magnitude_bits

        m = x.shape[0]
        blocks = k // BLOCK
        r = te.reduce_axis((0, BLOCK), name="qb")
        amax_bits = te.compute((m, blocks), lambda i, b: te.max(magnitude_bits(x[i, b * BLOCK + r]), axis=r),
                               name="q8_amax")

        def amax(i, b):
            return tirx.reinterpret("float32", amax_bits[i, b])
        c127 = tirx.const(127.0, "float32")
        zero = tirx.const(0.0, "float32")

        def inverse(i, b):
            a = amax(i, b)
            inv = c127 / a if recip == "127/amax" else tirx.const(1.0, "float32") / (a / c127)
            return tirx.Select(a != zero, inv, zero)

        inv = te.compute((m, blocks), inverse, name="q8_inv")
        self.d = te.compute((m, blocks), lambda i, b: fp16_round(amax(i, b) / c127), name="q8_d")

        def quant(i, kk):
            v = tirx.nearbyint(x[i, kk] * inv[i, kk // BLOCK])
            finite = tirx.all(v >= tirx.const(-127.0, "float32"), v <= c127)  # false for NaN (and Inf)
            return tirx.Select(finite, v, zero).astype("int8")

        self.q = te.compute((m, k), quant, name="xq")
        self.isum = self.s = None
        if form == "q8_1" and sum_span != BLOCK:
            raise ValueError(f"q8_1's block sums are per {BLOCK} values, not {sum_span}")
        if form == "q8_1" or block_sums:
            rs = te.reduce_axis((0, sum_span), name="qs")
            self.isum = te.compute((m, k // sum_span), lambda i, b: te.sum(
                self.q[i, b * sum_span + rs].astype("int32"), axis=rs), name="q8_isum")
        if form == "q8_1":
            self.s = te.compute((m, blocks), lambda i, b: fp16_round_signed(
                amax(i, b) / c127 * self.isum[i, b].astype("float32")), name="q8_s")


def fp16_round_signed(value):
    """fp16_round for either sign (a block sum may be negative)."""
    from tvm import tirx

    magnitude = fp16_round(tirx.abs(value))
    return tirx.Select(value < tirx.const(0.0, "float32"), -magnitude, magnitude)


def reference(x: np.ndarray, form: str, recip: str):
    """numpy (q, d, isum or None, s or None) of the same quantisation, for the ops' references."""
    from compiler.llm.q8_blocks import quantize_q8_0, quantize_q8_1

    flavour = "x86" if recip == "127/amax" else "arm"
    if form == "q8_1":
        q, d, s = quantize_q8_1(x.astype(np.float32), flavour)
        isum = q.reshape(q.shape[0], -1, BLOCK).astype(np.int64).sum(-1)
        return q, d, isum, s
    q, d = quantize_q8_0(x.astype(np.float32), flavour)
    return q, d, None, None

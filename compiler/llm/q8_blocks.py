"""llama.cpp's int8 activations: Q8_0 / Q8_1 blocks, with ggml's float32 arithmetic reproduced bit for bit.

Before its integer dot products, ggml's CPU backend rounds every activation row to 8 bits: blocks of 32
values, a scale d = amax / 127 stored as fp16, q = round(x * id). Q8_0 feeds Q4_0 / Q8_0 weights, Q8_1
(which also stores s = d * sum(q) as fp16, for the weight minimum of Q4_1) feeds Q4_1. The logits
llama.cpp produces are those of the rounded activations, not of the model: to make ours agree with it
exactly we must form the very same integer sums, so we must round exactly as it does. The arithmetic
is not the same on every CPU path (ggml 0.3.36 as vendored by llama-cpp-python; the flavours below):

  reference  d = fp32(amax / 127); id = d != 0 ? 1 / d : 0;     q = roundf(x * id)  (ties away from 0)
  x86        d = fp32(amax / 127); id = amax != 0 ? 127 / amax : 0; q = rint(x * id) (ties to even)
  arm        d = fp32(amax / 127); id = d != 0 ? 1 / d : 0;     q = rint(x * id)  (ties to even)

all in float32 (one rounding per operation, no FMA), amax = max |x| over the block; d is stored as
fp16(d), round to nearest even (x86: ggml's bit-trick GGML_COMPUTE_FP32_TO_FP16, as GGML_CPU_FP32_TO_FP16
falls back to it even with F16C; ARM: an `__fp16` cast, FCVT), while q uses the float32 id, not the
rounded d; Q8_1's s = fp16(float32(sum of the 32 integer q) * d) with the float32 d, on every path.

The repacked matmul paths (4 rows interleaved, `ggml_quantize_mat_q8_0_4x4/4x8`, Q4_0 and Q8_0 weights
only; Q4_1 has no repacked path; rows left over from a multiple of 4, so every decode step, go through
`quantize_row_q8_0`) use per block the arithmetic of their ISA's `quantize_row_q8_0`: x86 `4x8` (AVX)
is the x86 flavour, ARM `4x4` and `4x8` (NEON) are the arm flavour, and x86's `4x4` is the generic C
(the reference flavour), though no x86 matmul selects it. Only the memory layout differs, so these
functions return plain rows.

Inputs must be finite. When amax is so small that id overflows to inf (x86: 127 / amax, and
reference / arm: 1 / d, both for amax below ~3.7e-37; when d itself underflows to 0, amax below
~9e-44, reference / arm take id = 0) every q is whatever the ISA's float -> int conversion makes of
inf and NaN; that is reproduced too, per flavour, so the functions equal ggml's even there.
"""

from __future__ import annotations

import numpy as np

QK = 32  # values per Q8_0 / Q8_1 block
FLAVOURS = ("x86", "arm", "reference")

_F32 = np.float32
_INT32_MIN = np.int64(-(2**31))
_INT32_MAX = np.int64(2**31 - 1)


def quantize_q8_0(x, flavour: str) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 blocks of the rows of float32 x [M, K] (K % 32 == 0) as ggml's `flavour` path makes them.

    Returns (q int8 [M, K], d float32 [M, K/32]): d is the fp16 scale as stored, back in float32.
    """
    q, d, _ = _quantize(x, flavour, want_sum=False)
    return q, d


def quantize_q8_1(x, flavour: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q8_1 blocks: quantize_q8_0's (q, d) and s float32 [M, K/32] = fp16(float32(sum(q)) * d) as stored."""
    return _quantize(x, flavour, want_sum=True)


def _x86(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x86 flavour; like the others, (int32 lanes, summed for Q8_1's s; int8 q) from v = x * id.

    ggml-cpu/arch/x86/quants.c `quantize_row_q8_0` / `quantize_row_q8_1` (AVX2 and AVX; also
    `ggml_quantize_mat_q8_0_4x8` in arch/x86/repack.cpp, Q4_0's 8x8 repack).

    id = amax != 0 ? 127 / amax : 0 (not 1 / d), then _mm256_round_ps(_MM_ROUND_NEAREST): ties to even;
    _mm256_cvtps_epi32 makes inf / NaN INT32_MIN, which the saturating packs turn into -128.
    Q8_1's s sums the int32 lanes (hsum_i32_8, wrapping).
    """
    r = np.rint(v)
    ok = np.isfinite(r) & (r >= -(2.0**31)) & (r < 2.0**31)
    i32 = np.where(ok, np.where(ok, r, 0).astype(np.int64), _INT32_MIN)
    return i32, np.clip(i32, -128, 127).astype(np.int8)


def _arm(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml-cpu/arch/arm/quants.c `quantize_row_q8_0` / `quantize_row_q8_1` (NEON; also
    `ggml_quantize_mat_q8_0_4x4` / `_4x8` in arch/arm/repack.cpp).

    id = d != 0 ? 1 / d : 0 as in the reference, but vcvtnq_s32_f32: ties to even, saturating (+inf ->
    INT32_MAX, -inf -> INT32_MIN, NaN -> 0), each lane then truncated to int8 (its low byte).
    Q8_1's s sums the int32 lanes (vaddvq_s32, wrapping).
    """
    r = np.rint(v)
    nan = np.isnan(r)
    i32 = np.clip(np.where(nan, 0, np.clip(r, -(2.0**31), 2.0**31)), _INT32_MIN, _INT32_MAX).astype(np.int64)
    return i32, _low_byte(i32)


def _reference(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml-quants.c `quantize_row_q8_0_ref` / `quantize_row_q8_1_ref` (what `ggml_quantize_chunk` and
    the CPU backend runs without SIMD: x86 builds without AVX, `quantize_row_q8_0_generic`, and x86's
    `ggml_quantize_mat_q8_0_4x4`, which is `ggml_quantize_mat_q8_0_4x4_generic`).

    id = d != 0 ? 1 / d : 0; roundf: ties away from zero; the float -> int8_t cast is cvttss2si (32 bit,
    inf / NaN -> INT32_MIN) and its low byte, as gcc compiles it for x86 (C leaves that case undefined).
    Q8_1's s sums the stored int8 values.
    """
    t = np.trunc(v)
    frac = np.abs(v - t)  # exact: a float32 minus its integer part
    r = np.where(frac >= _F32(0.5), t + np.sign(v), t)
    ok = np.isfinite(r) & (r >= -(2.0**31)) & (r < 2.0**31)
    i32 = np.where(ok, np.where(ok, r, 0).astype(np.int64), _INT32_MIN)
    q = _low_byte(i32)
    return q.astype(np.int64), q


_ROUND = {"x86": _x86, "arm": _arm, "reference": _reference}


def _low_byte(i: np.ndarray) -> np.ndarray:
    return (i & 0xFF).astype(np.uint8).view(np.int8)


def _quantize(x, flavour: str, *, want_sum: bool):
    if flavour not in _ROUND:
        raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"x must be float32 (ggml quantises float32 rows), not {x.dtype}")
    if x.ndim != 2 or x.shape[1] % QK:
        raise ValueError(f"x must be [M, K] with K a multiple of {QK}, not {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x must be finite (ggml's result for inf / NaN depends on its max's operand order)")
    m, k = x.shape
    blocks = x.reshape(m, k // QK, QK)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore", under="ignore"):
        amax = np.max(np.abs(blocks), axis=-1)  # exact: max is order-independent on finite values
        d = amax / _F32(127)
        # IEEE float32 division: a tiny amax (or d) makes id inf, as in C
        if flavour == "x86":
            id_ = np.where(amax != 0, _F32(127) / np.where(amax != 0, amax, _F32(1)), _F32(0))
        else:
            id_ = np.where(d != 0, _F32(1) / np.where(d != 0, d, _F32(1)), _F32(0))
        id_ = id_.astype(np.float32)
        v = blocks * id_[..., None]  # float32 * float32: one rounding; 0 * inf = NaN as in C
        lanes, q = _ROUND[flavour](v)
        d16 = d.astype(np.float16).astype(np.float32)  # round to nearest even, inf above 65504
        if not want_sum:
            return q.reshape(m, k), d16, None
        total = lanes.sum(axis=-1)
        if flavour != "reference":  # int32 lane sums wrap
            total = (total + 2**31) % 2**32 - 2**31
        s = total.astype(np.float32) * d  # C's sum * d: (float)sum, then one float32 multiply
        return q.reshape(m, k), d16, s.astype(np.float16).astype(np.float32)

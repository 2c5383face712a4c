"""CPU family (ARM NEON/dot-product, x86 AVX2/AVX-512): one schedule function per op."""

from __future__ import annotations

from typing import Any

from schedules.cpu import attention, gemm_float, gemm_int, pointwise
from schedules.cpu.gemm_float import w4a16_tile

_SCHEDULES = {
    "qgemm_w8a8": gemm_int.schedule_gemm,
    "qgemm_w4a8": gemm_int.schedule_gemm,
    "qgemm_w4a16": gemm_float.schedule_gemm,
    "qkv_proj": pointwise.schedule_qkv,
    "quantize_per_token": pointwise.schedule_quantize,
    "attention_prefill": attention.schedule_prefill,
    "attention_decode": attention.schedule_decode,
}
_GEMMS = ("qgemm_w8a8", "qgemm_w4a8", "qgemm_w4a16", "qkv_proj")

# Token rows per accumulator tile in the any-length GEMM variant: 4 rows x 16 columns of int32 or
# fp32 accumulators fit the register file of NEON (32 x 128-bit) and AVX2 (16 x 256-bit).
GEMM_ROW_TILE = 4


def buckets(spec, target) -> list[dict[str, int]]:
    # GEMMs get a one-token variant (decode GEMV: no row tiling, no padded rows) before the general one.
    return [{"M": 1}, {}] if spec.op in _GEMMS else [{}]


def layout(spec, target, bucket: dict[str, int]) -> dict[str, Any]:
    return {
        "bucket": dict(bucket),
        # int8 weights tiled for the 4x4 dot-product intrinsics (SDOT / SMULL fallback); int4 weights
        # of W4A16 tiled to two SIMD registers of output columns.
        "n_tile": w4a16_tile(_gemm_n(spec), target) if _float_weights(spec) else 4,
        "k_tile": 4,
        "m_tile": 1 if bucket.get("M") == 1 else GEMM_ROW_TILE,
        # attention: keys per online-softmax step, SIMD lanes, keys per decode split.
        "kv_tile": 32,
        "lanes": _attention_lanes(spec, target),
        "split_len": 256,
    }


def _attention_lanes(spec, target) -> int:
    """SIMD lanes over the head dim: the widest that divides D (D=40 on AVX-512 takes 8)."""
    d = dict(spec.dims).get("d", target.float_lanes)
    return next(lanes for lanes in (target.float_lanes, 8, 4, 2, 1) if lanes <= target.float_lanes and d % lanes == 0)


def _gemm_n(spec) -> int:
    if spec.op == "qkv_proj":
        return (spec.dim("hq") + 2 * spec.dim("hkv")) * spec.dim("d")
    return spec.dim("n") if "n" in dict(spec.dims) else 0


def _float_weights(spec) -> bool:
    return spec.op == "qgemm_w4a16" or (spec.op == "qkv_proj" and spec.opt("quant") == "w4a16")


def schedule(sch, spec, target, bucket: dict[str, int]) -> None:
    _SCHEDULES[spec.op](sch, spec, target, layout(spec, target, bucket))

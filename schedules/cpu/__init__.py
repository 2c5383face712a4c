"""CPU family (ARM NEON/dot-product, x86 AVX2/AVX-512): one schedule function per op."""

from __future__ import annotations

from dataclasses import replace

from schedules.cpu import attention, gemm_float, gemm_int, pointwise
from schedules.cpu.gemm_float import w4a16_tile
from schedules.cpu.intrinsics import activation_offset, dot_tile, has_high_bit_form, int4_halves_tile
from schedules.cpu.unpacked import UNPACKED_FORMS, unpacked_forms
from schedules.gemm_facts import GEMM_OPS, float_weights, gemm_n, int4_float_weights, int4_weights, int_weight_bits
from schedules.layouts import CpuLayout

_SCHEDULES = {
    "qgemm_w8a8": gemm_int.schedule_gemm,
    "qgemm_w4a8": gemm_int.schedule_gemm,
    "qgemm_w4a16": gemm_float.schedule_gemm,
    "qgemm_w8a16": gemm_float.schedule_gemm,
    "qgemm_gguf": lambda *args: _gguf_gemm(*args),
    "qkv_proj": pointwise.schedule_qkv,
    "quantize_per_token": pointwise.schedule_quantize,
    "attention_prefill": attention.schedule_prefill,
    "attention_decode": attention.schedule_decode,
}

def _gguf_gemm(sch, spec, target, layout) -> None:
    """A GGUF type's GEMM: the float schedule, or W4A8's on int8 activations (ops/qgemm_gguf.py)."""
    (gemm_float if float_weights(spec) else gemm_int).schedule_gemm(sch, spec, target, layout)


# Token rows per accumulator tile in the any-length GEMM variant: 4 rows x 16 columns of int32 or
# fp32 accumulators fit the register file of NEON (32 x 128-bit) and AVX2 (16 x 256-bit).
GEMM_ROW_TILE = 4


# Attention gets a short-length variant (a chat turn's prompt, a young KV cache) before the general
# one: at short lengths there are few blocks per core, so decode splits the KV cache finer.
SHORT_PREFILL = 256
SHORT_KV = 512


def buckets(spec, target) -> list[dict]:
    # GEMMs get a one-token variant (decode GEMV: no row tiling, no padded rows) before the general one.
    if spec.op in GEMM_OPS:
        return [{"M": 1}, {}]
    if spec.op == "attention_prefill":
        return [{"S": [1, SHORT_PREFILL]}, {}]
    if spec.op == "attention_decode":
        return [{"L": [1, SHORT_KV]}, {}]
    return [{}]


def layout(spec, target, bucket: dict) -> CpuLayout:
    dot = _int8_dot(spec, target)
    halves = int4_halves_tile(dot) if spec.op in GEMM_OPS and not float_weights(spec) and int4_weights(spec) else None
    unpacked = _unpacked_forms(spec, target, bucket, dot)
    return CpuLayout(
        bucket=dict(bucket),
        # int8 weights tiled as the dot-product intrinsic consumes them (SDOT: 4 channels x 4 k, four
        # such tiles side by side: DOT_TILES_PER_WEIGHT_TILE);
        # int4 weights of W4A16 tiled to two SIMD registers of output columns.
        int8_dot=dot,
        n_tile=w4a16_tile(gemm_n(spec), target, _float16_math(spec, target)) if float_weights(spec) else
        _int_weight_tile(spec, dot),
        k_tile=halves[0] if halves else dot_tile(dot)[1],
        int4_halves=halves is not None,
        int4_unsigned=bool(halves and halves[1]),
        weights_unpacked=bool(unpacked),
        **(_unpacked_fields(unpacked[0]) if unpacked else {}),
        act_offset=activation_offset(dot) if spec.op in GEMM_OPS and not float_weights(spec) else 0,
        m_tile=1 if bucket.get("M") == 1 else GEMM_ROW_TILE,
        biased_sums=target.slow_int_to_float and _q8_blocks(spec),
        lean_group_scaling=target.isa == "aarch64" and _q8_blocks(spec),
        # W4A16 on float16 lanes where the target has the arithmetic (ops/qgemm_w4a16._acc_fp16_lanes)
        float_math="float16" if _float16_math(spec, target) else "float32",
        kv_tile=32,
        q_rows=4,
        lanes=_attention_lanes(spec, target),
        split_len=64 if "L" in bucket else 256,  # short caches split finer: more blocks per core
        keys_in_lanes=target.attention_keys_in_lanes and spec.op.startswith("attention"),
        # An int8 cache's scores by integer dot products where the per-key tile is the target's form
        # (x86-avx512: 1.18x at L=8192, measured); keys-in-lanes targets keep float scores (the A76
        # model: 1.16x slower with SDOT per key, the A55 1.25x faster: a tuning choice there).
        query_dot="" if target.attention_keys_in_lanes else _attention_query_dot(spec, target),
        key_fold=_attention_key_fold(spec, target),
    )


def _float16_math(spec, target) -> bool:
    return target.float16_arith and int4_float_weights(spec)


def _q8_blocks(spec) -> bool:
    """Whether the spec is an int GEMM on activations quantised to q8 blocks in the kernel."""
    return spec.op in GEMM_OPS and not float_weights(spec) and spec.opt("act", "int8") != "int8"


def _unpacked_forms(spec, target, bucket: dict, dot: str) -> list[str]:
    """The forms a multi-row int GEMM may run on weights unpacked once per column block, preferred
    first (SMMLA where the target has i8mm, else SDOT's); none for a GEMV or another byte form."""
    if bucket.get("M") == 1 or spec.op not in GEMM_OPS or float_weights(spec):
        return []
    return unpacked_forms(dot, target.cpu_features, int_weight_bits(spec))


def _unpacked_fields(form: str) -> dict:
    """The Layout fields of unpacked form `form` (its scratch's and activations' tiles)."""
    return {"unpacked_form": form, "unpacked_k": UNPACKED_FORMS[form].k_run, "unpacked_rows": UNPACKED_FORMS[form].rows}


def _attention_key_fold(spec, target) -> bool:
    """The per-key tile's partial sums folded 16 keys at a time by two-source permutes (AVX-512),
    where that was measured faster (x86-avx512, SmolLM2's heads, side by side): prefill on a float
    cache 1.05-1.13x (S=128 after 1024, several runs), the int8 cache's integer scores 1.19x (decode L=2048).
    Float decode is held by memory, not by the sums: 0.95-1.0x hot, 0.79x cold at L=2048."""
    if not spec.op.startswith("attention") or "avx512f" not in target.cpu_features:
        return False
    return spec.op == "attention_prefill" or spec.opt("kv") == "int8"


def _attention_query_dot(spec, target) -> str:
    """The target's integer dot form for an int8 cache's attention scores ("" if none)."""
    if not spec.op.startswith("attention"):
        return ""
    from compiler.ops.attention_simd import query_dot_form

    return query_dot_form(target.int8_dot, spec.dim("d"), spec.opt("kv") == "int8") or ""


# x86 byte-product forms for the q8 model path (activations quantised in the kernel): int4 weights
# offset-binary as the unsigned operand (VPMADDUBSW, VPDPBUSD), int8 weights VPSIGNB's signs.
_BYTE_FORMS = {("sdot", 4): "sdot_unsigned", ("avx2_madd", 4): "avx2_maddubs", ("avx2_madd", 8): "avx2_sign_maddubs",
               ("avx512_madd", 4): "avx512_maddubs", ("avx512_vnni", 4): "avx512_vnni_unsigned"}


def has_high_bit_dot(int8_dot: str) -> bool:
    """Whether a target with this int8_dot fact multiplies 5- and 6-bit weights (GGUF's Q5 types and
    Q6_K) on int8 activations: its q8-path byte form has those intrinsics."""
    return has_high_bit_form(_BYTE_FORMS.get((int8_dot, 4), int8_dot))


def _int8_dot(spec, target) -> str:
    """The target's int8 dot-product instruction (its byte form on x86 for the q8 path), unless the
    GEMM's N or K does not fit its tile (then the portable 4 x 4 tile, vectorised by LLVM)."""
    if spec.op not in GEMM_OPS or float_weights(spec):
        return target.int8_dot
    dot = target.int8_dot
    if _q8_blocks(spec):
        dot = _BYTE_FORMS.get((dot, int4_weights(spec) and 4 or 8), dot)
    nt, kt = dot_tile(dot)
    return dot if gemm_n(spec) % nt == 0 and spec.dim("k") % kt == 0 else "none"


# Dot-product tiles side by side in one packed weight tile, where that pays (the cycle model,
# bench --core): SDOT's 4-channel tiles four at a time, so a column block of 16 is four independent
# accumulators fed by one activation load each (a one-token GEMV on 4 columns chained 8 SDOTs per
# group into one register and paid its activation loads and group scaling per 4 columns: 3072 x
# 576 Q4_1 on the q8 path, 114 -> 105 us on the A76 model and 699 -> 392 us on the A55), and is
# still one contiguous weight stream.
DOT_TILES_PER_WEIGHT_TILE = {"sdot": 4, "sdot_unsigned": 4}


def _int_weight_tile(spec, dot: str) -> int:
    """Output channels per packed int8/int4 weight tile: the instruction's, or several of its tiles
    interleaved (DOT_TILES_PER_WEIGHT_TILE) where the GEMM's N is a multiple."""
    channels = dot_tile(dot)[0]
    if spec.op not in GEMM_OPS:
        return channels
    wide = channels * DOT_TILES_PER_WEIGHT_TILE.get(dot, 1)
    return wide if gemm_n(spec) % wide == 0 else channels


def _attention_lanes(spec, target) -> int:
    """SIMD lanes over the head dim: the widest that divides D (D=40 on AVX-512 takes 8)."""
    d = dict(spec.dims).get("d", target.float_lanes)
    return next(lanes for lanes in (target.float_lanes, 8, 4, 2, 1) if lanes <= target.float_lanes and d % lanes == 0)


def layout_choices(spec, target, bucket: dict) -> list[CpuLayout]:
    """The default layout, then the structural alternatives worth a tuner's trials, none of which
    changes the kernel's arguments: the any-length GEMM's token rows per accumulator tile, and its
    weights unpacked per row tile instead of once (the A55 model prefers that on an A76 build); the
    attention prefill's keys per online-softmax step and query rows per block; the attention
    decode's keys per split (a multiple of its key tile); on an int8 cache, the other form of its
    scores (integer dot products per key, or the target's float tile)."""
    default = layout(spec, target, bucket)
    query_dot = _attention_query_dot(spec, target)
    other_scores = []
    if query_dot:
        other_scores = [{"query_dot": "", "keys_in_lanes": target.attention_keys_in_lanes} if default.query_dot else
                        {"query_dot": query_dot, "keys_in_lanes": False}]
    if spec.op in GEMM_OPS and default.m_tile > 1:
        changes = [{"m_tile": m} for m in (2, 8)] + ([{"weights_unpacked": False}] if default.weights_unpacked else [])
        # the other unpacked forms of the target (SDOT's where SMMLA is the default)
        changes += [_unpacked_fields(form) for form in _unpacked_forms(spec, target, bucket, default.int8_dot)[1:]]
        changes += [{"biased_sums": False}] if default.biased_sums else []
    elif spec.op == "attention_prefill":  # a key tile is whole vectors of the head-dim lanes
        changes = [{"kv_tile": t} for t in (16, 64) if t % default.lanes == 0] + [{"q_rows": 2}, {"q_rows": 8}]
    elif spec.op == "attention_decode":
        changes = [{"split_len": default.split_len // 2}, {"split_len": default.split_len * 2}]
        changes = [c for c in changes if c["split_len"] % default.kv_tile == 0]
    else:
        changes = []
    return [default, *(replace(default, **change) for change in changes + other_scores)]


def schedule(sch, spec, target, bucket: dict, layout: CpuLayout) -> None:
    _SCHEDULES[spec.op](sch, spec, target, layout)

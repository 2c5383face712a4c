"""Facts about GEMM specs that every schedule family's layout reads."""

from __future__ import annotations

from compiler.ops.gguf_forms import GGUF_FORMS

GEMM_OPS = ("qgemm_w8a8", "qgemm_w4a8", "qgemm_w4a16", "qgemm_w8a16", "qgemm_gguf", "qkv_proj")


def gemm_n(spec) -> int:
    """Output columns of a GEMM spec (the fused QKV's are all heads' rows of Q, K and V)."""
    if spec.op == "qkv_proj":
        return (spec.dim("hq") + (2 if spec.opt("v", True) else 1) * spec.dim("hkv")) * spec.dim("d")
    return spec.dim("n")


def float_weights(spec) -> bool:
    """Whether the GEMM takes float activations (its weights are dequantised, not dot-multiplied as int8)."""
    if spec.op in ("qgemm_w4a16", "qgemm_w8a16"):
        return True
    if spec.op == "qgemm_gguf":
        return spec.opt("act") == "float32"
    if spec.op == "qkv_proj":
        return spec.opt("quant") in ("w4a16", "w8a16") or (spec.opt("quant") == "gguf" and spec.opt("act") == "int8")
    return False


def int4_float_weights(spec) -> bool:
    """Whether the GEMM is W4A16 (int4 weights, float activations), alone or as the fused QKV."""
    return spec.op == "qgemm_w4a16" or (spec.op == "qkv_proj" and spec.opt("quant") == "w4a16")


def int4_weights(spec) -> bool:
    """Whether an int8-activation GEMM has int4 weights (W4A8, or a GGUF Q4_K on int8 activations;
    alone or as the fused QKV)."""
    if spec.op == "qgemm_w4a8" or (spec.op == "qkv_proj" and spec.opt("quant") == "w4a8"):
        return True
    return spec.op in ("qgemm_gguf", "qkv_proj") and spec.opt("quant", "gguf") == "gguf" and not float_weights(spec)


def int_weight_bits(spec) -> int:
    """Bits per weight of an int8-activation GEMM: 8, 4 (int4 nibbles), or 5 (GGUF's Q5 types: nibbles
    and a plane of fifth bits)."""
    if spec.op in ("qgemm_gguf", "qkv_proj") and spec.opt("quant", "gguf") == "gguf":
        return GGUF_FORMS[spec.opt("type")].bits
    return 4 if int4_weights(spec) else 8

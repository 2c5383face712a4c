"""Which kernels a GGUF model needs (one spec per role, from its shapes and weight types) and its weights packed for them.

Roles: qkv (fused Q/K/V projection with RoPE), o, gate_up (gate and up fused into one GEMM), down,
head (the output projection, tied to the token embedding when the file has no output.weight),
attention prefill and decode. A role's weights must share one GGUF type across layers.
"""

from __future__ import annotations

import numpy as np

from compiler.llm.gguf import BLOCK, GGUFError, GGUFModel, QuantWeight
from compiler.specs import KernelSpec, make_spec

GEMM_ROLES = {  # role -> GGUF tensor names (per layer) whose rows are concatenated
    "qkv": ("attn_q", "attn_k", "attn_v"),
    "o": ("attn_output",),
    "gate_up": ("ffn_gate", "ffn_up"),
    "down": ("ffn_down",),
}


def head_tensor(model: GGUFModel) -> str:
    return "output.weight" if "output.weight" in model.tensor_names else "token_embd.weight"


def role_type(model: GGUFModel, role: str) -> str:
    """The one GGUF type of a role's weights over all layers (an error names the first that differs)."""
    if role == "head":
        return model.type_of(head_tensor(model))
    kinds = {}
    for layer in range(model.shape.layers):
        for part in GEMM_ROLES[role]:
            name = f"blk.{layer}.{part}.weight"
            kinds.setdefault(model.type_of(name), name)
    if len(kinds) > 1:
        raise GGUFError(f"{model.path.name}: the {role} weights mix types {sorted(kinds)} "
                        f"(e.g. {', '.join(kinds.values())}); one type per role is supported")
    return next(iter(kinds))


ACTIVATIONS = ("f32", "q8")  # how activations meet the weights: float32, or llama.cpp's 8-bit blocks


def weight_form(kind: str, activations: str = "f32", isa: str = "x86_64") -> tuple[str, dict]:
    """The quantized form (and its options) that takes a GGUF weight type as is (see compiler.llm.gguf):
    with f32 activations a weight-only form; with q8, an int8 form whose kernel quantises the
    activations to the Q8_0 blocks (Q8_1 for Q4_1) llama.cpp multiplies them in, rounded as
    llama.cpp does on `isa`."""
    if kind not in ("Q8_0", "Q4_0", "Q4_1"):
        raise GGUFError(f"weight type {kind} has no kernel; supported: Q4_0, Q4_1, Q8_0")
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    if activations == "f32":
        return ("w8a16", {}) if kind == "Q8_0" else ("w4a16", {"min": kind == "Q4_1"})
    recip = {"q8_recip": q8_reciprocal(isa)}
    if kind == "Q8_0":
        return "w8a8", {"act": "q8_0", **recip}
    return "w4a8", {"act": "q8_1", "min": True, **recip} if kind == "Q4_1" else {"act": "q8_0", **recip}


def q8_reciprocal(isa: str) -> str:
    """How llama.cpp's CPU code on this ISA inverts a block's scale (compiler/llm/q8_blocks.py):
    ARM NEON multiplies by 1/d, x86 AVX2 (and ggml's other paths here) by 127/amax."""
    return "1/d" if isa == "aarch64" else "127/amax"


def gemm_spec(kind: str, n: int, k: int, activations: str = "f32", isa: str = "x86_64", **fusions) -> KernelSpec:
    """The GEMM for a GGUF weight type, with `fusions` (ops/fused_act.py: norm, swiglu, residual)."""
    form, options = weight_form(kind, activations, isa)
    return make_spec(f"qgemm_{form}", n=n, k=k, group=BLOCK, **options, **fusions)


KV_CACHES = ("f32", "int8")  # the KV cache's rows: float32, or int8 with a float32 scale per row


def kernel_specs(model: GGUFModel, activations: str = "f32", isa: str = "x86_64",
                 kv_cache: str = "f32") -> dict[str, KernelSpec]:
    """role -> kernel spec, for float32 activations or llama.cpp's q8 blocks (quantised inside each
    GEMM, the way `isa`'s llama.cpp rounds them). The elementwise steps ride on the GEMMs: each
    RMSNorm on the projection after it (qkv, gate_up, head), SiLU(gate) * up on down, the residual
    adds on o and down. An int8 KV cache adds "kv_quant", which rounds each new K and V row."""
    if kv_cache not in KV_CACHES:
        raise ValueError(f"kv_cache must be one of {KV_CACHES}, got {kv_cache!r}")
    m = model.shape
    eps = model.rms_eps
    qkv_form, qkv_options = weight_form(role_type(model, "qkv"), activations, isa)

    def gemm(role, n, k, **fusions):
        return gemm_spec(role_type(model, role), n, k, activations, isa, **fusions)

    specs = {
        "qkv": make_spec("qkv_proj", hq=m.heads, hkv=m.kv_heads, d=m.head_dim, k=m.hidden, quant=qkv_form,
                         group=BLOCK, bias=m.qkv_bias, rope=True, rope_theta=m.rope_theta, norm=eps, **qkv_options),
        "o": gemm("o", m.hidden, m.heads * m.head_dim, residual=True),
        "gate_up": gemm("gate_up", 2 * m.ffn, m.hidden, norm=eps),
        "down": gemm("down", m.hidden, m.ffn, swiglu=True, residual=True),
        "head": gemm("head", model.vocab_size, m.hidden, norm=eps),
        "attention_prefill": make_spec("attention_prefill", hq=m.heads, hkv=m.kv_heads, d=m.head_dim, kv=kv_cache),
        "attention_decode": make_spec("attention_decode", hq=m.heads, hkv=m.kv_heads, d=m.head_dim, kv=kv_cache),
    }
    if kv_cache == "int8":
        specs["kv_quant"] = make_spec("quantize_per_token", k=m.head_dim)
    return specs


def rope_order(heads: int, head_dim: int) -> np.ndarray:
    """Row order undoing the converter's Q/K permutation: GGUF stores each head's rows interleaved
    (pairs rotated by llama.cpp's adjacent-pair RoPE); our kernel rotates halves (as Hugging Face does)."""
    within = np.arange(head_dim).reshape(head_dim // 2, 2).T.reshape(-1)  # 0, 2, 4, ..., 1, 3, 5, ...
    return (np.arange(heads)[:, None] * head_dim + within[None]).reshape(-1)


def logical_weights(model: GGUFModel, role: str, layer: int | None) -> dict[str, np.ndarray]:
    """The weight arguments (logical layouts) of one role's kernel for one layer."""
    m = model.shape
    if role == "head":
        weight = model.quant_weight(head_tensor(model))
    else:
        parts = [model.quant_weight(f"blk.{layer}.{p}.weight") for p in GEMM_ROLES[role]]
        if role == "qkv":
            parts[0] = parts[0].rows(rope_order(m.heads, m.head_dim))
            parts[1] = parts[1].rows(rope_order(m.kv_heads, m.head_dim))
        weight = QuantWeight.concat(parts)
    out = {"w": weight.w, "w_scale": weight.scale}
    if weight.minimum is not None:
        out["w_min"] = weight.minimum
    norm = {"qkv": f"blk.{layer}.attn_norm.weight", "gate_up": f"blk.{layer}.ffn_norm.weight",
            "head": "output_norm.weight"}.get(role)
    if norm:
        out["norm_w"] = model.float_tensor(norm)
    if role == "qkv" and m.qkv_bias:
        q_bias, k_bias, v_bias = (model.float_tensor(f"blk.{layer}.attn_{p}.bias") for p in "qkv")
        out["bias"] = np.concatenate([q_bias[rope_order(m.heads, m.head_dim)],
                                      k_bias[rope_order(m.kv_heads, m.head_dim)], v_bias])
    return out

"""Which kernels a GGUF model needs (one spec per role and weight type, from its shapes and weight
types) and its weights packed for them.

Roles: qkv (fused Q/K/V projection with RoPE), o, gate_up (gate and up fused into one GEMM), down,
head (the output projection, tied to the token embedding when the file has no output.weight),
attention prefill and decode. A role's weight type may change between layers (llama.cpp's Q4_K_M
makes some layers' attn_v and ffn_down Q6_K): each layer runs the kernel of its own types, one
kernel per distinct type and role. Where a layer's V weights differ in type from its Q and K, the
fused projection computes Q and K only and a role "v" GEMM of its own computes V.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.llm.gguf import BLOCK, GGUFError, GGUFModel, LEGACY, QuantWeight, SUPPORTED
from compiler.ops.gguf_forms import GGUF_FORMS, INT8_ACTIVATIONS
from schedules.cpu import has_high_bit_dot
from compiler.specs import KernelSpec, make_spec

GEMM_ROLES = {  # role -> GGUF tensor names (per layer) whose rows are concatenated
    "qkv": ("attn_q", "attn_k", "attn_v"),
    "o": ("attn_output",),
    "gate_up": ("ffn_gate", "ffn_up"),
    "down": ("ffn_down",),
}


def head_tensor(model: GGUFModel) -> str:
    return "output.weight" if "output.weight" in model.tensor_names else "token_embd.weight"


def layer_parts(model: GGUFModel, layer: int) -> dict[str, tuple[str, ...]]:
    """role -> the layer's tensors fused into that role's GEMM: GEMM_ROLES, with V a role of its own
    where its type differs from Q's and K's."""
    kind = {p: model.type_of(f"blk.{layer}.{p}.weight") for p in ("attn_q", "attn_k", "attn_v")}
    if kind["attn_q"] != kind["attn_k"]:
        raise GGUFError(f"{model.path.name}: blk.{layer}.attn_q is {kind['attn_q']} but blk.{layer}.attn_k is "
                        f"{kind['attn_k']}: one layer's Q and K weights must share a type")
    if kind["attn_v"] == kind["attn_q"]:
        return GEMM_ROLES
    return {"qkv": ("attn_q", "attn_k"), "v": ("attn_v",), **{r: p for r, p in GEMM_ROLES.items() if r != "qkv"}}


def part_type(model: GGUFModel, layer: int, parts: tuple[str, ...]) -> str:
    """The one GGUF type of tensors fused into one GEMM (an error names them where they differ)."""
    kinds = {part: model.type_of(f"blk.{layer}.{part}.weight") for part in parts}
    if len(set(kinds.values())) > 1:
        raise GGUFError(f"{model.path.name}: layer {layer} fuses {', '.join(parts)} into one GEMM but their types "
                        f"differ: {kinds}")
    kind = next(iter(kinds.values()))
    if kind not in SUPPORTED:
        raise GGUFError(f"weight type {kind} has no kernel ({', '.join(f'blk.{layer}.{p}' for p in parts)}); "
                        f"supported: {', '.join(SUPPORTED)}")
    return kind


ACTIVATIONS = ("f32", "q8")  # how activations meet the weights: float32, or llama.cpp's 8-bit blocks


def weight_form(kind: str, activations: str = "f32", isa: str = "x86_64", int8_dot: str = "none") -> tuple[str, dict]:
    """The quantized form (and its options) that takes a GGUF weight type as is (see compiler.llm.gguf):
    with f32 activations a weight-only form; with q8, for Q4_0 / Q4_1 / Q8_0, an int8 form whose
    kernel quantises the activations to the Q8_0 blocks (Q8_1 for Q4_1) llama.cpp multiplies them
    in, rounded as llama.cpp does on `isa`; for Q4_K, and for Q5_0 / Q5_1 / Q5_K / Q6_K where the
    target's dot product (`int8_dot`) has a form for 5- and 6-bit values, W4A8's kernel on Q8 blocks
    (ops/qgemm_gguf.py INT8_ACTIVATIONS). Other types take float32 activations either way
    (`float_only_types`)."""
    if kind not in SUPPORTED:
        raise GGUFError(f"weight type {kind} has no kernel; supported: {', '.join(SUPPORTED)}")
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    if kind in GGUF_FORMS:
        if activations == "q8" and has_int8_form(kind, int8_dot):
            return "gguf", {"type": kind, "act": INT8_ACTIVATIONS[kind], "q8_recip": q8_reciprocal(isa)}
        return "gguf", {"type": kind}
    if activations == "f32":
        return ("w8a16", {}) if kind == "Q8_0" else ("w4a16", {"min": kind == "Q4_1"})
    recip = {"q8_recip": q8_reciprocal(isa)}
    if kind == "Q8_0":
        return "w8a8", {"act": "q8_0", **recip}
    return "w4a8", {"act": "q8_1", "min": True, **recip} if kind == "Q4_1" else {"act": "q8_0", **recip}


def has_int8_form(kind: str, int8_dot: str) -> bool:
    """Whether a type runs on int8 activations on a target with this int8_dot fact."""
    if kind in LEGACY:
        return True
    return kind in INT8_ACTIVATIONS and (GGUF_FORMS[kind].bits == 4 or has_high_bit_dot(int8_dot))


def q8_reciprocal(isa: str) -> str:
    """How llama.cpp's CPU code on this ISA inverts a block's scale (compiler/llm/q8_blocks.py):
    ARM NEON multiplies by 1/d, x86 AVX2 (and ggml's other paths here) by 127/amax."""
    return "1/d" if isa == "aarch64" else "127/amax"


def gemm_spec(kind: str, n: int, k: int, activations: str = "f32", isa: str = "x86_64", int8_dot: str = "none",
              **fusions) -> KernelSpec:
    """The GEMM for a GGUF weight type, with `fusions` (ops/fused_act.py: norm, swiglu, residual; bias)."""
    form, options = weight_form(kind, activations, isa, int8_dot)
    group = {} if form == "gguf" else {"group": BLOCK}  # a GGUF type's own blocks say its groups
    return make_spec(f"qgemm_{form}", n=n, k=k, **group, **options, **fusions)


KV_CACHES = ("f32", "int8")  # the KV cache's rows: float32, or int8 with a float32 scale per row


@dataclass(frozen=True)
class KernelPlan:
    """The kernel of every role: per layer for the projections (their types may change between
    layers), once for the head and attention. `specs` lists each distinct kernel once, to build."""
    layers: tuple[dict[str, KernelSpec], ...]
    shared: dict[str, KernelSpec]
    float_only_types: tuple[str, ...]  # types run on float32 activations although q8 was asked for

    @property
    def specs(self) -> list[KernelSpec]:
        every = [spec for layer in self.layers for spec in layer.values()] + list(self.shared.values())
        return list({spec.name: spec for spec in every}.values())


def kernel_plan(model: GGUFModel, activations: str = "f32", isa: str = "x86_64", kv_cache: str = "f32",
                int8_dot: str = "none") -> KernelPlan:
    """Every role's kernel, for float32 activations or llama.cpp's q8 blocks (quantised inside each
    GEMM, the way `isa`'s llama.cpp rounds them; int8_dot: the target's fact, which says whether
    5- and 6-bit weights have an int8 form). The elementwise steps ride on the GEMMs: each
    RMSNorm on the projection after it (qkv and v, gate_up, head), SiLU(gate) * up on down, the
    residual adds on o and down. An int8 KV cache adds "kv_quant", which rounds each new K and V row."""
    if kv_cache not in KV_CACHES:
        raise ValueError(f"kv_cache must be one of {KV_CACHES}, got {kv_cache!r}")
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    m = model.shape
    eps = model.rms_eps
    kinds = set()

    def gemm(kind, n, k, **fusions):
        kinds.add(kind)
        return gemm_spec(kind, n, k, activations, isa, int8_dot, **fusions)

    def layer_specs(layer: int) -> dict[str, KernelSpec]:
        parts = layer_parts(model, layer)
        kind = {role: part_type(model, layer, names) for role, names in parts.items()}
        kinds.add(kind["qkv"])
        qkv_form, qkv_options = weight_form(kind["qkv"], activations, isa, int8_dot)
        specs = {"qkv": make_spec("qkv_proj", hq=m.heads, hkv=m.kv_heads, d=m.head_dim, k=m.hidden, quant=qkv_form,
                                  group=BLOCK, bias=m.qkv_bias, rope=True, rope_theta=m.rope_theta, norm=eps,
                                  v="v" not in parts, **qkv_options)}
        if "v" in parts:
            specs["v"] = gemm(kind["v"], m.kv_heads * m.head_dim, m.hidden, norm=eps, bias=m.qkv_bias)
        specs["o"] = gemm(kind["o"], m.hidden, m.heads * m.head_dim, residual=True)
        specs["gate_up"] = gemm(kind["gate_up"], 2 * m.ffn, m.hidden, norm=eps)
        specs["down"] = gemm(kind["down"], m.hidden, m.ffn, swiglu=True, residual=True)
        return specs

    layers = tuple(layer_specs(layer) for layer in range(m.layers))
    shared = {
        "head": gemm(model.type_of(head_tensor(model)), model.vocab_size, m.hidden, norm=eps),
        "attention_prefill": make_spec("attention_prefill", hq=m.heads, hkv=m.kv_heads, d=m.head_dim, kv=kv_cache),
        "attention_decode": make_spec("attention_decode", hq=m.heads, hkv=m.kv_heads, d=m.head_dim, kv=kv_cache),
    }
    if kv_cache == "int8":
        shared["kv_quant"] = make_spec("quantize_per_token", k=m.head_dim)
    float_only = tuple(sorted(k for k in kinds if not has_int8_form(k, int8_dot))) if activations == "q8" else ()
    return KernelPlan(layers, shared, float_only)


def kernel_specs(model: GGUFModel, activations: str = "f32", isa: str = "x86_64", kv_cache: str = "f32",
                 int8_dot: str = "none") -> list[KernelSpec]:
    """Each distinct kernel the model runs (kernel_plan), to build."""
    return kernel_plan(model, activations, isa, kv_cache, int8_dot).specs


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
        parts = ()
    else:
        parts = layer_parts(model, layer)[role]
        weights = [model.quant_weight(f"blk.{layer}.{p}.weight") for p in parts]
        if role == "qkv":
            weights[0] = weights[0].rows(rope_order(m.heads, m.head_dim))
            weights[1] = weights[1].rows(rope_order(m.kv_heads, m.head_dim))
        weight = QuantWeight.concat(weights)
    out = dict(weight.arrays)
    norm = {"qkv": f"blk.{layer}.attn_norm.weight", "v": f"blk.{layer}.attn_norm.weight",
            "gate_up": f"blk.{layer}.ffn_norm.weight", "head": "output_norm.weight"}.get(role)
    if norm:
        out["norm_w"] = model.float_tensor(norm)
    if role in ("qkv", "v") and m.qkv_bias:
        order = {"attn_q": rope_order(m.heads, m.head_dim), "attn_k": rope_order(m.kv_heads, m.head_dim)}
        out["bias"] = np.concatenate([_bias(model, layer, part, order.get(part)) for part in parts])
    return out


def _bias(model: GGUFModel, layer: int, part: str, order: np.ndarray | None) -> np.ndarray:
    """A projection's bias (blk.L.attn_q.bias, ...), rows in the kernel's order."""
    bias = model.float_tensor(f"blk.{layer}.{part}.bias")
    return bias if order is None else bias[order]

"""Model presets (real shapes of published models) and the kernel specs a decoder layer needs."""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from compiler.specs import KernelSpec, make_spec

QUANT_FORMS = ("w8a8", "w4a8", "w4a16")


def int8_activations(quant: str) -> bool:
    """Whether a quantized form ("w4a8", "w8a16", ...) multiplies int8 activations (an int8 dot
    product, fed by quantize_per_token) rather than float ones."""
    return quant.endswith("a8")


def multiplies_int8(spec: KernelSpec) -> bool:
    """Whether a kernel's multiply-adds are int8 dot products (its GEMM, or its fused QKV, takes
    int8 activations); else they are float."""
    if spec.op == "qkv_proj":
        return int8_activations(spec.opt("quant"))
    return spec.op.startswith("qgemm_") and int8_activations(spec.op.removeprefix("qgemm_"))


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    qkv_bias: bool = False
    rope_theta: float = 10000.0
    group: int = 128  # int4 group size
    description: str = ""
    layers: int = 0  # decoder layers (0: unknown; only the per-model estimates need it)


PRESETS = {m.name: m for m in (
    ModelShape("smollm2-135m", 576, 9, 3, 64, 1536, False, 100000.0, 32, "SmolLM2-135M (llama architecture)", 30),
    ModelShape("qwen2.5-0.5b", 896, 14, 2, 64, 4864, True, 1000000.0, 128, "Qwen2.5-0.5B (GQA 7:1, QKV bias)", 24),
    ModelShape("llama-3.2-1b", 2048, 32, 8, 64, 8192, False, 500000.0, 128, "Llama-3.2-1B", 16),
    ModelShape("mistral-7b", 4096, 32, 8, 128, 14336, False, 10000.0, 128, "Mistral-7B-v0.1", 32),
)}
DEFAULT_PRESET = "qwen2.5-0.5b"


def preset(name: str) -> ModelShape:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def from_config(path: str | Path) -> ModelShape:
    """A model shape from a JSON or TOML file with ModelShape's fields (name defaults to the file stem)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    except (ValueError, tomllib.TOMLDecodeError) as err:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ValueError(f"config file {path} is not valid {kind}: {err}") from None
    if not isinstance(raw, dict):
        kind = {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(raw), "number")
        raise ValueError(f"config file {path} must hold a table of fields (a JSON object), not a {kind}")
    if "hidden_size" in raw:  # a Hugging Face config.json
        try:
            raw = _from_hf_config(raw)
        except ValueError as err:
            raise ValueError(f"config file {path}: {err}") from None
    known = {f.name for f in fields(ModelShape)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"config file {path}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    raw.setdefault("name", path.stem)
    missing = {"hidden", "heads", "kv_heads", "head_dim", "ffn"} - set(raw)
    if missing:
        raise ValueError(f"config file {path}: missing field(s) {sorted(missing)}")
    problem = next(filter(None, (_field_problem(name, value) for name, value in raw.items())), None)
    if problem:
        raise ValueError(f"config file {path}: {problem}")
    if "group" not in raw:  # the largest int4 group that divides every K of the model
        widths = (raw["hidden"], raw["heads"] * raw["head_dim"], raw["ffn"])
        raw["group"] = next((g for g in (128, 64, 32) if all(w % g == 0 for w in widths)), 128)
    return ModelShape(**raw)


MAX_DIM = 1 << 20  # far beyond any published model's widths: a larger value is a typo, not a model


def _field_problem(name: str, value) -> str | None:
    """What is wrong with one ModelShape field's value (named, with the value), or None: checked
    here so a bad config is refused by its field name instead of failing deep in a kernel spec."""
    if name in ("name", "description"):
        return None if isinstance(value, str) else f"field {name!r} must be a string, got {value!r}"
    if name == "qkv_bias":
        return None if isinstance(value, bool) else f"field 'qkv_bias' must be true or false, got {value!r}"
    if name == "rope_theta":
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = number and math.isfinite(value) and value > 0
        return None if ok else f"field 'rope_theta' must be a positive finite number, got {value!r}"
    least = 0 if name == "layers" else 1  # layers 0: unknown
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_DIM:
        kind = "a non-negative" if least == 0 else "a positive"
        return f"field {name!r} must be {kind} integer of at most {MAX_DIM}, got {value!r}"
    return None


def _hf_int(hf: dict, key: str, default=None) -> int:
    """A positive integer field of a Hugging Face config, by its key (divisions follow)."""
    value = hf.get(key, default)
    if value is None:
        raise ValueError(f"Hugging Face config lacks '{key}'")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Hugging Face config: '{key}' must be a positive integer, got {value!r}")
    return value


def _from_hf_config(hf: dict) -> dict:
    """The fields we need from a Hugging Face transformers config.json (llama/qwen2/mistral style)."""
    hidden, heads = _hf_int(hf, "hidden_size"), _hf_int(hf, "num_attention_heads")
    rope_theta = hf.get("rope_theta", 10000.0)
    shape = {
        "hidden": hidden,
        "heads": heads,
        "kv_heads": _hf_int(hf, "num_key_value_heads", heads),
        "head_dim": _hf_int(hf, "head_dim") if hf.get("head_dim") is not None else hidden // heads,
        "ffn": _hf_int(hf, "intermediate_size"),
        "rope_theta": float(rope_theta) if isinstance(rope_theta, (int, float)) else rope_theta,
        # Qwen2 always has QKV biases; llama-style configs say so in attention_bias.
        "qkv_bias": bool(hf.get("attention_bias", hf.get("model_type") == "qwen2")),
        "layers": hf.get("num_hidden_layers", 0),
    }
    if hf.get("head_dim") is None and hidden % heads:
        raise ValueError(f"Hugging Face config: hidden_size {hidden} is not a multiple of "
                         f"num_attention_heads {heads} (and there is no head_dim)")
    if hf.get("_name_or_path") and isinstance(hf["_name_or_path"], str):
        shape["name"] = Path(hf["_name_or_path"]).name.lower()
    return shape


def kernel_specs(model: ModelShape, *, ops: list[str] | None = None,
                 quants: tuple[str, ...] = QUANT_FORMS, kv_cache: str = "f32") -> list[KernelSpec]:
    """Every kernel of one decoder layer, in each quantized form; `ops` keeps only those ops.
    kv_cache: the attention kernels' cache rows, "f32" or "int8" (with a scale per row)."""
    m = model
    attn_width = m.heads * m.head_dim
    projections = [(m.hidden, attn_width), (2 * m.ffn, m.hidden), (m.hidden, m.ffn)]  # o, gate+up, down
    specs: list[KernelSpec] = []
    for q in quants:
        int4 = {"group": m.group} if q != "w8a8" else {}
        specs.append(make_spec("qkv_proj", hq=m.heads, hkv=m.kv_heads, d=m.head_dim, k=m.hidden, quant=q,
                               bias=m.qkv_bias, rope=True, rope_theta=float(m.rope_theta), **int4))
        for n, k in projections:
            specs.append(make_spec(f"qgemm_{q}", n=n, k=k, **int4))
    if any(int8_activations(q) for q in quants):
        specs += [make_spec("quantize_per_token", k=k) for k in (m.hidden, attn_width, m.ffn)]
    specs.append(make_spec("attention_prefill", hq=m.heads, hkv=m.kv_heads, d=m.head_dim, kv=kv_cache))
    specs.append(make_spec("attention_decode", hq=m.heads, hkv=m.kv_heads, d=m.head_dim, kv=kv_cache))
    if ops:
        specs = [s for s in specs if s.op in ops]
    unique = {s.name: s for s in specs}
    return list(unique.values())


def layer_calls(model: ModelShape, quant: str) -> list[tuple[str, int]]:
    """(kernel spec name, calls) that one decoder layer makes in `quant` form: the projections,
    the activation quantisations feeding int8 GEMMs, and attention (prefill or decode, by length)."""
    m = model
    int4 = {"group": m.group} if quant != "w8a8" else {}
    attn_width = m.heads * m.head_dim
    calls = [
        (make_spec("qkv_proj", hq=m.heads, hkv=m.kv_heads, d=m.head_dim, k=m.hidden, quant=quant, bias=m.qkv_bias,
                   rope=True, rope_theta=float(m.rope_theta), **int4).name, 1),
        (make_spec(f"qgemm_{quant}", n=m.hidden, k=attn_width, **int4).name, 1),
        (make_spec(f"qgemm_{quant}", n=2 * m.ffn, k=m.hidden, **int4).name, 1),
        (make_spec(f"qgemm_{quant}", n=m.hidden, k=m.ffn, **int4).name, 1),
        (make_spec("attention_prefill", hq=m.heads, hkv=m.kv_heads, d=m.head_dim).name, 1),
        (make_spec("attention_decode", hq=m.heads, hkv=m.kv_heads, d=m.head_dim).name, 1),
    ]
    if int8_activations(quant):  # inputs of qkv and gate/up, of o, of down
        for k in (m.hidden, m.hidden, attn_width, m.ffn):
            calls.append((make_spec("quantize_per_token", k=k).name, 1))
    counts: dict[str, int] = {}
    for name, n in calls:
        counts[name] = counts.get(name, 0) + n
    return list(counts.items())


def describe(model: ModelShape) -> dict:
    return asdict(model)

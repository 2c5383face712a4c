"""A llama-architecture GGUF file: its shape (from metadata) and its tensors in our kernels' weight forms.

Quantized blocks map onto the ops exactly, never requantised:
  Q4_0  v = d (q - 8)            -> int4 w = q - 8, w_scale = d                (qgemm_w4a16)
  Q4_1  v = d q + m              -> int4 w = q - 8, w_scale = d, w_min = m + 8 d (qgemm_w4a16 min=True)
  Q8_0  v = d q                  -> int8 w = q,     w_scale = d                (qgemm_w8a16 group=32)
  Q5_0, Q5_1, Q4_K, Q5_K, Q6_K   -> unsigned w = q and the block's own scales (qgemm_gguf, whose
                                    GGUF_FORMS say each type's terms)
so `QuantWeight.dequantize()` equals gguf's own dequantisation. The reader memory-maps the file:
weights are read when a kernel packs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.models import MAX_DIM, ModelShape
from compiler.ops.gguf_forms import GGUF_FORMS, dequantize as dequantize_gguf

BLOCK = 32  # values per block of the 32-value types (Q4_0, Q4_1, Q8_0, Q5_0, Q5_1)
LEGACY = ("Q4_0", "Q4_1", "Q8_0")  # the types of qgemm_w4a16 / qgemm_w8a16 (and the int8-activation forms)
SUPPORTED = (*LEGACY, *GGUF_FORMS)
FLOAT_TYPES = ("F32", "F16")
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34, "Q5_0": 22, "Q5_1": 24, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}


def block_values(kind: str) -> int:
    """Values per GGUF block of this type."""
    return GGUF_FORMS[kind].block if kind in GGUF_FORMS else BLOCK


class GGUFError(ValueError):
    """The file is not a GGUF this project can run (names the field or tensor that is wrong)."""


@dataclass(frozen=True)
class QuantWeight:
    """One [N, K] weight in logical form: `arrays` are the kernel's logical weight arguments, each
    [N, ...] (rows are output channels): int values "w" and the type's block scales (see the module doc)."""
    kind: str  # GGUF type name
    arrays: dict[str, np.ndarray]

    @property
    def w(self) -> np.ndarray:
        return self.arrays["w"]

    def dequantize(self) -> np.ndarray:
        if self.kind in GGUF_FORMS:
            return dequantize_gguf(self.kind, self.arrays)
        n, k = self.w.shape
        blocks = self.w.reshape(n, k // BLOCK, BLOCK).astype(np.float32) * self.arrays["w_scale"][..., None]
        if "w_min" in self.arrays:
            blocks = blocks + self.arrays["w_min"][..., None]
        return blocks.reshape(n, k)

    def rows(self, order: np.ndarray) -> "QuantWeight":
        """The same weight with its output rows reordered (exact: blocks run along K)."""
        return QuantWeight(self.kind, {name: np.ascontiguousarray(a[order]) for name, a in self.arrays.items()})

    @staticmethod
    def concat(parts: list["QuantWeight"]) -> "QuantWeight":
        kinds = {p.kind for p in parts}
        if len(kinds) != 1:
            raise GGUFError(f"weights fused into one GEMM have different types: {sorted(kinds)}")
        return QuantWeight(parts[0].kind, {name: np.concatenate([p.arrays[name] for p in parts])
                                           for name in parts[0].arrays})


def _fp16(blocks: np.ndarray, start: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[..., start:start + 2]).view(np.float16)[..., 0]


def _nibbles(quants: np.ndarray, runs: int) -> np.ndarray:
    """[..., bytes] -> [..., 2 * bytes] values: each run of `runs` bytes gives its low nibbles, then
    its high nibbles (GGUF's order: Q4_0 / Q5_x runs of 16, K-quants of 32)."""
    runs_of = quants.reshape(*quants.shape[:-1], -1, 1, runs) >> np.array([0, 4], np.uint8).reshape(2, 1)
    return (runs_of & 15).reshape(*quants.shape[:-1], -1)


def _high_bits(planes: np.ndarray, width: int, runs: int) -> np.ndarray:
    """[..., bytes] -> values' bits above the nibble: bits i*width.. of each run of `runs` bytes
    hold the high bits of the run's i-th set of `runs` values (K-quants' qh layout)."""
    shifts = np.arange(0, 8, width, dtype=np.uint8).reshape(-1, 1)
    fields = planes.reshape(*planes.shape[:-1], -1, 1, runs) >> shifts
    return (fields & ((1 << width) - 1)).reshape(*planes.shape[:-1], -1)


def _legacy(kind: str, blocks: np.ndarray, n: int, k: int) -> dict[str, np.ndarray]:
    d = _fp16(blocks, 0).astype(np.float32)
    if kind == "Q8_0":
        return {"w": np.ascontiguousarray(blocks[..., 2:]).view(np.int8).reshape(n, k), "w_scale": d}
    q = _nibbles(blocks[..., 4:] if kind == "Q4_1" else blocks[..., 2:], 16).astype(np.int8)
    out = {"w": (q - 8).reshape(n, k), "w_scale": d}
    if kind == "Q4_1":
        out["w_min"] = _fp16(blocks, 2).astype(np.float32) + 8.0 * d
    return out


def _q5(kind: str, blocks: np.ndarray, n: int, k: int) -> dict[str, np.ndarray]:
    """Q5_0 / Q5_1: d (, m), 32 fifth bits as a little-endian uint32 (bit j: value j), 16 bytes of nibbles."""
    start = 4 if kind == "Q5_1" else 2
    qh = np.ascontiguousarray(blocks[..., start:start + 4]).view("<u4")
    fifth = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
    out = {"w": (_nibbles(blocks[..., start + 4:], 16) | (fifth << 4)).reshape(n, k), "w_d": _fp16(blocks, 0)}
    if kind == "Q5_1":
        out["w_m"] = _fp16(blocks, 2)
    return out


def _k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K's 12 bytes -> eight 6-bit sub-block scales and eight minimums (ggml's get_scale_min_k4)."""
    d, m, low = (packed[..., 4 * i:4 * i + 4] for i in range(3))
    scales = np.concatenate([d & 63, (low & 15) | ((d >> 2) & 48)], axis=-1)
    mins = np.concatenate([m & 63, (low >> 4) | ((m >> 2) & 48)], axis=-1)
    return scales, mins


def _k_quant(kind: str, blocks: np.ndarray, n: int, k: int) -> dict[str, np.ndarray]:
    nblocks = k // 256
    if kind == "Q6_K":  # ql[128], qh[64], int8 scales[16], d
        low = _nibbles(blocks[..., :128], 64)
        q = low | (_high_bits(blocks[..., 128:192], 2, 32) << 4)
        return {"w": q.reshape(n, k), "w_d": _fp16(blocks, 208),
                "w_sub": np.ascontiguousarray(blocks[..., 192:208]).view(np.int8).reshape(n, nblocks * 16)}
    scales, mins = _k_scales(blocks[..., 4:16])
    if kind == "Q4_K":  # d, dmin, scales[12], qs[128]
        q = _nibbles(blocks[..., 16:], 32)
    else:  # Q5_K: d, dmin, scales[12], qh[32], qs[128]
        q = _nibbles(blocks[..., 48:], 32) | (_high_bits(blocks[..., 16:48], 1, 32) << 4)
    return {"w": q.reshape(n, k), "w_d": _fp16(blocks, 0), "w_dmin": _fp16(blocks, 2),
            "w_sub": scales.astype(np.int8).reshape(n, nblocks * 8),
            "w_submin": mins.astype(np.int8).reshape(n, nblocks * 8)}


def decode_blocks(kind: str, raw: np.ndarray, n: int, k: int) -> QuantWeight:
    """GGUF block bytes [N, K / block values * block bytes] -> QuantWeight (see the module doc for the forms)."""
    if kind not in SUPPORTED:
        raise GGUFError(f"weight type {kind} is not supported; supported: {', '.join(SUPPORTED)}")
    values = block_values(kind)
    if k % values:
        raise GGUFError(f"{kind} weight with K={k}: not a whole number of {values}-value blocks")
    blocks = np.asarray(raw, dtype=np.uint8).reshape(n, k // values, -1)
    if blocks.shape[-1] != BLOCK_BYTES[kind]:
        raise GGUFError(f"{kind} weight: blocks of {blocks.shape[-1]} bytes, the type has {BLOCK_BYTES[kind]}")
    if kind in LEGACY:
        arrays = _legacy(kind, blocks, n, k)
    elif kind in ("Q5_0", "Q5_1"):
        arrays = _q5(kind, blocks, n, k)
    else:
        arrays = _k_quant(kind, blocks, n, k)
    return QuantWeight(kind, arrays)


class GGUFModel:
    """Metadata and tensors of a llama-architecture GGUF."""

    def __init__(self, path: str | Path):
        import gguf

        self.path = Path(path)
        if self.path.is_dir():
            raise GGUFError(f"{self.path} is a folder, not a GGUF file")
        if not self.path.is_file():
            raise GGUFError(f"GGUF file {self.path} does not exist")
        try:
            self._reader = gguf.GGUFReader(str(self.path))
        except Exception as err:  # gguf raises ValueError/struct errors on malformed files
            raise GGUFError(f"{self.path} is not a readable GGUF file: {err}") from None
        self._tensors = {t.name: t for t in self._reader.tensors}
        arch = self.field("general.architecture")
        if arch != "llama":
            raise GGUFError(f"{self.path.name}: architecture {arch!r} is not supported (only 'llama')")
        self.shape = self._shape()

    def has(self, key: str) -> bool:
        return key in self._reader.fields

    def field(self, key: str, default=None):
        f = self._reader.fields.get(key)
        if f is None:
            if default is not None:
                return default
            raise GGUFError(f"{self.path.name}: metadata key {key!r} is missing")
        return f.contents()

    def _shape(self) -> ModelShape:
        """The model's shape from its metadata, every value checked up front and named with the key
        it came from (a bad one would otherwise fail much later, after a build, with another message)."""
        hidden = self._count("llama.embedding_length")
        self._check_tensor("token_embd.weight", (hidden, None), what="llama.embedding_length")
        heads = self._count("llama.attention.head_count")
        kv_heads = self._count("llama.attention.head_count_kv", heads)
        if heads % kv_heads:
            raise GGUFError(f"{self.path.name}: llama.attention.head_count_kv {kv_heads} does not divide "
                            f"llama.attention.head_count {heads}")
        if not self.has("llama.attention.key_length") and hidden % heads:
            raise GGUFError(f"{self.path.name}: llama.embedding_length {hidden} is not a multiple of "
                            f"llama.attention.head_count {heads}")
        head_dim = self._count("llama.attention.key_length", hidden // heads)
        value_dim = self._count("llama.attention.value_length", head_dim)
        if value_dim != head_dim or head_dim % 2:
            raise GGUFError(f"{self.path.name}: heads of {head_dim} key and {value_dim} value dimensions are not "
                            "supported (they must be equal and even)")
        rotated = self._count("llama.rope.dimension_count", head_dim)
        if rotated != head_dim:
            raise GGUFError(f"{self.path.name}: RoPE over {rotated} of {head_dim} head dimensions is not supported")
        self._positive("llama.attention.layer_norm_rms_epsilon", 1e-5)
        shape = ModelShape(
            name=self.path.stem.lower(), hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
            ffn=self._count("llama.feed_forward_length"), qkv_bias="blk.0.attn_q.bias" in self._tensors,
            rope_theta=self._positive("llama.rope.freq_base", 10000.0), group=BLOCK,
            description=str(self.field("general.name", self.path.stem)), layers=self._count("llama.block_count"))
        self._check_tensors(shape)
        self._check_vocabulary()
        return shape

    def _count(self, key: str, default: int | None = None) -> int:
        """A positive integer of the metadata (a dimension, a head or layer count)."""
        value = self.field(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIM:
            raise GGUFError(f"{self.path.name}: metadata {key} must be a positive integer of at most {MAX_DIM}, "
                            f"got {value!r:.60}")
        return value

    def _positive(self, key: str, default: float) -> float:
        """A positive finite number of the metadata (epsilon, RoPE base)."""
        value = self.field(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise GGUFError(f"{self.path.name}: metadata {key} must be a positive number, got {value!r:.60}")
        return float(value)

    def _check_tensor(self, name: str, shape: tuple, *, what: str = "the metadata", floats: bool = False) -> None:
        """The tensor exists with this shape (GGUF order: K first; None: any) and, for norms and
        biases, a float type."""
        tensor = self._tensor(name)
        got = tuple(int(d) for d in tensor.shape)
        if len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
            want = ", ".join("*" if w is None else str(w) for w in shape)
            raise GGUFError(f"{self.path.name}: tensor {name} has shape {list(got)}, but {what} makes it [{want}]")
        if floats and tensor.tensor_type.name not in FLOAT_TYPES:
            raise GGUFError(f"{self.path.name}: {name} is {tensor.tensor_type.name}, expected one of {FLOAT_TYPES}")

    def _check_tensors(self, m: ModelShape) -> None:
        """Every tensor a llama decoder reads, with the shape the metadata implies."""
        q, kv, vocab = m.heads * m.head_dim, m.kv_heads * m.head_dim, int(self._tensor("token_embd.weight").shape[1])
        expected = {"output_norm.weight": (m.hidden,)}
        if "output.weight" in self._tensors:
            expected["output.weight"] = (m.hidden, vocab)
        for layer in range(m.layers):  # a block_count beyond the file's layers stops at the first missing tensor
            for part, shape in (("attn_norm", (m.hidden,)), ("attn_q", (m.hidden, q)), ("attn_k", (m.hidden, kv)),
                                ("attn_v", (m.hidden, kv)), ("attn_output", (q, m.hidden)), ("ffn_norm", (m.hidden,)),
                                ("ffn_gate", (m.hidden, m.ffn)), ("ffn_up", (m.hidden, m.ffn)),
                                ("ffn_down", (m.ffn, m.hidden))):
                self._check_tensor(f"blk.{layer}.{part}.weight", shape, floats=len(shape) == 1)
            for part, width in (("attn_q", q), ("attn_k", kv), ("attn_v", kv)) if m.qkv_bias else ():
                self._check_tensor(f"blk.{layer}.{part}.bias", (width,), floats=True)
        for name, shape in expected.items():
            self._check_tensor(name, shape, floats=len(shape) == 1)

    def _check_vocabulary(self) -> None:
        """The tokenizer metadata, where present, agrees with the embedding: one token (and one token
        type) per row, merges as pairs, special ids in range."""
        vocab = self.vocab_size
        tokens, types = self.field("tokenizer.ggml.tokens", []), self.field("tokenizer.ggml.token_type", [])
        merges = self.field("tokenizer.ggml.merges", [])
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise GGUFError(f"{self.path.name}: metadata tokenizer.ggml.tokens must be a list of strings")
        if tokens and len(tokens) != vocab:
            raise GGUFError(f"{self.path.name}: tokenizer.ggml.tokens has {len(tokens)} tokens but token_embd.weight "
                            f"has {vocab} rows")
        if not isinstance(types, list) or not all(isinstance(t, int) for t in types) or len(types) not in (0, vocab):
            raise GGUFError(f"{self.path.name}: metadata tokenizer.ggml.token_type must hold one integer per token")
        if not isinstance(merges, list) or not all(isinstance(m, str) and " " in m for m in merges):
            raise GGUFError(f"{self.path.name}: metadata tokenizer.ggml.merges must be a list of 'left right' pairs")
        for key in ("bos", "eos", "eot"):
            value = self.field(f"tokenizer.ggml.{key}_token_id", 0)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab:
                raise GGUFError(f"{self.path.name}: metadata tokenizer.ggml.{key}_token_id must be a token id "
                                f"in [0, {vocab}), got {value!r:.60}")

    @property
    def tensor_names(self) -> set[str]:
        return set(self._tensors)

    @property
    def rms_eps(self) -> float:
        return self._positive("llama.attention.layer_norm_rms_epsilon", 1e-5)

    @property
    def vocab_size(self) -> int:
        return int(self._tensor("token_embd.weight").shape[1])

    def _tensor(self, name: str):
        tensor = self._tensors.get(name)
        if tensor is None:
            raise GGUFError(f"{self.path.name}: tensor {name!r} is missing")
        return tensor

    def type_of(self, name: str) -> str:
        return self._tensor(name).tensor_type.name

    def float_tensor(self, name: str) -> np.ndarray:
        """A float32 copy of an F32/F16 tensor (norm weights)."""
        tensor = self._tensor(name)
        if tensor.tensor_type.name not in FLOAT_TYPES:
            raise GGUFError(f"{self.path.name}: {name} is {tensor.tensor_type.name}, expected one of {FLOAT_TYPES}")
        return np.array(tensor.data, dtype=np.float32).reshape(tuple(int(d) for d in reversed(tensor.shape)))

    def quant_weight(self, name: str) -> QuantWeight:
        """An [N, K] projection (GGUF stores shape [K, N]) in logical form; only SUPPORTED types."""
        tensor = self._tensor(name)
        kind = tensor.tensor_type.name
        if kind not in SUPPORTED:
            raise GGUFError(f"{self.path.name}: {name} is {kind}; supported weight types are {', '.join(SUPPORTED)}")
        k, n = (int(d) for d in tensor.shape)
        return decode_blocks(kind, tensor.data, n, k)

    def embedding_rows(self, tokens: np.ndarray) -> np.ndarray:
        """float32 [T, hidden] rows of the token embedding, dequantised exactly (any SUPPORTED or float type)."""
        import gguf

        tensor = self._tensor("token_embd.weight")
        rows = np.asarray(tensor.data)[np.asarray(tokens)]
        if tensor.tensor_type.name in FLOAT_TYPES:
            return rows.astype(np.float32)
        return gguf.quants.dequantize(rows, tensor.tensor_type).astype(np.float32)

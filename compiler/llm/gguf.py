"""A llama-architecture GGUF file: its shape (from metadata) and its tensors in our kernels' weight forms.

Quantized blocks map onto the ops exactly, never requantised (32 values per block, fp16 scales):
  Q4_0  v = d (q - 8)            -> int4 w = q - 8, w_scale = d                (qgemm_w4a16)
  Q4_1  v = d q + m              -> int4 w = q - 8, w_scale = d, w_min = m + 8 d (qgemm_w4a16 min=True)
  Q8_0  v = d q                  -> int8 w = q,     w_scale = d                (qgemm_w8a16 group=32)
so `QuantWeight.dequantize()` equals gguf's own dequantisation. The reader memory-maps the file:
weights are read when a kernel packs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.models import ModelShape

BLOCK = 32
SUPPORTED = ("Q4_0", "Q4_1", "Q8_0")
FLOAT_TYPES = ("F32", "F16")


class GGUFError(ValueError):
    """The file is not a GGUF this project can run (names the field or tensor that is wrong)."""


@dataclass(frozen=True)
class QuantWeight:
    """One [N, K] weight in logical form: int values, per-block scales and (Q4_1) additive minimums."""
    kind: str  # GGUF type name: Q4_0, Q4_1, Q8_0
    w: np.ndarray  # int8 [N, K]: int4 values in [-8, 7] or int8 values
    scale: np.ndarray  # float32 [N, K/32]
    minimum: np.ndarray | None  # float32 [N, K/32] (Q4_1 only)

    @property
    def bits(self) -> int:
        return 8 if self.kind == "Q8_0" else 4

    def dequantize(self) -> np.ndarray:
        n, k = self.w.shape
        blocks = self.w.reshape(n, k // BLOCK, BLOCK).astype(np.float32) * self.scale[..., None]
        if self.minimum is not None:
            blocks = blocks + self.minimum[..., None]
        return blocks.reshape(n, k)

    def rows(self, order: np.ndarray) -> "QuantWeight":
        """The same weight with its output rows reordered (exact: blocks run along K)."""
        pick = (lambda a: None if a is None else np.ascontiguousarray(a[order]))
        return QuantWeight(self.kind, pick(self.w), pick(self.scale), pick(self.minimum))

    @staticmethod
    def concat(parts: list["QuantWeight"]) -> "QuantWeight":
        kinds = {p.kind for p in parts}
        if len(kinds) != 1:
            raise GGUFError(f"weights fused into one GEMM have different types: {sorted(kinds)}")
        mins = [p.minimum for p in parts]
        return QuantWeight(parts[0].kind, np.concatenate([p.w for p in parts]),
                           np.concatenate([p.scale for p in parts]),
                           None if mins[0] is None else np.concatenate(mins))


def _fp16(blocks: np.ndarray, start: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[..., start:start + 2]).view(np.float16)[..., 0].astype(np.float32)


def decode_blocks(kind: str, raw: np.ndarray, n: int, k: int) -> QuantWeight:
    """GGUF block bytes [N, K/32 * block bytes] -> QuantWeight (see the module doc for the forms)."""
    if k % BLOCK:
        raise GGUFError(f"{kind} weight with K={k}: not a whole number of {BLOCK}-value blocks")
    blocks = np.asarray(raw, dtype=np.uint8).reshape(n, k // BLOCK, -1)
    if kind == "Q8_0":
        w = np.ascontiguousarray(blocks[..., 2:]).view(np.int8).reshape(n, k)
        return QuantWeight(kind, w, _fp16(blocks, 0), None)
    quants = blocks[..., 4:] if kind == "Q4_1" else blocks[..., 2:]
    # 16 bytes per block: value j in the low nibble of byte j, value j + 16 in its high nibble
    q = np.concatenate([quants & 15, quants >> 4], axis=-1).astype(np.int8)
    w = (q - 8).reshape(n, k)
    d = _fp16(blocks, 0)
    minimum = _fp16(blocks, 2) + 8.0 * d if kind == "Q4_1" else None
    return QuantWeight(kind, w, d, minimum)


class GGUFModel:
    """Metadata and tensors of a llama-architecture GGUF."""

    def __init__(self, path: str | Path):
        import gguf

        self.path = Path(path)
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
        hidden = int(self.field("llama.embedding_length"))
        heads = int(self.field("llama.attention.head_count"))
        head_dim = int(self.field("llama.attention.key_length", hidden // heads))
        rotated = int(self.field("llama.rope.dimension_count", head_dim))
        if rotated != head_dim:
            raise GGUFError(f"{self.path.name}: RoPE over {rotated} of {head_dim} head dimensions is not supported")
        return ModelShape(
            name=self.path.stem.lower(), hidden=hidden, heads=heads,
            kv_heads=int(self.field("llama.attention.head_count_kv", heads)), head_dim=head_dim,
            ffn=int(self.field("llama.feed_forward_length")), qkv_bias="blk.0.attn_q.bias" in self._tensors,
            rope_theta=float(self.field("llama.rope.freq_base", 10000.0)), group=BLOCK,
            description=str(self.field("general.name", self.path.stem)), layers=int(self.field("llama.block_count")))

    @property
    def tensor_names(self) -> set[str]:
        return set(self._tensors)

    @property
    def rms_eps(self) -> float:
        return float(self.field("llama.attention.layer_norm_rms_epsilon", 1e-5))

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

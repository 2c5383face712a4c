"""GGUF's 5- and 6-bit and K-quant block types as data (bits, blocks, offset, minimum kind), their
exact float32 dequantisation, and random weights of their ranges: what the qgemm_gguf kernels
(ops/qgemm_gguf.py, qgemm_gguf_int8.py) and the GGUF reader (llm/gguf.py) share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GGUFForm:
    """One GGUF type's block structure, as the kernel reads it."""
    bits: int  # bits per value (4, 5 or 6): a nibble plane plus bits - 4 high bits
    block: int  # values per float16 scale d
    sub: int  # values per sub-block (its own integer scale and minimum); == block: no sub-scales
    offset: int  # subtracted from the unsigned value: Q5_0 16, Q6_K 32
    minimum: str  # "" | "block": a float16 m per block added (Q5_1) | "sub": dmin * mn subtracted (Q4_K, Q5_K)

    @property
    def sub_scales(self) -> bool:
        return self.sub != self.block

    @property
    def high_values_per_byte(self) -> int:
        """Values whose high bits share one byte of the high plane (2: no high plane, as the nibbles)."""
        return 8 // (self.bits - 4) if self.bits > 4 else 2


def scale_fields(form: GGUFForm) -> list[tuple[str, int, str, str]]:
    """The kernel arguments holding a type's scales beside its values: (name, values per entry,
    dtype, doc), in argument order; each form of the kernel lays them out its own way."""
    fields = [("w_d", form.block, "float16", "block scale d [N, K/block]")]
    if form.sub_scales:
        fields.append(("w_sub", form.sub, "int8", "sub-block scale s [N, K/sub] (w = d s q ...)"))
    if form.minimum == "sub":
        fields += [("w_dmin", form.block, "float16", "block minimum scale dmin [N, K/block]"),
                   ("w_submin", form.sub, "int8", "sub-block minimum mn [N, K/sub] (w = ... - dmin mn)")]
    elif form.minimum == "block":
        fields.append(("w_m", form.block, "float16", "block minimum m [N, K/block] (w = d q + m)"))
    return fields


GGUF_FORMS = {
    "Q5_0": GGUFForm(bits=5, block=32, sub=32, offset=16, minimum=""),
    "Q5_1": GGUFForm(bits=5, block=32, sub=32, offset=0, minimum="block"),
    "Q4_K": GGUFForm(bits=4, block=256, sub=32, offset=0, minimum="sub"),
    "Q5_K": GGUFForm(bits=5, block=256, sub=32, offset=0, minimum="sub"),
    "Q6_K": GGUFForm(bits=6, block=256, sub=16, offset=32, minimum=""),
}


def dequantize(kind: str, weights: dict[str, np.ndarray]) -> np.ndarray:
    """float32 [N, K] from the logical weights, with the float32 operations in gguf's (and ggml's)
    order, so the values equal `gguf.quants.dequantize` of the same blocks bit for bit."""
    form = GGUF_FORMS[kind]
    q = weights["w"]
    n, k = q.shape

    def per_value(a):  # [N, K/sub] -> [N, K/sub, 1]: one entry per sub-block, broadcast over its values
        return a.astype(np.float32)[..., None]

    if form.sub_scales:
        d = np.repeat(weights["w_d"].astype(np.float32), form.block // form.sub, axis=1)
        scale = d * weights["w_sub"].astype(np.float32)  # float32 d * s, as gguf and ggml
    else:
        scale = weights["w_d"].astype(np.float32)
    grouped = q.reshape(n, k // form.sub, form.sub)
    if form.offset:  # Q5_0, Q6_K: (q - offset) as an integer, then d * it
        w = per_value(scale) * (grouped.astype(np.int16) - form.offset).astype(np.float32)
    else:
        w = per_value(scale) * grouped.astype(np.float32)
    if form.minimum == "sub":
        dmin = np.repeat(weights["w_dmin"].astype(np.float32), form.block // form.sub, axis=1)
        w = w - per_value(dmin * weights["w_submin"].astype(np.float32))
    elif form.minimum == "block":
        w = w + per_value(weights["w_m"])
    return w.reshape(n, k)


def gguf_random_weights(kind: str, n: int, k: int, rng) -> dict[str, np.ndarray]:
    """Logical weights of GGUF's ranges: scales of a typical magnitude, integer sub-scales as its
    quantisers make them (6-bit unsigned for Q4_K / Q5_K, int8 for Q6_K)."""
    form = GGUF_FORMS[kind]
    out = {"w": rng.integers(0, 2 ** form.bits, (n, k), dtype=np.uint8),
           "w_d": rng.uniform(0.0005, 0.002, (n, k // form.block)).astype(np.float16)}
    if form.sub_scales:
        low, high = (-128, 128) if form.offset else (0, 64)
        out["w_sub"] = rng.integers(low, high, (n, k // form.sub), dtype=np.int8)
    if form.minimum == "sub":
        out["w_dmin"] = rng.uniform(0.0005, 0.002, (n, k // form.block)).astype(np.float16)
        out["w_submin"] = rng.integers(0, 64, (n, k // form.sub), dtype=np.int8)
    elif form.minimum == "block":
        out["w_m"] = rng.uniform(-0.3, 0.0, (n, k // form.block)).astype(np.float16)
    return out


# The int8-activation form of each type (the q8 model path), as the activation blocks it takes
# (ops/qgemm_gguf_int8.py). 4-bit: every target's dot product; 5- and 6-bit: where the target's dot
# product has a form for values above a nibble (ARM SDOT, x86 byte products: schedules/cpu/intrinsics).
INT8_ACTIVATIONS = {"Q4_K": "q8_1", "Q5_K": "q8_1", "Q5_1": "q8_1", "Q5_0": "q8_0", "Q6_K": "q8_0"}

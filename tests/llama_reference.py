"""An independent float64 numpy llama forward pass straight from gguf's own dequantisation, for tests.

It keeps GGUF's row order and applies llama.cpp's adjacent-pair RoPE, so it also checks the decoder's
row reordering and rotate-half RoPE.
"""

from __future__ import annotations

import numpy as np


def _weight(model, name):
    import gguf

    tensor = model._tensor(name)
    if tensor.tensor_type.name in ("F32", "F16"):
        return np.asarray(tensor.data, dtype=np.float64)
    return gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).astype(np.float64)


def _rope_pairs(x, positions, theta):
    """x [T, heads, D]: rotate (x[2i], x[2i+1]) by positions * theta^(-2i/D)."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = positions[:, None, None] * inv[None, None]
    cos, sin = np.cos(ang), np.sin(ang)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def logits(model, tokens: list[int]) -> np.ndarray:
    """float64 logits [T, vocab] of a whole sequence (causal)."""
    m = model.shape
    t = len(tokens)
    eps = model.rms_eps
    emb = _weight(model, "token_embd.weight")
    x = emb[np.asarray(tokens)]
    pos = np.arange(t, dtype=np.float64)

    def norm(v, w):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps) * w

    mask = np.triu(np.full((t, t), -np.inf), 1)
    group = m.heads // m.kv_heads
    for layer in range(m.layers):
        def w(part):
            return _weight(model, f"blk.{layer}.{part}.weight")
        h = norm(x, w("attn_norm"))
        q = _rope_pairs((h @ w("attn_q").T).reshape(t, m.heads, m.head_dim), pos, m.rope_theta)
        k = _rope_pairs((h @ w("attn_k").T).reshape(t, m.kv_heads, m.head_dim), pos, m.rope_theta)
        v = (h @ w("attn_v").T).reshape(t, m.kv_heads, m.head_dim)
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(m.head_dim) + mask
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        attn = np.einsum("hts,shd->thd", p, v).reshape(t, -1)
        x = x + attn @ w("attn_output").T
        h = norm(x, w("ffn_norm"))
        gate, up = h @ w("ffn_gate").T, h @ w("ffn_up").T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w("ffn_down").T
    head = "output.weight" if "output.weight" in model.tensor_names else "token_embd.weight"
    return norm(x, _weight(model, "output_norm.weight")) @ _weight(model, head).T

"""What users would run instead of our kernels, on the same logical inputs: PyTorch CPU (when
installed: the `bench` extra) and numpy. Each contender is a zero-argument callable prepared
outside the timed region (weights packed, inputs converted), so only the math is timed."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

Contender = tuple[str, Callable[[], object]]

# settle(): the process counts as idle once its threads used under a tenth of one core over a
# window; it waits at most SETTLE_LIMIT_SECONDS (a thread that never idles is not ours to wait for).
SETTLE_WINDOW_SECONDS = 0.005
SETTLE_LIMIT_SECONDS = 2.0


def settle() -> float:
    """Wait until this process's thread pools have stopped spinning; returns the seconds waited.
    Run before each contestant's timed calls (bench's kernel rows, the model row): the pool of the
    one before keeps spinning after its last job and, on a machine with few cores, takes a core
    from the next. TVM's workers spin TVM_THREAD_POOL_SPIN_COUNT yields (TVM's default 300,000,
    ~100-150 ms on this VM; runtime.host sets 20,000, ~12 ms); PyTorch's OpenMP workers ~10-20 ms.
    The fixed 20 ms pause used before did not cover TVM's default: torch SDPA timed after our
    attention decode ran 30x slower (48 ms a call at L=2048, 1.4 ms alone), and our decode right
    after SDPA 79.6 us against 42.4 us alone."""
    start = time.perf_counter()
    while True:
        cpu = time.process_time()  # CPU time of every thread of the process
        time.sleep(SETTLE_WINDOW_SECONDS)
        if (time.process_time() - cpu < 0.1 * SETTLE_WINDOW_SECONDS
                or time.perf_counter() - start > SETTLE_LIMIT_SECONDS):
            return time.perf_counter() - start


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def set_threads(count: int) -> None:
    """Give PyTorch's intra-op pool the thread count our kernels use."""
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(count)


def for_kernel(spec, logical: dict[str, np.ndarray]) -> list[Contender]:
    """Contenders for one kernel at the inputs' shapes; empty for ops nobody else provides."""
    torch = _torch()
    op = spec.op
    out: list[Contender] = []
    if op.startswith("qgemm") or op == "qkv_proj":
        x, w = _dequantized(logical)
        out.append(("numpy fp32 matmul", lambda: x @ w.T))
        if torch is not None:
            out += _torch_gemms(torch, spec, logical, x, w)
    elif op == "attention_prefill" and torch is not None:
        q = torch.from_numpy(logical["q"])
        k, v = _float_caches(torch, logical)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        s, n = q.shape[1], k.shape[1]
        if s == n:
            out.append(("torch SDPA (causal, GQA)", lambda: sdpa(q, k, v, is_causal=True, enable_gqa=True)))
        else:  # SDPA's is_causal aligns the mask top-left; a prefix needs it bottom-right (row i sees P + i)
            mask = torch.ones(s, n, dtype=torch.bool).tril(n - s)
            out.append(("torch SDPA (prefix mask, GQA)", lambda: sdpa(q, k, v, attn_mask=mask, enable_gqa=True)))
    elif op == "attention_decode" and torch is not None:
        q = torch.from_numpy(logical["q"])[:, None, :]
        k, v = _float_caches(torch, logical)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        out.append(("torch SDPA (GQA)", lambda: sdpa(q, k, v, enable_gqa=True)))
    elif op == "quantize_per_token":
        from compiler.ops.quantize import quantize_reference

        x = logical["x"]
        out.append(("numpy", lambda: quantize_reference(x)))
    return out


def separate_qkv(spec, kernels, logical: dict[str, np.ndarray]) -> Contender:
    """Our own three GEMM kernels (q, k, v rows of the fused weight) followed by a separate
    rotate-half RoPE in PyTorch (numpy without it): what the fused qkv_proj kernel replaces."""
    hq, hkv, d = spec.dim("hq"), spec.dim("hkv"), spec.dim("d")
    bounds = np.cumsum([0, hq * d, hkv * d, hkv * d])
    packed = []
    for kernel, lo, hi in zip(kernels, bounds[:-1], bounds[1:]):
        weights = {name: logical[name][lo:hi] for name in kernel.logical_weights}
        packed.append(kernel.pack(**weights))
    inputs = {name: logical[name] for name in ("x", "x_scale") if name in logical}
    rope = _rope(spec, logical.get("positions"))

    def run():
        q, k, v = (kernel(**inputs, **weights) for kernel, weights in zip(kernels, packed))
        return rope(q, hq), rope(k, hkv), v.reshape(-1, hkv, d).transpose(1, 0, 2)

    return ("ours: 3 separate GEMMs + RoPE", run)


def _rope(spec, positions):
    """t [M, heads * d] -> rotate-half RoPE'd [heads, M, d] (a head transpose only without RoPE)."""
    d = spec.dim("d")
    if positions is None:
        return lambda t, heads: t.reshape(-1, heads, d).transpose(1, 0, 2)
    inv_freq = spec.opt("rope_theta") ** (-np.arange(0, d // 2, dtype=np.float64) * 2.0 / d)
    table = np.arange(int(positions.max()) + 1)[:, None] * inv_freq[None]
    torch = _torch()
    if torch is None:
        cos, sin = np.cos(table).astype(np.float32), np.sin(table).astype(np.float32)

        def rope_numpy(t, heads):
            t = t.reshape(-1, heads, d).transpose(1, 0, 2)
            c, s = cos[positions][None], sin[positions][None]
            x1, x2 = t[..., : d // 2], t[..., d // 2:]
            return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)

        return rope_numpy
    cos, sin = torch.from_numpy(np.cos(table).astype(np.float32)), torch.from_numpy(np.sin(table).astype(np.float32))
    pos = torch.from_numpy(positions.astype(np.int64))

    def rope_torch(t, heads):
        t = torch.from_numpy(t).view(-1, heads, d).transpose(0, 1)
        c, s = cos[pos][None], sin[pos][None]
        x1, x2 = t[..., : d // 2], t[..., d // 2:]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    return rope_torch


def _float_caches(torch, logical: dict):
    """The K and V caches SDPA takes: float32 (an int8 cache is raced against the float32 cache a
    user would keep otherwise, holding its values)."""
    from compiler.ops.attention import dequantized_caches

    scales = (logical.get("k_scale"), logical.get("v_scale"))
    k, v = dequantized_caches(logical["k_cache"], logical["v_cache"], *scales)
    return torch.from_numpy(np.ascontiguousarray(k, np.float32)), torch.from_numpy(np.ascontiguousarray(v, np.float32))


def _dequantized(logical) -> tuple[np.ndarray, np.ndarray]:
    """fp32 activations and weights carrying the same values as the quantized inputs."""
    x = logical["x"].astype(np.float32)
    if "x_scale" in logical:
        x = x * logical["x_scale"][:, None]
    w = logical["w"].astype(np.float32)
    scale = logical["w_scale"]
    group = w.shape[1] // scale.shape[1] if scale.ndim == 2 else w.shape[1]
    if "w_zero" in logical:
        w = w - np.repeat(logical["w_zero"], group, axis=1)
    w = w * (np.repeat(scale, group, axis=1) if scale.ndim == 2 else scale[:, None])
    return np.ascontiguousarray(x), np.ascontiguousarray(w)


def _torch_gemms(torch, spec, logical, x, w) -> list[Contender]:
    out: list[Contender] = []
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    out.append(("torch fp32 F.linear", lambda: torch.nn.functional.linear(xt, wt)))
    n, k = w.shape
    per_channel = logical["w_scale"].ndim == 1  # fbgemm and int8pack take one scale per channel
    if per_channel and (spec.op == "qgemm_w8a8" or (spec.op == "qkv_proj" and spec.opt("quant") == "w8a8")):
        scale = torch.from_numpy(logical["w_scale"].astype(np.float64))
        qweight = torch._make_per_channel_quantized_tensor(torch.from_numpy(logical["w"]), scale,
                                                           torch.zeros(n, dtype=torch.int64), 0)
        packed = torch.ops.quantized.linear_prepack(qweight, None)
        out.append(("torch fbgemm int8 (dynamic act quant incl.)",
                    lambda: torch.ops.quantized.linear_dynamic(xt, packed)))
        w8 = torch.from_numpy(logical["w"]).contiguous()
        scales8 = torch.from_numpy(logical["w_scale"].astype(np.float32))
        out.append(("torch int8 weight-only (fp32 act)", lambda: torch._weight_int8pack_mm(xt, w8, scales8)))
    if k % 32 == 0 and n % 16 == 0 and "w_scale" in logical and logical["w"].min() >= -8 and logical["w"].max() <= 7:
        group = k // logical["w_scale"].shape[1] if logical["w_scale"].ndim == 2 else None
        if group in (32, 64, 128, 256):
            w_u4 = torch.from_numpy(logical["w"].astype(np.int32) + 8)
            packed4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w_u4, 8)
            scales = torch.from_numpy(logical["w_scale"].T.astype(np.float32))  # [K/g, N]
            zeros = torch.zeros_like(scales)  # stored as u4 = w + 8, dequantised as (u4 - 8) * s + zero
            scales_zeros = torch.stack([scales, zeros], dim=-1).to(torch.bfloat16).contiguous()
            xb = xt.to(torch.bfloat16)
            out.append(("torch int4 weight-only (bf16 act)",
                        lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, packed4, group, scales_zeros)))
    return out

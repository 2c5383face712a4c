"""What the benchmark rows mean for users: the speed goals of the x86 host (met or missed, by how
much) and, for a model preset, decode tokens/s and prefill time-to-first-token estimated from the
measured kernel times (estimates: the decoder's small steps, embedding and LM head are excluded)."""

from __future__ import annotations

from compiler import models

PROMPT_TOKENS = 128  # the prefill the time-to-first-token estimate assumes
CONTEXT = 2048  # the KV length the decode estimate assumes

def memory_bound(sizes: dict[str, int]) -> bool:
    """Decode kernels: one token through the weights, or one query through the KV cache."""
    return sizes.get("M") == 1 or "L" in sizes


def _median(rows, kernel, sizes, contestant="ours", caches=("cold", "hot")):
    """Median ms of one contestant at these sizes, preferring the first cache state measured."""
    for cache in caches:
        for row in rows:
            if (row["kernel"], row["sizes"], row["cache"], row["contestant"]) == (kernel, sizes, cache, contestant):
                return row["median_ms"], cache
    return None, None


def _contestants(rows, kernel, sizes, cache):
    return {r["contestant"]: r for r in rows if (r["kernel"], r["sizes"], r["cache"]) == (kernel, sizes, cache)}


def goals(rows: list[dict]) -> list[dict]:
    """Each goal of the benchmark issue that these rows can judge: measured value, goal, met."""
    out = []

    def add(what, row, value, goal, unit):
        out.append({"goal": what, "kernel": row["kernel"], "sizes": row["sizes"], "cache": row["cache"],
                    "value": round(value, 3), "target": goal, "unit": unit, "met": value >= goal})

    def ratio_to(group, prefix):
        other = next((r for name, r in group.items() if name.startswith(prefix)), None)
        return other["median_ms"] / group["ours"]["median_ms"] if other else None

    for ours in (r for r in rows if r["contestant"] == "ours"):
        group = _contestants(rows, ours["kernel"], ours["sizes"], ours["cache"])
        op, sizes = ours["op"], ours["sizes"]
        if op in ("qgemm_w4a16", "qgemm_w8a8") and sizes.get("M") == 1 and ours["cache"] == "cold":
            add("decode GEMV >= 80% of memory bandwidth", ours, 100 * ours["bandwidth_fraction"], 80, "%")
            versus = ("torch int4", 3.0) if op == "qgemm_w4a16" else ("torch fbgemm", 1.0)
            ratio = ratio_to(group, versus[0])
            if ratio is not None:
                add(f"decode GEMV >= {versus[1]}x {versus[0]}", ours, ratio, versus[1], "x")
        if op.startswith("qgemm") and sizes.get("M") == 128:
            versus = ("torch fbgemm", 0.9) if op == "qgemm_w8a8" else ("torch int4", 2.0)
            ratio = ratio_to(group, versus[0])
            if ratio is not None:
                add(f"prefill GEMM >= {versus[1]}x {versus[0]}", ours, ratio, versus[1], "x")
        if op == "attention_prefill" and sizes.get("S") in (512, 2048):
            ratio = ratio_to(group, "torch SDPA")
            if ratio is not None:
                add("attention prefill >= 1.0x SDPA", ours, ratio, 1.0, "x")
        if op == "attention_decode" and sizes.get("L") in (2048, 8192) and ours["cache"] == "cold":
            add("attention decode >= 70% of memory bandwidth", ours, 100 * ours["bandwidth_fraction"], 70, "%")
        if op == "qkv_proj" and ours["cache"] == "hot":
            ratio = ratio_to(group, "ours: 3 separate")
            if ratio is not None:
                add("fused QKV+RoPE >= 1.1x separate projections + RoPE", ours, ratio, 1.1, "x")
    return out


def model_estimates(rows: list[dict], model) -> list[dict]:
    """Per quantized form whose kernels were measured: decode tokens/s at a CONTEXT-long KV cache
    and (when the prefill lengths were measured) time to first token for a PROMPT_TOKENS prompt,
    as `layers` x the calls of one layer."""
    out = []
    for quant in models.QUANT_FORMS:
        decode, prefill, caches = [], [], set()
        for kernel, calls in models.layer_calls(model, quant):
            if kernel.startswith("attention_prefill"):
                prefill.append((calls, _median(rows, kernel, {"L": PROMPT_TOKENS, "S": PROMPT_TOKENS}, caches=("hot",))[0]))
                continue
            decode_sizes = {"L": CONTEXT} if kernel.startswith("attention_decode") else {"M": 1}
            ms, cache = _median(rows, kernel, decode_sizes)
            decode.append((calls, ms))
            caches.add(cache)
            if not kernel.startswith("attention_decode"):
                prefill.append((calls, _median(rows, kernel, {"M": PROMPT_TOKENS}, caches=("hot",))[0]))
        if any(ms is None for _, ms in decode):
            continue
        decode_ms = sum(calls * ms for calls, ms in decode)
        entry = {"quant": quant, "layers": model.layers, "context": CONTEXT,
                 "decode_weights": "cold" if caches == {"cold"} else "hot (run without --quick for cold)",
                 "decode_tokens_per_s": round(1e3 / (model.layers * decode_ms), 1)}
        if all(ms is not None for _, ms in prefill):
            prefill_ms = model.layers * sum(calls * ms for calls, ms in prefill)
            entry.update(prompt_tokens=PROMPT_TOKENS, time_to_first_token_ms=round(prefill_ms, 2),
                         prefill_tokens_per_s=round(PROMPT_TOKENS * 1e3 / prefill_ms, 1))
        out.append(entry)
    return out


def format_summary(result: dict) -> str:
    lines = []
    if result.get("goals"):
        lines.append("\ngoals (this machine):")
        for g in result["goals"]:
            sizes = ",".join(f"{k}={v}" for k, v in g["sizes"].items())
            verdict = "met" if g["met"] else f"MISSED by {g['target'] - g['value']:.2f}{g['unit']}"
            lines.append(f"  {g['goal']:52} {g['kernel'][:44]:44} {sizes:8} {g['cache']:4} "
                         f"{g['value']:8.2f}{g['unit']:<2} {verdict}")
    for e in result.get("model_estimates", []):
        if not lines or not lines[-1].startswith("  estimate"):
            lines.append("\nestimates from the kernel times (transformer blocks only: norms, embedding and LM head excluded):")
        ttft = (f", prefill of {e['prompt_tokens']} tokens {e['time_to_first_token_ms']:.1f} ms "
                f"({e['prefill_tokens_per_s']:.0f} tokens/s)" if "time_to_first_token_ms" in e else "")
        lines.append(f"  estimate {e['quant']}: decode {e['decode_tokens_per_s']} tokens/s at {e['context']} context "
                     f"({e['decode_weights']} weights){ttft}")
    return "\n".join(lines)

"""The model row of `bench`: a GGUF run end to end on our kernels and on llama.cpp, same file, same
threads, same token sequence, rounds alternating between the two; prefill and decode tokens/s as
medians, plus where our decode time goes (per kernel role and the numpy glue)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compiler import runtime
from compiler.benchmarks import contenders
from compiler.llm.decoder import Decoder
from compiler.llm.gguf import GGUFModel
from compiler.llm.llama_cpp import LlamaCppPeer

PROMPT_TOKENS = 128
DECODE_TOKENS = 32


def _token_sequence(model: GGUFModel, count: int, seed: int) -> list[int]:
    """A fixed sequence of ordinary (non-control) token ids: both runners process identical work."""
    from compiler.llm.tokenizer import GGUFTokenizer

    text = ("The quick brown fox jumps over the lazy dog while the old clock in the hall strikes noon. " * 40)
    ids = GGUFTokenizer(model).encode(text)
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, max(1, len(ids) - count)))
    return ids[start:start + count]


def _run_once(runner, prompt: list[int], continuation: list[int]) -> tuple[float, float]:
    """(prefill seconds for the prompt, seconds per decoded token over the continuation)."""
    runner.reset()
    start = time.perf_counter()
    runner.forward(prompt)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for token in continuation:
        runner.forward([token])
    return prefill, (time.perf_counter() - start) / len(continuation)


def bench_model(gguf: Path, libraries: dict[str, Path], *, threads: int, quick: bool,
                progress: Callable[[str], None] = print) -> dict:
    """libraries: activations ("f32", "q8") -> a build of the model's kernels for them; each runs as
    contestant "ours <activations>" beside llama.cpp."""
    model = GGUFModel(gguf)
    tokens = _token_sequence(model, PROMPT_TOKENS + DECODE_TOKENS, seed=0)
    prompt, continuation = tokens[:PROMPT_TOKENS], tokens[PROMPT_TOKENS:]
    context = PROMPT_TOKENS + DECODE_TOKENS
    loaded = {activations: runtime.load(directory, emulate=False) for activations, directory in libraries.items()}
    runners = {f"ours {activations}": Decoder(model, library, max_context=context, activations=activations)
               for activations, library in loaded.items()}
    runners["llama.cpp"] = LlamaCppPeer(gguf, threads=threads, max_context=context)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for runner in runners.values():  # warm-up: page in weights, start thread pools
        _run_once(runner, prompt[:16], continuation[:4])
    rounds = 3 if quick else 7
    profiles: dict[str, dict[str, float]] = {name: {} for name in runners if name != "llama.cpp"}
    for index in range(rounds):
        order = list(runners) if index % 2 == 0 else list(reversed(runners))
        for name in order:
            runner = runners[name]
            if name in profiles:
                runner.profile.clear()
            contenders.settle()
            samples[name].append(_run_once(runner, prompt, continuation))
            for role, seconds in getattr(runner, "profile", {}).items():
                profiles[name][role] = profiles[name].get(role, 0.0) + seconds
    for library in loaded.values():
        library.close()

    def summary(values):
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    resident = {name: runner.resident_weight_bytes for name, runner in runners.items() if name != "llama.cpp"}
    row = {"gguf": gguf.name, "threads": threads, "prompt_tokens": len(prompt), "decode_tokens": len(continuation),
           "rounds": rounds, "resident_weight_bytes": resident, "gguf_bytes": gguf.stat().st_size,
           "contestants": list(runners)}
    for name, values in samples.items():
        row[name] = {"prefill_tokens_per_s": summary([len(prompt) / p for p, _ in values]),
                     "decode_tokens_per_s": summary([1.0 / d for _, d in values])}
    row["time_share"] = {}
    for name, profile in profiles.items():
        total = sum(profile.values()) or 1.0
        row["time_share"][name] = {role: round(seconds / total, 4)
                                   for role, seconds in sorted(profile.items(), key=lambda kv: -kv[1])}
    for name in profiles:
        for metric in ("prefill_tokens_per_s", "decode_tokens_per_s"):
            row.setdefault("ratio_to_llama_cpp", {}).setdefault(name, {})[metric] = (
                row[name][metric]["median"] / row["llama.cpp"][metric]["median"])
    progress(format_row(row))
    return row


def format_row(row: dict) -> str:
    resident = ", ".join(f"{name} {nbytes / 1e6:.1f} MB" for name, nbytes in row["resident_weight_bytes"].items())
    lines = [f"model {row['gguf']} ({row['threads']} threads, {row['rounds']} alternating rounds; "
             f"resident weights: {resident}; GGUF {row['gguf_bytes'] / 1e6:.1f} MB)"]
    for metric, label in (("prefill_tokens_per_s", f"prefill {row['prompt_tokens']} tokens"),
                          ("decode_tokens_per_s", f"decode {row['decode_tokens']} tokens")):
        for name in row["contestants"]:
            stats = row[name][metric]
            ratio = row.get("ratio_to_llama_cpp", {}).get(name, {}).get(metric)
            versus = f"   {ratio:.2f}x llama.cpp" if ratio is not None else ""
            lines.append(f"  {label:20} {name:10} {stats['median']:7.1f} tok/s ({stats['min']:.1f}-{stats['max']:.1f})"
                         + versus)
    for name, shares in row["time_share"].items():
        lines.append(f"  {name} time by kernel (prefill + decode): "
                     + ", ".join(f"{role} {100 * share:.0f}%" for role, share in shares.items()))
    return "\n".join(lines)

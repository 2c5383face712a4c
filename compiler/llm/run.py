"""`python -m compiler run`: build (or reuse) a GGUF model's kernels, load its weights, stream generated text."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler import build, manifest, models, runtime
from compiler.llm import model_kernels
from compiler.llm.decoder import Decoder, check_context
from compiler.llm.gguf import GGUFModel
from compiler.llm.sampling import Sampler


def model_library(model: GGUFModel, target, out_dir: Path, *, toolchain, tuning_dir: Path | None,
                  activations: str = "f32", progress: Callable[[str], None] = print) -> Path:
    """out_dir holding every kernel this model needs for `target` (with these activations): reused
    when its manifest already lists them all for the same target and TVM, else (re)built."""
    specs = list({s.name: s for s in model_kernels.kernel_specs(model, activations, target.isa).values()}.values())
    manifest_path = out_dir / "manifest.json"
    if manifest_path.is_file():
        try:
            existing = runtime.read_manifest(out_dir)
        except (runtime.LoaderError, ValueError, OSError) as err:
            progress(f"rebuilding {out_dir}: {err}")
        else:
            same_tools = existing["tools"].get("apache-tvm") == manifest.package_version("apache-tvm")
            kernels = existing["kernels"]
            # the same kernels with the same arguments (an older build of this project may differ)
            same_kernels = all(s.name in kernels and kernels[s.name]["args"] == build.manifest_entry(s, target)["args"]
                               for s in specs)
            if existing["target"] == target.to_json() and same_tools and same_kernels:
                progress(f"reusing the kernels in {out_dir}")
                return manifest_path
    progress(f"building {len(specs)} kernels for {model.path.name} ({target.name}) into {out_dir}")
    return build.build(specs, target, out_dir, toolchain=toolchain, tuning_dir=tuning_dir,
                       model={"gguf": model.path.name, **models.describe(model.shape)},
                       progress=progress)


ACTIVATION_NAMES = {"f32": "float32 activations", "q8": "activations in llama.cpp's 8-bit blocks"}


@dataclass
class Generation:
    prompt_tokens: list[int]
    tokens: list[int] = field(default_factory=list)
    prefill_s: float = 0.0  # time to first token: the prompt's forward pass and the first pick
    decode_s: float = 0.0  # the forward passes after the first token

    @property
    def decode_tokens_per_s(self) -> float:
        return (len(self.tokens) - 1) / self.decode_s if len(self.tokens) > 1 and self.decode_s > 0 else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return len(self.prompt_tokens) / self.prefill_s if self.prefill_s > 0 else 0.0


def generate(decoder: Decoder, prompt_tokens: list[int], max_tokens: int, sampler: Sampler, *,
             stop_ids: set[int] = frozenset(), on_token: Callable[[int], None] | None = None) -> Generation:
    """Prefill the prompt, then decode up to max_tokens tokens (stopping after a stop id)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    decoder.reset()
    rng = sampler.rng()
    result = Generation(list(prompt_tokens))
    start = time.perf_counter()
    logits = decoder.forward(prompt_tokens)
    token = sampler.pick(logits, rng)
    result.prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    while True:
        result.tokens.append(token)
        if on_token:
            on_token(token)
        if token in stop_ids or len(result.tokens) == max_tokens:
            break
        token = sampler.pick(decoder.forward([token]), rng)
    result.decode_s = time.perf_counter() - start
    return result


def profile_table(profile: dict[str, float]) -> str:
    total = sum(profile.values()) or 1.0
    rows = sorted(profile.items(), key=lambda kv: -kv[1])
    return "\n".join(f"  {name:18} {seconds * 1e3:9.1f} ms  {100 * seconds / total:5.1f}%" for name, seconds in rows)


def greedy_tokens(decoder: Decoder, prompt_tokens: list[int], count: int) -> tuple[list[int], np.ndarray]:
    """The first `count` greedy tokens and the logits [count, vocab] each was picked from."""
    decoder.reset()
    tokens, logits = [], []
    step = decoder.forward(prompt_tokens)
    for _ in range(count):
        logits.append(step)
        tokens.append(int(np.argmax(step)))
        if len(tokens) < count:
            step = decoder.forward([tokens[-1]])
    return tokens, np.stack(logits)


def run_command(*, gguf: Path, target, prompt: str, max_tokens: int, sampler: Sampler, chat: bool, out_dir: Path,
                toolchain, tuning_dir: Path | None, max_context: int, emit: Callable[[str], None],
                activations: str = "f32", progress: Callable[[str], None] = print) -> Generation:
    """Build or reuse the kernels, load the weights, stream the generated text through `emit`, report speed."""
    from compiler.llm.tokenizer import GGUFTokenizer

    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, got {max_tokens!r}")
    model = GGUFModel(gguf)
    check_context(model.shape, max_context)  # before a build: the KV cache must fit in memory
    tokenizer = GGUFTokenizer(model)
    text = tokenizer.chat_prompt(prompt) if chat else prompt
    prompt_tokens = tokenizer.encode(text)
    if not prompt_tokens:
        raise ValueError("the prompt is empty: give some text with --prompt")
    if len(prompt_tokens) + max_tokens > max_context:
        raise ValueError(f"prompt ({len(prompt_tokens)} tokens) + --max-tokens {max_tokens} exceeds --max-context {max_context}")
    model_library(model, target, out_dir, toolchain=toolchain, tuning_dir=tuning_dir, activations=activations,
                  progress=progress)
    library = runtime.load(out_dir)
    start = time.perf_counter()
    decoder = Decoder(model, library, max_context=max_context, activations=activations)
    progress(f"loaded {model.shape.layers} layers in {time.perf_counter() - start:.1f} s ({library.mode}, "
             f"{ACTIVATION_NAMES[activations]}); "
             f"resident weights {decoder.resident_weight_bytes / 1e6:.1f} MB vs the GGUF's "
             f"{model.path.stat().st_size / 1e6:.1f} MB")
    shown, text_tokens = "", []

    def stream(token: int) -> None:  # decode the whole text each time: a character may span tokens
        nonlocal shown
        if token in tokenizer.stop_ids:
            return
        text_tokens.append(token)
        full = tokenizer.decode(text_tokens)
        if not full.endswith("\ufffd"):
            emit(full[len(shown):])
            shown = full

    with library:
        result = generate(decoder, prompt_tokens, max_tokens, sampler, stop_ids=tokenizer.stop_ids, on_token=stream)
    emit("\n")
    progress(f"prompt: {len(prompt_tokens)} tokens, time to first token {result.prefill_s * 1e3:.0f} ms "
             f"({result.prefill_tokens_per_s:.1f} tokens/s)")
    progress(f"decode: {len(result.tokens)} tokens, {result.decode_tokens_per_s:.1f} tokens/s")
    progress("time by kernel (all forward passes):\n" + profile_table(decoder.profile))
    return result

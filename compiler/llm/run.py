"""`python -m compiler run`: build (or reuse) a GGUF model's kernels, load its weights, stream generated text."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler import build, manifest, models, runtime
from compiler.llm import model_kernels
from compiler.llm.decoder import Decoder, check_context, kv_cache_bytes
from compiler.llm.gguf import GGUFModel
from compiler.llm.sampling import Sampler


def model_library(model: GGUFModel, target, out_dir: Path, *, toolchain, tuning_dir: Path | None,
                  activations: str = "f32", kv_cache: str = "f32", progress: Callable[[str], None] = print) -> Path:
    """out_dir holding every kernel this model needs for `target` (with these activations and KV
    cache): reused when its manifest already lists them all for the same target, TVM and tuning
    records folder (none with --no-tuning), else (re)built. (Records a later `tune` adds to the same
    folder are not noticed: --out to a new folder rebuilds.)"""
    specs = model_kernels.kernel_specs(model, activations, target.isa, kv_cache, target.int8_dot)
    records = str(tuning_dir) if tuning_dir is not None else None
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
            built_with = (existing.get("model") or {}).get("tuning_records")
            if existing["target"] == target.to_json() and same_tools and same_kernels and built_with == records:
                progress(f"reusing the kernels in {out_dir}")
                return manifest_path
            if built_with != records:
                progress(f"rebuilding {out_dir}: it was built with other tuning records "
                         f"({built_with or 'none'}; now {records or 'none'})")
    progress(f"building {len(specs)} kernels for {model.path.name} ({target.name}) into {out_dir}")
    return build.build(specs, target, out_dir, toolchain=toolchain, tuning_dir=tuning_dir,
                       model={"gguf": model.path.name, **models.describe(model.shape), "tuning_records": records},
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
             stop_ids: set[int] = frozenset(), on_token: Callable[[int], None] | None = None,
             rng: np.random.Generator | None = None, fresh: bool = True) -> Generation:
    """Prefill the prompt (after the cached context unless `fresh`), then decode up to max_tokens
    tokens (stopping after a stop id, which is not fed back)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if fresh:
        decoder.reset()
    rng = rng or sampler.rng()
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


class TextStream:
    """Generated tokens -> text pieces for `emit`: the whole reply is decoded each time, since a
    character may span tokens (a piece is emitted once it no longer ends in a partial character)."""

    def __init__(self, tokenizer, emit: Callable[[str], None]):
        self.tokenizer, self.emit = tokenizer, emit
        self.tokens: list[int] = []
        self.shown = ""

    def __call__(self, token: int) -> None:
        if token in self.tokenizer.stop_ids:
            return
        self.tokens.append(token)
        full = self.tokenizer.decode(self.tokens)
        if not full.endswith("\ufffd"):
            self.emit(full[len(self.shown):])
            self.shown = full


def open_model(gguf: Path, max_context: int, kv_cache: str = "f32"):
    """(model, tokenizer) of a GGUF, checked before anything is built: the KV cache must fit in memory."""
    from compiler.llm.tokenizer import GGUFTokenizer

    model = GGUFModel(gguf)
    check_context(model.shape, max_context, kv_cache)
    return model, GGUFTokenizer(model)


def load_decoder(model: GGUFModel, target, out_dir: Path, *, toolchain, tuning_dir: Path | None, max_context: int,
                 activations: str, prefill_chunk: int | None, kv_cache: str, progress: Callable[[str], None]):
    """(library, decoder): the model's kernels built or reused, its weights loaded."""
    model_library(model, target, out_dir, toolchain=toolchain, tuning_dir=tuning_dir, activations=activations,
                  kv_cache=kv_cache, progress=progress)
    library = runtime.load(out_dir)
    start = time.perf_counter()
    decoder = Decoder(model, library, max_context=max_context, activations=activations, prefill_chunk=prefill_chunk,
                      kv_cache=kv_cache)
    cache = kv_cache_bytes(model.shape, max_context, kv_cache)
    float_only = decoder.plan.float_only_types
    fallback = (f"; {', '.join(float_only)} weights on float32 activations: this target's dot product has no "
                "intrinsic for values above a nibble (see README)") if float_only else ""
    progress(f"loaded {model.shape.layers} layers in {time.perf_counter() - start:.1f} s ({library.mode}, "
             f"{ACTIVATION_NAMES[activations]}{fallback}); "
             f"resident weights {decoder.resident_weight_bytes / 1e6:.1f} MB vs the GGUF's "
             f"{model.path.stat().st_size / 1e6:.1f} MB; {kv_cache} KV cache {cache / 1e6:.1f} MB "
             f"({cache // max_context} bytes per token)")
    return library, decoder


def check_options(max_tokens, prefill_chunk) -> None:
    """The run options' values, before anything is built."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, got {max_tokens!r}")
    if prefill_chunk is not None and (isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int)
                                      or prefill_chunk < 1):
        raise ValueError(f"--prefill-chunk must be at least 1, got {prefill_chunk!r}")


def check_flags(prompt: str | None, chat: bool, interactive: bool, max_tokens, prefill_chunk) -> bool:
    """Whether `run`'s flags ask for a conversation (else one prompt), checked before a download or
    a build."""
    conversation = prompt is None or interactive
    if conversation and not chat:
        raise ValueError("give --prompt, or --chat for a conversation read from standard input")
    if conversation and prompt is not None:
        raise ValueError("--interactive reads the turns from standard input: drop --prompt")
    check_options(max_tokens, prefill_chunk)
    return conversation


def run_command(*, gguf: Path, target, prompt: str, max_tokens: int, sampler: Sampler, chat: bool, out_dir: Path,
                toolchain, tuning_dir: Path | None, max_context: int, emit: Callable[[str], None],
                activations: str = "f32", prefill_chunk: int | None = None, kv_cache: str = "f32",
                progress: Callable[[str], None] = print) -> Generation:
    """Build or reuse the kernels, load the weights, stream the generated text through `emit`, report speed."""
    check_options(max_tokens, prefill_chunk)
    model, tokenizer = open_model(gguf, max_context, kv_cache)
    prompt_tokens = tokenizer.encode(tokenizer.chat_prompt(prompt) if chat else prompt)
    if not prompt_tokens:
        raise ValueError("the prompt is empty: give some text with --prompt")
    if len(prompt_tokens) + max_tokens > max_context:
        raise ValueError(f"prompt ({len(prompt_tokens)} tokens) + --max-tokens {max_tokens} exceeds --max-context {max_context}")
    library, decoder = load_decoder(model, target, out_dir, toolchain=toolchain, tuning_dir=tuning_dir,
                                    max_context=max_context, activations=activations, prefill_chunk=prefill_chunk,
                                    kv_cache=kv_cache, progress=progress)
    with library:
        result = generate(decoder, prompt_tokens, max_tokens, sampler, stop_ids=tokenizer.stop_ids,
                          on_token=TextStream(tokenizer, emit))
    emit("\n")
    progress(f"prompt: {len(prompt_tokens)} tokens, time to first token {result.prefill_s * 1e3:.0f} ms "
             f"({result.prefill_tokens_per_s:.1f} tokens/s)")
    progress(f"decode: {len(result.tokens)} tokens, {result.decode_tokens_per_s:.1f} tokens/s")
    progress("time by kernel (all forward passes):\n" + profile_table(decoder.profile))
    return result


class Conversation:
    """A multi-turn chat on one KV cache: each turn's rendering of the whole conversation is fed
    from where it stops matching what the cache holds (normally: just the new user turn and the
    template's markers), so a turn costs a prefill of its own tokens, not of the conversation."""

    def __init__(self, decoder: Decoder, tokenizer, sampler: Sampler, max_tokens: int):
        self.decoder, self.tokenizer, self.sampler, self.max_tokens = decoder, tokenizer, sampler, max_tokens
        self.rng = sampler.rng()
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict] = []
        self.fed: list[int] = []  # the tokens the cache holds, in order
        self.reused = 0  # of the last turn's prompt, the tokens already in the cache
        self.decoder.reset()

    def turn(self, user_message: str, on_token: Callable[[int], None] | None = None) -> tuple[Generation, str]:
        """The reply to one user message: (its generation, with prefill_s the turn's time to first
        token, and its text). Refuses (ValueError, nothing changed) a turn that would overflow the context."""
        messages = self.messages + [{"role": "user", "content": user_message}]
        tokens = self.tokenizer.encode(self.tokenizer.chat_text(messages))
        limit = self.decoder.max_context
        if len(tokens) + self.max_tokens > limit:
            raise ValueError(f"the conversation would reach {len(tokens)} + {self.max_tokens} (--max-tokens) tokens, "
                             f"over --max-context {limit}: /reset to start a new one")
        common = 0
        for cached, new in zip(self.fed, tokens):
            if cached != new:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # at least one token to prefill: it gives the next logits
        self.decoder.truncate(common)
        stream = TextStream(self.tokenizer, lambda _: None)

        def seen(token: int) -> None:
            stream(token)
            if on_token:
                on_token(token)

        result = generate(self.decoder, tokens[common:], self.max_tokens, self.sampler, fresh=False,
                          stop_ids=self.tokenizer.stop_ids, on_token=seen, rng=self.rng)
        self.reused = common
        self.fed = tokens + result.tokens[:-1]  # the last token is picked, not fed
        text = self.tokenizer.decode(stream.tokens)
        self.messages = messages + [{"role": "assistant", "content": text}]
        return result, text


def chat_command(*, gguf: Path, target, max_tokens: int, sampler: Sampler, out_dir: Path, toolchain,
                 tuning_dir: Path | None, max_context: int, emit: Callable[[str], None],
                 read: Callable[[], str | None], activations: str = "f32", prefill_chunk: int | None = None,
                 kv_cache: str = "f32", progress: Callable[[str], None] = print) -> list[Generation]:
    """An interactive chat: user turns from `read` (None ends it; "/reset" starts over), replies
    streamed through `emit`, each turn's time to first token and decode speed reported."""
    check_options(max_tokens, prefill_chunk)
    model, tokenizer = open_model(gguf, max_context, kv_cache)
    tokenizer.chat_text([{"role": "user", "content": ""}])  # a GGUF without a chat template fails here
    library, decoder = load_decoder(model, target, out_dir, toolchain=toolchain, tuning_dir=tuning_dir,
                                    max_context=max_context, activations=activations, prefill_chunk=prefill_chunk,
                                    kv_cache=kv_cache, progress=progress)
    results = []
    with library:
        conversation = Conversation(decoder, tokenizer, sampler, max_tokens)
        progress(f"chat: one KV cache of {max_context} tokens; /reset starts over, end of input ends")
        while (line := read()) is not None:
            line = line.strip()
            if not line:
                continue
            if line == "/reset":
                conversation.reset()
                progress("conversation cleared")
                continue
            try:
                result, _ = conversation.turn(line, on_token=TextStream(tokenizer, emit))
            except ValueError as err:
                progress(str(err))
                continue
            emit("\n")
            progress(f"turn {len(results) + 1}: {len(result.prompt_tokens)} new prompt tokens after "
                     f"{conversation.reused} cached, time to first token {result.prefill_s * 1e3:.0f} ms; "
                     f"{len(result.tokens)} tokens at {result.decode_tokens_per_s:.1f} tokens/s; "
                     f"context {len(conversation.fed)}/{max_context}")
            results.append(result)
    return results

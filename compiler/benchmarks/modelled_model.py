"""The model row of `bench --core`: a GGUF model's prefill and one decode step, MODELLED on ARM cores
by the cycle model, ours beside llama.cpp's aarch64 build on the same footing.

Ours: the real Decoder runs over a library whose driver records each kernel call instead of making
it (counts.RecordingDriver); every distinct call (variant and argument shapes: the layers repeat
the same few) is counted once under qemu and costed per core, times how often the step makes it.
That is the kernels only: the Python and numpy between calls (embedding rows, KV-cache appends, a
transpose per layer) are not modelled. llama.cpp: its whole program's per-token work (graph
building included), counted as the difference of two runs (llama_cpp_arm)."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from compiler import runtime
from compiler.backends.native.cycle_model import blocks_cost, instruction_text
from compiler.backends.native.cycle_model.counts import RecordingDriver, count_call

PROMPT_TOKENS = 128


@dataclass(frozen=True)
class StepModel:
    contestant: str
    phase: str  # "prefill" (the whole prompt) or "decode" (one token after it)
    core: str
    tokens: int  # tokens the step processes
    instructions: int
    cycles: float
    microseconds: float
    kernel_share: dict  # kernel -> share of the step's cycles (ours only)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / (self.microseconds * 1e-6) if self.microseconds else 0.0


def decoder_steps(gguf: Path, directory: Path, prompt_tokens: int,
                  activations: str = "f32") -> dict[str, list[tuple[str, list, list]]]:
    """The kernel calls (symbol, inputs, output specs) our Decoder makes to prefill a prompt of
    `prompt_tokens` tokens and to decode the token after it."""
    from compiler.llm.decoder import Decoder
    from compiler.llm.gguf import GGUFModel

    recorder = RecordingDriver()
    library = runtime.Library(directory, runtime.read_manifest(directory), recorder)
    model = GGUFModel(gguf)
    decoder = Decoder(model, library, max_context=prompt_tokens + 1, activations=activations)
    tokens = [(1000 + 7919 * i) % model.vocab_size for i in range(prompt_tokens + 1)]
    steps = {}
    for phase, feed in (("prefill", tokens[:-1]), ("decode", tokens[-1:])):
        recorder.calls.clear()
        decoder.forward(feed)
        steps[phase] = list(recorder.calls)
    return steps


def model_steps(directory: Path, steps: dict[str, list], prompt_tokens: int, cores,
                progress: Callable[[str], None], contestant: str = "ours") -> list[StepModel]:
    """Each phase's calls costed on each core: every distinct call counted once under qemu."""
    manifest = runtime.read_manifest(directory)
    kernel_of = {v["symbol"]: name for name, entry in manifest["kernels"].items() for v in entry["variants"]}
    text = instruction_text((directory / manifest["library"]).resolve())
    counted: dict[tuple, list] = {}
    rows = []
    for phase, calls in steps.items():
        keys = Counter()
        example = {}
        for symbol, inputs, out_specs in calls:
            key = (symbol, tuple(a.shape for a in inputs), tuple(out_specs))
            keys[key] += 1
            example.setdefault(key, (symbol, inputs, out_specs))
        for key in keys:
            if key not in counted:
                progress(f"  counting {key[0]} {[list(s) for s in key[1] if len(s) > 1][:1]} under qemu")
                counted[key] = count_call(directory, manifest, *example[key])
        for core in cores:
            instructions, cycles, by_kernel = 0, 0.0, Counter()
            for key, times in keys.items():
                n, c, _, _ = blocks_cost(text, counted[key], core)
                instructions += times * n
                cycles += times * c
                by_kernel[kernel_of[key[0]]] += times * c
            rows.append(StepModel(contestant, phase, core.name, prompt_tokens if phase == "prefill" else 1, instructions,
                                  cycles, cycles / (core.ghz * 1e3),
                                  {k: round(c / cycles, 4) for k, c in by_kernel.most_common()} if cycles else {}))
    return rows


def cores_by_records(cores, tuning_dirs: dict[str, Path | None]) -> dict[Path | None, list]:
    """The cores grouped by the tuning database their build reads: one build per group."""
    groups: dict[Path | None, list] = {}
    for core in cores:
        groups.setdefault(tuning_dirs.get(core.name), []).append(core)
    return groups


def run(gguf: Path, target, *, toolchain, tuning_dirs: dict[str, Path | None], cores, prompt_tokens: int = PROMPT_TOKENS,
        peer: bool = True, progress: Callable[[str], None] = print) -> dict:
    """The model row: ours (both activation paths, each core's build with its tuning records,
    `tuning_dirs` by core name) and, with `peer`, llama.cpp's prefill and decode, modelled on `cores`."""
    from compiler.llm.gguf import GGUFModel
    from compiler.llm.model_kernels import ACTIVATIONS
    from compiler.llm.run import model_library

    rows = []
    for activations in ACTIVATIONS:
        for tuning_dir, group in cores_by_records(cores, tuning_dirs).items():
            with tempfile.TemporaryDirectory() as tmp:
                directory = Path(tmp)
                model_library(GGUFModel(gguf), target, directory, toolchain=toolchain, tuning_dir=tuning_dir,
                              activations=activations, progress=lambda _: None)
                progress(f"model row: {gguf.name}, our decoder's kernel calls ({activations} activations) for a "
                         f"{prompt_tokens}-token prefill and a decode step")
                steps = decoder_steps(gguf, directory, prompt_tokens, activations)
                rows += model_steps(directory, steps, prompt_tokens, group, progress, contestant=f"ours {activations}")
    if peer:
        from compiler.benchmarks import llama_cpp_arm

        program = llama_cpp_arm.model_program(target, progress)
        progress(f"model row: llama.cpp on {gguf.name} under qemu (two counted runs per phase; minutes)")
        for peer_row in llama_cpp_arm.model_tokens(program, instruction_text(program), gguf, prompt_tokens, cores):
            for phase, tokens in (("prefill", prompt_tokens), ("decode", 1)):
                cycles = getattr(peer_row, f"{phase}_cycles")
                rows.append(StepModel("llama.cpp", phase, peer_row.core, tokens,
                                      getattr(peer_row, f"{phase}_instructions"), cycles,
                                      getattr(peer_row, f"{phase}_microseconds"), {}))
    return {"gguf": gguf.name, "prompt_tokens": prompt_tokens,
            "rows": [{**asdict(r), "tokens_per_s": r.tokens_per_s} for r in rows]}


def format_row(row: dict) -> str:
    """Prefill and decode tokens/s per core: each of our paths beside llama.cpp's."""
    lines = [f"MODELLED model row, {row['gguf']} (one core; ours: kernels only, llama.cpp: its whole program):",
             f"{'phase':24} {'core':11} {'contestant':10} {'tok/s':>8} {'M instr/token':>13} {'vs llama.cpp':>12}"]
    rows = {(r["contestant"], r["phase"], r["core"]): r for r in row["rows"]}
    for (contestant, phase, core), r in sorted(rows.items(), key=lambda kv: (kv[0][1] != "prefill", kv[0][2], kv[0][0])):
        label = f"prefill {row['prompt_tokens']} tokens" if phase == "prefill" else "decode 1 token after it"
        theirs = rows.get(("llama.cpp", phase, core))
        versus = f"{r['tokens_per_s'] / theirs['tokens_per_s']:11.2f}x" if theirs and contestant != "llama.cpp" else ""
        lines.append(f"{label:24} {core:11} {contestant:10} {r['tokens_per_s']:8.1f} "
                     f"{r['instructions'] / r['tokens'] / 1e6:13.1f} {versus:>12}")
    for r in sorted(row["rows"], key=lambda r: r["phase"] != "prefill"):
        if r["kernel_share"]:
            shares = ", ".join(f"{k.split('_n')[0].split('_hq')[0]} {100 * s:.0f}%"
                               for k, s in list(r["kernel_share"].items())[:5])
            lines.append(f"  {r['contestant']} {r['phase']} on {r['core']}, by kernel: {shares}")
    return "\n".join(lines)

"""`bench --target arm --core CORE`: every kernel variant of a build, modelled on ARM cores by the
cycle model (compiler/backends/native/cycle_model): instructions per call, modelled cycles and
microseconds, share of the core's multiply-add peak, the bytes a call must move and the time the
core's DRAM bandwidth needs for them, and the hottest block. MODELLED figures, never measured ones:
they live in their own table and JSON ("kind": "modelled")."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import targets
from compiler import build, runtime
from compiler.backends.native.cycle_model import instruction_text, model_kernel_on
from compiler.benchmarks import modelled_model
from compiler.benchmarks.modelled_model import cores_by_records
from compiler.verify import length_dim, symbolic_dims

# Runtime lengths per symbolic dim: decode (one token, a 2K cache) and a 128-token prefill.
LENGTHS = {"M": (1, 128), "S": (128,), "L": (2048,)}


def run(specs, target, *, toolchain, tuning_dirs: dict[str, Path | None], cores: list[str], quick: bool,
        json_path: Path | None, plot_path: Path | None = None, peer: bool = True, gguf: Path | None = None,
        progress: Callable[[str], None] = print) -> dict:
    """Model every variant of `specs` on `cores`, each core's build with its own tuning records
    (`tuning_dirs` by core name); with `peer`, also llama.cpp's GEMV (ggml, cross-built here) at the
    shape of each of our one-token GEMMs; with `gguf`, the model row (modelled_model.py: the whole
    model's prefill and decode, ours and llama.cpp's)."""
    chosen = [targets.core(name) for name in cores]
    rows, peer_rows = [], []
    by_name = {s.name: s for s in specs}
    for tuning_dir, group in cores_by_records(chosen, tuning_dirs).items():
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp) / "build"
            progress(f"building for {', '.join(c.name for c in group)} with "
                     f"{tuning_dir or 'default schedules (no tuning records)'}")
            build.build(specs, target, directory, toolchain=toolchain, tuning_dir=tuning_dir, progress=lambda _: None)
            manifest = runtime.read_manifest(directory)
            for name, entry in manifest["kernels"].items():
                dims = symbolic_dims(entry)
                lengths = LENGTHS[length_dim(entry)] if dims else (None,)
                for length in lengths[:1] if quick else lengths:
                    sizes = {d: length for d in dims}
                    progress(f"  modelling {name} {sizes} on {', '.join(c.name for c in group)}")
                    rows += [{**asdict(m), "peer": _peer_shape(by_name.get(name))}
                             for m in model_kernel_on(directory, manifest, name, sizes, group)]
    if peer:
        peer_rows = _peer_rows(specs, target, chosen, progress)
    result = {"kind": "modelled", "target": target.name,
              "method": "qemu-aarch64 block counts x llvm-mca 19.1.7 steady-state cycles; one core, every load an "
                        "L1 hit, no front end, not validated on silicon",
              "cores": {c.name: asdict(c) for c in chosen}, "rows": rows, "peer_rows": peer_rows}
    if gguf is not None:
        result["model_row"] = modelled_model.run(gguf, target, toolchain=toolchain, tuning_dirs=tuning_dirs, cores=chosen,
                                                 prompt_tokens=8 if quick else modelled_model.PROMPT_TOKENS,
                                                 peer=peer, progress=progress)
    print(format_table(result))
    if peer_rows:
        print(format_peers(result))
    if gguf is not None:
        print(modelled_model.format_row(result["model_row"]))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1) + "\n")
        progress(f"wrote {json_path}")
    if plot_path is not None:
        from compiler.benchmarks import plots

        progress(f"chart: {plots.modelled_chart(result, plot_path)}")
    return result


def _peer_shape(spec) -> list | None:
    """[llama.cpp block type, N, K] of the GEMV llama.cpp runs in place of this GEMM (None: none)."""
    from compiler.benchmarks.llama_cpp_arm import peer_type

    ggml_type = peer_type(spec) if spec is not None else None
    return [ggml_type, spec.dim("n"), spec.dim("k")] if ggml_type else None


def _peer_rows(specs, target, cores, progress) -> list[dict]:
    """llama.cpp's GEMV at the (block type, N, K) of each of our one-token GEMMs, modelled alike."""
    from compiler.benchmarks import llama_cpp_arm

    shapes = {tuple(shape) for shape in map(_peer_shape, specs) if shape}
    if not shapes:
        return []
    program = llama_cpp_arm.peer_program(target, progress)
    text, rows = instruction_text(program), []
    for ggml_type, n, k in sorted(shapes):
        progress(f"  modelling llama.cpp {ggml_type} GEMV N={n} K={k}")
        rows += [asdict(m) for m in llama_cpp_arm.model_gemv(program, text, ggml_type, n, k, cores)]
    return rows


def format_peers(result: dict) -> str:
    """Our one-token GEMMs beside llama.cpp's GEMV of the same N, K (its block type nearest ours)."""
    peers = {(r["contestant"].split()[-1], r["n"], r["k"], r["core"]): r for r in result["peer_rows"]}
    lines = ["MODELLED, ours vs llama.cpp's ggml GEMV (one token, one core; llama.cpp's time includes quantising "
             "the activations to Q8 blocks):",
             f"{'our kernel variant':58} {'core':11} {'ours us':>9} {'llama.cpp':>16} {'its us':>9} {'ours is':>9}"]
    for row in result["rows"]:
        peer = peers.get((*row["peer"], row["core"])) if row["peer"] and row["sizes"].get("M") == 1 else None
        if peer is None:
            continue
        lines.append(f"{row['variant'][:58]:58} {row['core']:11} {row['microseconds']:9.1f} {peer['contestant']:>16} "
                     f"{peer['microseconds']:9.1f} {peer['microseconds'] / row['microseconds']:8.2f}x")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    lines = [f"MODELLED on ARM cores ({result['method']}):",
             f"{'kernel variant':58} {'sizes':8} {'core':11} {'M instr':>8} {'Mcycles':>8} {'us':>9} "
             f"{'% peak':>6} {'MB':>7} {'mem us':>8} {'hot block':>14}"]
    for row in result["rows"]:
        sizes = ",".join(f"{k}={v}" for k, v in row["sizes"].items())
        hot = f"{row['hot_block_instructions']} ins, {100 * row['hot_block_share']:.0f}%"
        lines.append(f"{row['variant'][:58]:58} {sizes:8} {row['core']:11} {row['instructions'] / 1e6:8.2f} "
                     f"{row['cycles'] / 1e6:8.2f} {row['microseconds']:9.1f} {100 * row['peak_share']:6.0f} "
                     f"{row['bytes'] / 1e6:7.2f} {row['memory_microseconds']:8.1f} {hot:>14}")
    return "\n".join(lines)

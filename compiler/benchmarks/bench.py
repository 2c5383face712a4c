"""python -m compiler bench: our built kernels against what users would run instead (compiler/
contenders.py), in one process, on the same logical inputs, alternating so that drift hits all.

Per kernel and length: median / min / max time of each contestant, GFLOP/s, GB/s of the bytes that
must move (and that as a fraction of the memory bandwidth: for a cold row, a copy timed among its
contestants in the same rounds; for a hot row, one measured at start-up), and our speed over the
best alternative. Not a test: timings on a shared machine are noisy, hence medians.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

import targets
from compiler import models, ops, runtime
from compiler.benchmarks import contenders
from compiler.benchmarks.roofline import (COPY_PROBE, PROBE_BYTES, READ_FLOOR, ColdCopies, CopyProbe, ReadFloor,
                                          last_level_cache_bytes, memory_bandwidth)
from compiler.benchmarks.summary import memory_bound
from compiler.runtime import host
from schedules import layouts

# Lengths benchmarked per runtime dim (`--quick`: the first of each): decode (one token) and a
# prefill chunk for GEMMs, a chat-turn prompt and longer ones for prefill attention, a 2K and an
# 8K KV cache for decode attention.
LENGTHS = {"M": (1, 128), "S": (128, 512, 2048), "L": (2048, 8192)}
# Prefill attention also after a cached prefix: a 128-token chat turn (or prompt chunk) over 1024 tokens.
PREFIX_SIZES = {"S": 128, "L": 1152}


def time_alternating(contestants: list[tuple[str, Callable]], *, rounds: int, min_seconds: float) -> dict:
    """Seconds per call of each contestant per round; each round runs all of them, order rotating,
    each once the process is idle (contenders.settle)."""
    calls = {}
    for name, fn in contestants:  # warm-up, and enough calls per round for a readable timer
        start = time.perf_counter()
        fn()
        calls[name] = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name, _ in contestants}
    for r in range(rounds):
        order = contestants[r % len(contestants):] + contestants[:r % len(contestants)]
        for name, fn in order:
            contenders.settle()
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / calls[name])
    return samples


def cpu_ghz() -> float:
    """The clock /proc/cpuinfo reports (the highest of the cores), 0 when it reports none."""
    values = [float(v) for v in host.cpuinfo(("cpu MHz",)) if v.replace(".", "", 1).isdigit()]
    return max(values, default=0.0) / 1e3


def compute_peaks(target: dict) -> dict[str, float]:
    """Estimated GFLOP/s (GOP/s for int8) of the cores: two vector pipes per core, each one
    multiply-add (2 ops) per lane per cycle, at the reported clock. An estimate for the roofline
    column, not a measurement: turbo, AVX-512 double-pumping (Zen 4) and port counts move it."""
    per_cycle = 2 * 2 * (os.cpu_count() or 1) * cpu_ghz()
    return {"fp32": per_cycle * target["vector_bits"] / 32,
            "int8": per_cycle * target["vector_bits"] / targets.INT8_DOT_KINDS[target["int8_dot"]]}


def _machine(bandwidth: float) -> dict:
    flags = host.cpu_features()
    model = host.cpu_model() or platform.processor()
    versions = {}
    for dist in ("apache-tvm", "numpy", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"cpu": model, "machine": platform.machine(), "threads": os.cpu_count(), "cpu_ghz": round(cpu_ghz(), 3),
            "simd_flags": sorted(f for f in flags if f.startswith(("avx", "fma", "asimd", "sve"))),
            "memory_bandwidth_gbs": round(bandwidth, 2), "versions": versions}


def _tuned(kernel) -> bool:
    """Whether any variant of a loaded kernel was built from a tuning record."""
    return any(v["tuning"] != "default" for v in kernel.spec["variants"])


def _contestant_sets(kernel, spec, op, sizes, rng, copies: int, separate_qkv=None, default=None, floor=None):
    """`copies` independent input sets, each with our packed call and the contenders' calls; the
    contestants cycle through them, so with enough copies every call streams from DRAM.
    `default`: the same kernel built with its default schedule (when ours is tuned). Ours are
    prepared calls (BoundKernel.prepare), as the model's decoder makes them: a plain call's
    argument checks cost 15-30 us (attention decode at L=2048-8192 on x86, measured), which is the
    loader's, not the kernel's. `floor` (a cold row's ReadFloor): our copies then lie in one
    allocation (ColdCopies) and the floor, reading them, is the last contestant."""
    logicals = [op.random_inputs(spec, sizes, rng) for _ in range(copies)]
    arrays = []
    for logical in logicals:
        weights = kernel.pack(**{n: logical[n] for n in kernel.logical_weights})
        inputs = {a["name"]: runtime.aligned(np.ascontiguousarray(logical[a["name"]]))
                  for a in kernel.spec["args"] if a["role"] == "input"}
        arrays.append((weights, inputs))
    placed = None
    if floor is not None:
        placed = ColdCopies([{**weights, **inputs} for weights, inputs in arrays], floor.granule)
        arrays = [({n: copy[n] for n in weights}, {n: copy[n] for n in inputs})
                  for copy, (weights, inputs) in zip(placed.sets, arrays)]
    sets = []
    for logical, (weights, inputs) in zip(logicals, arrays):
        calls = [("ours", kernel.bind(**weights).prepare(**inputs))]
        if default is not None:  # the layouts do not depend on tuning: same packed weights
            calls.append(("ours, default schedule", default.bind(**weights).prepare(**inputs)))
        if separate_qkv:
            calls.append(contenders.separate_qkv(spec, separate_qkv, logical))
        sets.append(calls + contenders.for_kernel(spec, logical))
    names = [name for name, _ in sets[0]]
    contestants = []
    for index, name in enumerate(names):
        position = itertools.cycle(range(copies))
        contestants.append((name, lambda index=index, position=position: sets[next(position)][index][1]()))
    if floor is not None:
        contestants.append((READ_FLOOR, floor.over(placed)))
    return contestants


def _rows(name, op_name, sizes, cache, samples, flops, nbytes, bandwidth, peak, yardsticks=None) -> list[dict]:
    """One row per contestant. bandwidth: the start-up copy's GB/s, a hot row's yardstick. A cold
    row's `yardsticks` are per round: the copy's GB/s and the read floor's seconds; its shares are
    the medians of the per-round ratios (each round's kernel time against the same round's
    yardsticks, seconds apart), as this VM's memory speed moves between rounds."""
    copy_rounds, floor_rounds = yardsticks or (None, None)
    medians = {n: statistics.median(t) for n, t in samples.items()}
    # Alternatives are what users would run instead: not our own default schedule or unfused form.
    best_other = min((t for n, t in medians.items() if not n.startswith("ours")), default=None)
    rows = []
    for contestant, times in samples.items():
        gbs = nbytes / medians[contestant] / 1e9
        if copy_rounds is None:
            copy_gbs, share, floor_share = bandwidth, gbs / bandwidth, None
        else:
            copy_gbs = statistics.median(copy_rounds)
            share = statistics.median(nbytes / t / 1e9 / c for t, c in zip(times, copy_rounds))
            floor_share = statistics.median(f / t for t, f in zip(times, floor_rounds))
        rows.append({
            "kernel": name, "op": op_name, "sizes": sizes, "cache": cache, "contestant": contestant,
            "median_ms": medians[contestant] * 1e3, "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3,
            "round_ms": [t * 1e3 for t in times], "gflops": flops / medians[contestant] / 1e9, "gbs": gbs,
            "bandwidth_fraction": share, "copy_gbs": copy_gbs,
            "copy_gbs_rounds": copy_rounds,
            "read_floor_fraction": floor_share,
            "read_floor_ms": statistics.median(floor_rounds) * 1e3 if floor_rounds else None,
            "compute_fraction": flops / medians[contestant] / 1e9 / peak if peak else None,
            "speedup_vs_best_alternative": best_other / medians[contestant] if contestant == "ours" and best_other else None,
        })
    return rows


def _progress_line(ours: dict) -> str:
    best = ours["speedup_vs_best_alternative"]
    floor = ours["read_floor_fraction"]
    return (f"{ours['kernel']} {ours['sizes']} {ours['cache']}: {ours['median_ms']:.3f} ms, {ours['gflops']:.1f} "
            f"GFLOP/s, {ours['gbs']:.1f} GB/s ({100 * ours['bandwidth_fraction']:.0f}% of the copy bandwidth, "
            f"{ours['copy_gbs']:.1f} GB/s" + (f"; {100 * floor:.0f}% of the read floor's speed" if floor else "") + ")"
            + (f", {best:.2f}x the best alternative" if best else ""))


def separate_qkv_specs(spec) -> list:
    """The q, k and v projections of a fused qkv_proj spec as three plain GEMM specs (same form,
    group and bias): what an unfused model runs, before its separate RoPE."""
    from compiler.specs import make_spec

    quant = spec.opt("quant")
    extra = {"group": spec.opt("group")} if quant != "w8a8" else {}
    widths = (spec.dim("hq") * spec.dim("d"), spec.dim("hkv") * spec.dim("d"), spec.dim("hkv") * spec.dim("d"))
    return [make_spec(f"qgemm_{quant}", n=n, k=spec.dim("k"), bias=spec.opt("bias"), **extra) for n in widths]


def bench_library(lib, *, quick: bool, progress: Callable[[str], None] = print, seed: int = 0,
                  only: list[str] | None = None, default_lib=None) -> dict:
    """Benchmark the kernels `only` names (default all) of a loaded (native) library. Decode
    kernels are measured with their data hot in cache and, unless `quick`, cold: cycling through
    copies of the inputs that together exceed the last-level cache several times (edge decode
    streams weights from DRAM). A fused qkv_proj also races its three separate projections from
    the same library (when built) plus a separate RoPE; `default_lib` (the same kernels with
    default schedules) races each kernel whose build used a tuning record."""
    from compiler.verify import length_dim, spec_of, symbolic_dims

    if lib.mode != "native":
        raise ValueError("bench measures kernels natively; this library runs only under emulation here")
    probe = CopyProbe(PROBE_BYTES)
    floor = None if quick else ReadFloor(lib.target["llvm"], lib.target["vector_bits"])
    bandwidth = memory_bandwidth(probe)
    peaks = compute_peaks(lib.target)
    cold_bytes = 4 * last_level_cache_bytes()
    contenders.set_threads(os.cpu_count() or 1)  # TVM's pool uses every core; so do the contenders
    progress(f"memory bandwidth (copy on every core): {bandwidth:.1f} GB/s; estimated peak {peaks['fp32']:.0f} "
             f"GFLOP/s fp32, {peaks['int8']:.0f} GOP/s int8; cold working set {cold_bytes >> 20} MiB")
    rng = np.random.default_rng(seed)
    rows = []
    for name in only or lib.kernels:
        kernel = lib[name]
        spec = spec_of(kernel.spec)
        op = ops.get(spec.op)
        dims = symbolic_dims(kernel.spec)
        separate = None
        if spec.op == "qkv_proj":
            names = [s.name for s in separate_qkv_specs(spec)]
            separate = [lib[n] for n in names] if all(n in lib.kernels for n in names) else None
        peak = peaks["int8" if models.multiplies_int8(spec) else "fp32"]
        default = default_lib[name] if default_lib is not None and _tuned(kernel) else None
        lengths = LENGTHS[length_dim(kernel.spec)]
        size_sets = [{d: length for d in dims} for length in (lengths[:1] if quick else lengths)]
        if spec.op == "attention_prefill" and not quick:
            size_sets.append(dict(PREFIX_SIZES))
        for sizes in size_sets:
            nbytes = op.bytes_moved(spec, sizes, layouts.from_json(kernel.variant_for(sizes)["layout"]))
            caches = [("hot", 1)]
            if memory_bound(sizes) and not quick:
                caches.append(("cold", max(2, -(-cold_bytes // int(nbytes)))))
            for cache, copies in caches:
                contestants = _contestant_sets(kernel, spec, op, sizes, rng, copies, separate, default,
                                               floor if cache == "cold" else None)
                if cache == "cold":  # the copy bandwidth of the same rounds
                    contestants.append((COPY_PROBE, probe))
                samples = time_alternating(contestants, rounds=3 if quick else 9, min_seconds=0.02 if quick else 0.1)
                yardsticks = None
                if cache == "cold":
                    yardsticks = [probe.gbs(t) for t in samples.pop(COPY_PROBE)], samples.pop(READ_FLOOR)
                new = _rows(name, spec.op, sizes, cache, samples, op.flops(spec, sizes), nbytes, bandwidth, peak,
                            yardsticks)
                rows += new
                progress(_progress_line(new[0]))
    probe.close()
    machine = _machine(bandwidth)
    machine["estimated_peak_gflops"] = {k: round(v, 1) for k, v in peaks.items()}
    return {"machine": machine, "rows": rows}


def _model_row(gguf: Path, target, toolchain, tuning_dir, quick: bool, progress) -> dict:
    from compiler.benchmarks.model_row import bench_model
    from compiler.llm.gguf import GGUFModel
    from compiler.llm.model_kernels import ACTIVATIONS
    from compiler.llm.run import model_library

    with tempfile.TemporaryDirectory() as tmp:
        libraries = {}
        for activations in ACTIVATIONS:  # both of our paths: float32 and llama.cpp's q8 blocks
            libraries[activations] = Path(tmp) / activations
            model_library(GGUFModel(gguf), target, libraries[activations], toolchain=toolchain, tuning_dir=tuning_dir,
                          activations=activations, progress=lambda _: None)
        progress(f"model row: {gguf.name} on our kernels ({', '.join(ACTIVATIONS)} activations) and on llama.cpp, "
                 "alternating")
        return bench_model(gguf, libraries, threads=host.physical_cores(), quick=quick, progress=lambda _: None)


def format_table(result: dict) -> str:
    lines = [f"{'kernel':58} {'sizes':10} {'cache':5} {'contestant':44} {'median ms':>10} {'GFLOP/s':>8} "
             f"{'GB/s':>7} {'%BW':>5} {'%floor':>6} {'%peak':>5} {'ours/best':>9}"]
    for row in result["rows"]:
        sizes = ",".join(f"{k}={v}" for k, v in row["sizes"].items())
        ratio = f"{row['speedup_vs_best_alternative']:.2f}x" if row["speedup_vs_best_alternative"] else ""
        peak = f"{100 * row['compute_fraction']:5.0f}" if row["compute_fraction"] is not None else "    -"
        floor = f"{100 * row['read_floor_fraction']:6.0f}" if row.get("read_floor_fraction") else "     -"
        lines.append(f"{row['kernel'][:58]:58} {sizes:10} {row['cache']:5} {row['contestant'][:44]:44} {row['median_ms']:10.3f} "
                     f"{row['gflops']:8.1f} {row['gbs']:7.1f} {100 * row['bandwidth_fraction']:5.0f} {floor} {peak} {ratio:>9}")
    return "\n".join(lines)


def run(specs, target, *, toolchain, tuning_dir: Path | None, quick: bool, json_path: Path | None,
        plot_path: Path | None = None, model=None, gguf: Path | None = None,
        progress: Callable[[str], None] = print) -> dict:
    """Build `specs` (plus the separate projections each fused QKV races), benchmark them, print
    the table, the goals and (for a model with a layer count) the tokens/s estimates; with a GGUF,
    also the model row: the whole model on our kernels against llama.cpp (model_row.py)."""
    from compiler import build
    from compiler.benchmarks import summary as bench_summary

    helpers = {s.name: s for spec in specs if spec.op == "qkv_proj" for s in separate_qkv_specs(spec)}
    wanted = [s.name for s in specs]
    everything = list({**helpers, **{s.name: s for s in specs}}.values())
    with tempfile.TemporaryDirectory() as tmp:
        tuned_dir, default_dir = Path(tmp) / "tuned", Path(tmp) / "default"
        build.build(everything, target, tuned_dir, toolchain=toolchain, tuning_dir=tuning_dir, progress=lambda _: None)
        with runtime.load(tuned_dir, emulate=False) as lib:
            if any(_tuned(lib[k]) for k in lib.kernels):
                build.build(everything, target, default_dir, toolchain=toolchain, tuning_dir=None, progress=lambda _: None)
                with runtime.load(default_dir, emulate=False) as default_lib:
                    result = bench_library(lib, quick=quick, progress=progress, only=wanted, default_lib=default_lib)
            else:
                result = bench_library(lib, quick=quick, progress=progress, only=wanted)
    result["target"] = target.name
    result["goals"] = bench_summary.goals(result["rows"])
    if model is not None and model.layers:
        result["model_estimates"] = bench_summary.model_estimates(result["rows"], model)
    if gguf is not None:
        result["model_row"] = _model_row(gguf, target, toolchain, tuning_dir, quick, progress)
    print(format_table(result))
    print(bench_summary.format_summary(result))
    if gguf is not None:
        from compiler.benchmarks.model_row import format_row

        print(format_row(result["model_row"]))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1) + "\n")
        progress(f"wrote {json_path}")
    if plot_path is not None:
        from compiler.benchmarks import plots

        progress(f"chart: {plots.bench_chart(result, plot_path)}")
    return result

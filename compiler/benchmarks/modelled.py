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
from compiler.backends.native.cycle_model import model_kernel_on
from compiler.verify import symbolic_dims

# Runtime lengths per symbolic dim: decode (one token, a 2K cache) and a 128-token prefill.
LENGTHS = {"M": (1, 128), "S": (128,), "L": (2048,)}


def run(specs, target, *, toolchain, tuning_dir: Path | None, cores: list[str], quick: bool,
        json_path: Path | None, progress: Callable[[str], None] = print) -> dict:
    chosen = [targets.core(name) for name in cores]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "build"
        build.build(specs, target, directory, toolchain=toolchain, tuning_dir=tuning_dir, progress=lambda _: None)
        manifest = runtime.read_manifest(directory)
        for name, entry in manifest["kernels"].items():
            dims = symbolic_dims(entry)
            for length in (LENGTHS[dims[0]][:1] if quick else LENGTHS[dims[0]]) if dims else (None,):
                sizes = {d: length for d in dims}
                progress(f"  modelling {name} {sizes} on {', '.join(c.name for c in chosen)}")
                rows += [asdict(m) for m in model_kernel_on(directory, manifest, name, sizes, chosen)]
    result = {"kind": "modelled", "target": target.name,
              "method": "qemu-aarch64 block counts x llvm-mca 19.1.7 steady-state cycles; one core, every load an "
                        "L1 hit, no front end, not validated on silicon",
              "cores": {c.name: asdict(c) for c in chosen}, "rows": rows}
    print(format_table(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1) + "\n")
        progress(f"wrote {json_path}")
    return result


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

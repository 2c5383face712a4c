"""specs + target -> one shared library and its manifest.json (the contract with the loader)."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from compiler import ops
from compiler.loader import sha256_of
from compiler.specs import KernelSpec
from compiler.toolchain import Toolchain

MANIFEST_SCHEMA_VERSION = 1
LIBRARY_NAME = "kernels.so"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def variant_symbol(spec: KernelSpec, bucket: dict[str, int]) -> str:
    """Exported name of one length variant: the spec name, plus e.g. "__m1" for the M=1 bucket."""
    return spec.name + "".join(f"__{dim.lower()}{value}" for dim, value in sorted(bucket.items()))


def lower_kernel(spec: KernelSpec, target, bucket: dict[str, int] | None = None):
    """The scheduled PrimFunc of one length variant of a spec, plus the knob values it used."""
    import tvm
    from tvm import s_tir

    import schedules

    bucket = bucket or {}
    symbol = variant_symbol(spec, bucket)
    layout = schedules.layout(spec, target, bucket)
    func = ops.get(spec.op).build(spec, layout).with_attr("global_symbol", symbol)
    sch = s_tir.Schedule(tvm.IRModule({symbol: func}))
    sch.work_on(symbol)
    schedules.schedule(sch, spec, target, bucket)
    return sch.mod[symbol], schedules.knobs(sch)


def manifest_entry(spec: KernelSpec, target) -> dict:
    """A kernel's arguments (the same for all its variants) and its variants, most specific first."""
    import schedules

    layout = schedules.layout(spec, target)
    variants = [{"symbol": variant_symbol(spec, b), "bucket": b, "tuning": "default"}
                for b in schedules.buckets(spec, target)]
    return {
        "op": spec.op,
        "spec": spec.to_json(),
        "layout": {k: v for k, v in layout.items() if k not in ("bucket", "m_tile")},
        "args": [a.to_json() for a in ops.get(spec.op).arguments(spec, layout)],
        "variants": variants,
    }


def build(specs: list[KernelSpec], target, out_dir: Path, *, toolchain: Toolchain,
          model: dict | None = None, progress: Callable[[str], None] = print) -> Path:
    """Schedule, compile and link every spec; write out_dir/{kernels.so, manifest.json}. Returns the manifest path."""
    import tvm

    if not specs:
        raise ValueError("nothing to build: the selection of ops left no kernels")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    funcs, kernels = {}, {}
    for index, spec in enumerate(specs, 1):
        progress(f"[{index}/{len(specs)}] scheduling {spec.name}")
        kernels[spec.name] = manifest_entry(spec, target)
        for variant in kernels[spec.name]["variants"]:
            funcs[variant["symbol"]], variant["knobs"] = lower_kernel(spec, target, variant["bucket"])
    progress(f"compiling {len(funcs)} functions of {len(specs)} kernels for {target.name} ({target.llvm.get('mtriple', 'host')})")
    exe = tvm.compile(tvm.IRModule(funcs), target.tvm_target())
    progress(f"linking with {toolchain.describe()}")
    library = out_dir / LIBRARY_NAME
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        staged = Path(tmp) / LIBRARY_NAME
        exe.export_library(str(staged), fcompile=toolchain.fcompile())
        os.replace(staged, library)
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "target": target.to_json(),
        "model": model,
        "library": LIBRARY_NAME,
        "artifacts": {LIBRARY_NAME: sha256_of(library)},
        "tools": {
            "apache-tvm": _version("apache-tvm"),
            "apache-tvm-ffi": _version("apache-tvm-ffi"),
            "numpy": _version("numpy"),
            "python": platform.python_version(),
            "toolchain": f"{toolchain.describe()} ({toolchain.version()})",
        },
        "kernels": kernels,
    }
    manifest_path = out_dir / "manifest.json"
    staged_manifest = manifest_path.with_suffix(".json.tmp")
    staged_manifest.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(staged_manifest, manifest_path)
    progress(f"built {len(specs)} kernels into {out_dir} in {time.time() - start:.1f} s")
    return manifest_path


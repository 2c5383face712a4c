"""Writing manifest.json, the contract between build and loader (compiler.runtime.manifest reads it).

Per kernel: its op and spec, its arguments (names, shapes with symbolic dims named, dtypes, packing
steps; the same for every variant), and its length variants, most specific first, each with its
exported symbol, bucket, layout, knob values and tuning record. Per build: the target, the tools
and the sha256 of every artifact.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

from compiler import ops
from compiler.runtime.manifest import SCHEMA_VERSION, sha256_of
from compiler.specs import KernelSpec, variant_symbol

LIBRARY_NAME = "kernels.so"  # the artifact the native driver loads (compiler.backends.native writes it)
RUNNER_NAME = "runner"  # the program the runner driver starts (compiler.backends.hexagon writes it)


def package_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def public_layout(layout: dict) -> dict:
    """A layout as the manifest records it (the bucket is recorded beside it; the row tile is
    the schedule's business)."""
    return {k: v for k, v in layout.items() if k not in ("bucket", "m_tile")}


def kernel_entry(spec: KernelSpec, layout: dict, buckets: list[dict]) -> dict:
    """A kernel's arguments under `layout` (the any-length variant's; arguments are the same for
    every variant) and its variants, to be completed by the build."""
    return {
        "op": spec.op,
        "spec": spec.to_json(),
        "layout": public_layout(layout),
        "args": [a.to_json() for a in ops.get(spec.op).arguments(spec, layout)],
        "variants": [{"symbol": variant_symbol(spec, b), "bucket": b} for b in buckets],
    }


def write(out_dir: Path, *, target, model: dict | None, artifacts: list[str], tools: str, kernels: dict) -> Path:
    """out_dir/manifest.json, replaced atomically."""
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "target": target.to_json(),
        "model": model,
        "library": LIBRARY_NAME if LIBRARY_NAME in artifacts else None,
        **({"runner": RUNNER_NAME} if RUNNER_NAME in artifacts else {}),
        "artifacts": {name: sha256_of(out_dir / name) for name in artifacts},
        "tools": {
            "apache-tvm": package_version("apache-tvm"),
            "apache-tvm-ffi": package_version("apache-tvm-ffi"),
            "numpy": package_version("numpy"),
            "python": platform.python_version(),
            "toolchain": tools,
        },
        "kernels": kernels,
    }
    path = out_dir / "manifest.json"
    staged = path.with_suffix(".json.tmp")
    staged.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(staged, path)
    return path

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


def variant_layout(layout) -> dict:
    """A variant's layout (schedules.layouts) as its manifest entry records it (its bucket is
    recorded beside it)."""
    return {k: v for k, v in layout.to_json().items() if k != "bucket"}


def kernel_entry(spec: KernelSpec, variants: list[tuple[dict, dict]]) -> dict:
    """A kernel's entry from its variants' (bucket, layout), most specific first: its arguments
    (the same for every variant), the layout its variants share (each records its whole own), and
    its variants, to be completed by the build."""
    layouts = [variant_layout(layout) for _, layout in variants]
    shared = {k: v for k, v in layouts[0].items() if all(other.get(k) == v for other in layouts[1:])}
    arguments = [[a.to_json() for a in ops.get(spec.op).arguments(spec, layout)] for _, layout in variants]
    if any(args != arguments[0] for args in arguments[1:]):
        raise ValueError(f"{spec.name}: its length variants' layouts give different arguments")
    entry = {
        "op": spec.op,
        "spec": spec.to_json(),
        "layout": shared,
        "args": arguments[0],
        "variants": [{"symbol": variant_symbol(spec, bucket), "bucket": bucket, "layout": layout}
                     for (bucket, _), layout in zip(variants, layouts)],
    }
    at_least = ops.get(spec.op).dims_at_least(spec)
    if at_least:
        entry["dims_at_least"] = at_least
    return entry


def previous_artifacts(out_dir: Path) -> set[str] | None:
    """The files the last build of ours in out_dir wrote (its manifest's artifacts, only names that
    stay inside the folder), or None when out_dir holds no manifest.json: a rebuild may replace or
    delete those files and nothing else. A manifest.json that is not ours is a ValueError, so a build
    never writes into a folder that belongs to something else."""
    path = out_dir / "manifest.json"
    if not path.exists() and not path.is_symlink():
        return None
    try:
        found = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        found = None
    if not isinstance(found, dict) or not {"schema_version", "target", "kernels"} <= found.keys():
        raise ValueError(f"{path} is not the manifest of a build of ours; refusing to write into {out_dir}: "
                         "choose another output folder (--out) or remove it")
    artifacts = found.get("artifacts")
    return {name for name in artifacts if _stays_inside(out_dir, name)} if isinstance(artifacts, dict) else set()


def _stays_inside(out_dir: Path, name) -> bool:
    """Whether an artifact name from a manifest is a file path inside out_dir other than the manifest
    itself (a hand-edited manifest must not make a rebuild delete anything else)."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return False
    return Path(name) != Path("manifest.json") and (out_dir / name).parent.resolve().is_relative_to(out_dir.resolve())


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

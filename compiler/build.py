"""specs + target -> one shared library and its manifest.json (the contract with the loader)."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from compiler import ops
from compiler.loader import sha256_of
from compiler.specs import KernelSpec
from compiler.toolchain import Toolchain

MANIFEST_SCHEMA_VERSION = 1
LIBRARY_NAME = "kernels.so"
RUNNER_NAME = "runner"  # targets without Python (Hexagon): a static executable serving the kernels


def package_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def variant_symbol(spec: KernelSpec, bucket: dict) -> str:
    """Exported name of one length variant: the spec name, plus e.g. "__m1" for the M=1 bucket
    or "__l1to512" for the range bucket L in [1, 512]."""
    def part(dim, value):
        return f"__{dim.lower()}{value[0]}to{value[1]}" if isinstance(value, list) else f"__{dim.lower()}{value}"

    return spec.name + "".join(part(dim, value) for dim, value in sorted(bucket.items()))


def build_hexagon_runner(exe, symbols: list[str], output: Path, toolchain: Toolchain) -> None:
    """compiler/hexagon_runner.c + a table of the kernels + their object code -> a static program."""
    work = output.parent
    obj = work / "kernels.o"
    exe.mod.write_to_file(str(obj))
    entries = "\n".join(f'    {{"{s}", __tvm_ffi_{s}}},' for s in symbols)
    externs = "\n".join(f"extern int __tvm_ffi_{s}(void *, const TVMFFIAny *, int32_t, TVMFFIAny *);" for s in symbols)
    table = work / "kernel_table.c"
    table.write_text(f"""#include <stdint.h>
typedef struct {{ int32_t type_index; uint32_t zero_padding; union {{ int64_t i; double f; void *p; }} v; }} TVMFFIAny;
typedef int (*TVMFFISafeCallType)(void *, const TVMFFIAny *, int32_t, TVMFFIAny *);
typedef struct {{ const char *name; TVMFFISafeCallType fn; }} KernelEntry;
{externs}
const KernelEntry ekc_kernels[] = {{
{entries}
}};
const int ekc_num_kernels = {len(symbols)};
""")
    source = Path(__file__).with_name("hexagon_runner.c")
    toolchain.link_static_program(str(output), [str(source), str(table), str(obj)])


def lower_kernel(spec: KernelSpec, target, bucket: dict | None = None, database=None):
    """The scheduled PrimFunc of one length variant of a spec, the knob values it used, and its
    tuning: the best record of `database` for this variant replayed, else "default"."""
    import tvm
    from tvm import s_tir

    import schedules

    bucket = bucket or {}
    symbol = variant_symbol(spec, bucket)
    layout = schedules.layout(spec, target, bucket)
    func = ops.get(spec.op).build(spec, layout)
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))  # traces name the function "main"
    record = None
    if database is not None:
        from compiler.tune import best_record

        record = best_record(database, spec, target, bucket)
    if record is not None:
        record.trace.apply_to_schedule(sch, remove_postproc=True)
        tuning = {"run_ms": round(float(np.median([float(t) for t in record.run_secs])) * 1e3, 6)}
    else:
        sch = schedules.schedule(sch, spec, target, bucket)
        tuning = "default"
    return sch.mod["main"].with_attr("global_symbol", symbol), schedules.knobs(sch), tuning


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
          model: dict | None = None, tuning_dir: Path | None = None,
          progress: Callable[[str], None] = print) -> Path:
    """Schedule (replaying the best tuning record from `tuning_dir` where there is one), compile and
    link every spec; write out_dir/{kernels.so, manifest.json} (GPU targets: shaders/*.spv and the
    launches in the manifest). Returns the manifest path."""
    if not specs:
        raise ValueError("nothing to build: the selection of ops left no kernels")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    database = None
    if tuning_dir is not None and tuning_dir.is_dir():
        from compiler.tuning_db import open_database

        database = open_database(tuning_dir, warn=progress)
        progress(f"using tuning records from {tuning_dir}")
    elif tuning_dir is not None:
        progress(f"no tuning records at {tuning_dir}: every kernel uses its default schedule")
    funcs, kernels = {}, {}
    for index, spec in enumerate(specs, 1):
        progress(f"[{index}/{len(specs)}] scheduling {spec.name}")
        kernels[spec.name] = manifest_entry(spec, target)
        for variant in kernels[spec.name]["variants"]:
            symbol = variant["symbol"]
            funcs[symbol], variant["knobs"], variant["tuning"] = lower_kernel(spec, target, variant["bucket"], database)
            if variant["tuning"] == "default" and database is not None:
                progress(f"      {symbol}: no tuning record, default schedule")
            elif variant["tuning"] != "default":
                variant["tuning"]["database"] = str(tuning_dir)
                progress(f"      {symbol}: tuned record ({variant['tuning']['run_ms']:.4f} ms at its tuning shape)")
    if target.gpu is not None:
        artifacts = _build_gpu(funcs, kernels, target, out_dir, progress)
    else:
        artifacts = _build_cpu(funcs, target, out_dir, toolchain, progress)
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
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
            "toolchain": _describe_tools(target, toolchain),
        },
        "kernels": kernels,
    }
    manifest_path = out_dir / "manifest.json"
    staged_manifest = manifest_path.with_suffix(".json.tmp")
    staged_manifest.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(staged_manifest, manifest_path)
    progress(f"built {len(specs)} kernels into {out_dir} in {time.time() - start:.1f} s")
    return manifest_path


def _describe_tools(target, toolchain: Toolchain) -> str:
    if target.gpu is not None:
        from compiler.codegen import vulkan

        return vulkan.describe_tools()
    return f"{toolchain.describe()} ({toolchain.version()})"


def _build_gpu(funcs: dict, kernels: dict, target, out_dir: Path, progress) -> list[str]:
    """SPIR-V shaders under out_dir/shaders and each variant's launches in its manifest entry."""
    from compiler.codegen import vulkan

    progress(f"generating SPIR-V for {len(funcs)} functions ({target.name}, Vulkan {target.gpu.api_version})")
    plans, shader_files = vulkan.build(funcs, target.tvm_target(), target.gpu.api_version, out_dir,
                                       progress=progress)
    for entry in kernels.values():
        for variant in entry["variants"]:
            variant["vulkan"] = plans[variant["symbol"]]
    return shader_files


def _build_cpu(funcs: dict, target, out_dir: Path, toolchain: Toolchain, progress) -> list[str]:
    """One shared library (and for Hexagon, the runner program) in out_dir."""
    import tvm

    progress(f"compiling {len(funcs)} functions for {target.name} ({target.llvm.get('mtriple', 'host')})")
    exe = tvm.compile(tvm.IRModule(funcs), target.tvm_target())
    progress(f"linking with {toolchain.describe()}")
    library = out_dir / LIBRARY_NAME
    artifacts = [LIBRARY_NAME]
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        staged = Path(tmp) / LIBRARY_NAME
        exe.export_library(str(staged), fcompile=toolchain.fcompile())
        os.replace(staged, library)
        if target.runner == "hexagon":
            progress("linking the Hexagon runner (the library's kernels served over a pipe, e.g. under qemu-hexagon)")
            runner = Path(tmp) / RUNNER_NAME
            build_hexagon_runner(exe, sorted(funcs), runner, toolchain)
            os.replace(runner, out_dir / RUNNER_NAME)
            artifacts.append(RUNNER_NAME)
    return artifacts

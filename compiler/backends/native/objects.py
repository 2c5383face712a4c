"""Scheduled PrimFuncs -> object files, LLVM's code generation spread over the machine's cores.

LLVM emits a module's machine code in one thread, and for a large library that is most of a build
(two minutes for the test suite's Hexagon library). TVM releases the GIL while it emits, so the
functions are split into a few modules whose objects are written by a thread each and linked
together. Each object carries its own copy of TVM's weak helper symbols (the workspace and
parallel-launch hooks), which the linker merges.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from compiler.backends.base import build_workers


def emit_objects(funcs: dict, target, folder: Path, jobs: int | None = None) -> list[Path]:
    """Compile `funcs` ({symbol: scheduled PrimFunc}) for `target` and write them as object files
    in `folder`; returns their paths. Two parts per worker even out functions of unequal size. No part
    holds a single function: TVM gives a module of one function a `main` alias, which the library
    as a whole does not have."""
    import tvm

    jobs = jobs or build_workers()
    names = sorted(funcs)
    count = max(1, min(2 * jobs, len(names) // 2))
    parts = [names[i::count] for i in range(count)]
    executables = [tvm.compile(tvm.IRModule({name: funcs[name] for name in part}), target.tvm_target())
                   for part in parts]
    for exe in executables:
        if exe.mod.imports:  # a device module would need TVM's import packing (export_library)
            raise RuntimeError(f"a CPU build produced device modules ({[m.kind for m in exe.mod.imports]}); "
                               "the native backend links host code only")
    paths = [folder / f"kernels{index}.o" for index in range(len(executables))]
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda exe, path: exe.mod.write_to_file(str(path)), executables, paths))
    return paths

"""The native backend: one shared library of CPU kernels (LLVM through TVM, linked by the target's
cross toolchain), loaded by the runtime's native driver here, or for another ISA in a worker
process under qemu-user (the userland `setup-emulator` prepares: sysroot.py). Candidates are timed
by TVM itself: on this machine, or over TVM RPC on a board."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from compiler.backends.base import Backend, build_workers
from compiler.backends.native.objects import emit_objects
from compiler.manifest import LIBRARY_NAME
from compiler.toolchain import for_target


class NativeBackend(Backend):
    name = "native"

    def toolchain(self, target, *, cc=None, ndk=None, android_api=28):
        return for_target(target, cc=cc, ndk=ndk, android_api=android_api)

    def build(self, funcs, kernels, target, out_dir, toolchain, progress) -> list[str]:
        progress(f"compiling {len(funcs)} functions for {target.name} ({target.llvm.get('mtriple', 'host')}) "
                 f"on {build_workers()} threads")
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            objects = emit_objects(funcs, target, Path(tmp))
            progress(f"linking with {toolchain.describe()}")
            staged = Path(tmp) / LIBRARY_NAME
            toolchain.link_shared(str(staged), [str(o) for o in objects])
            os.replace(staged, out_dir / LIBRARY_NAME)
            return [LIBRARY_NAME, *self.extra_artifacts(objects, sorted(funcs), out_dir, Path(tmp), toolchain,
                                                        progress)]

    def extra_artifacts(self, objects: list[Path], symbols, out_dir: Path, tmp: Path, toolchain,
                        progress) -> list[str]:
        """Artifacts besides the library, from the library's object files (none here; the Hexagon
        backend adds its runner)."""
        return []

    def describe_tools(self, target, toolchain) -> str:
        return f"{toolchain.describe()} ({toolchain.version()})"

    def candidate_compiler(self, target, work_dir: str) -> Callable:
        import tvm

        toolchain = self.toolchain(target)

        def compile_one(build_input) -> str:
            exe = tvm.compile(build_input.mod, build_input.target)
            path = os.path.join(tempfile.mkdtemp(dir=work_dir), "candidate.so")
            exe.export_library(path, fcompile=toolchain.fcompile())
            return path

        return compile_one

    def tuning_runner(self, target, tracker, rpc_timeout, progress):
        if tracker is None:
            return "local"
        return tracker.runner(timeout_sec=rpc_timeout)

    def race(self, modules, task, target, rounds):
        from compiler.tuning.compare import time_side_by_side

        return time_side_by_side(modules, task, target, rounds)

    def model_runner(self, target, core, progress):
        from compiler.backends.native.cycle_model.runner import model_runner

        return model_runner(target, core, progress)

    def local_tuning_refusal(self, target) -> str | None:
        from compiler.runtime.host import native_ok

        ok, reason = native_ok(target.to_json())
        return None if ok else reason


BACKEND = NativeBackend()

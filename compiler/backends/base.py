"""The one interface every backend implements: how a target's kernels become artifacts, how tuning
candidates are compiled and timed, and which runtime driver calls them.

A backend is a plug-in: the target's data names it (`backend = "..."` in targets/*.toml), the
pipeline asks `compiler.backends.get(target)` and never branches on the kind of target.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path


def device_slug(name: str) -> str:
    """A device's name as a tuning-log folder name ("llvmpipe (LLVM 15.0.6)" -> "llvmpipe-llvm-15-0-6")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def build_workers() -> int:
    """How many threads a build spreads its code generation over: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Backend(ABC):
    name: str  # as targets name it; also the runtime driver's key (compiler.runtime.DRIVERS)
    # Why `bench` does not race this backend's kernels in this process (None: it does).
    bench_refusal: str | None = None
    # The environment variable that picks which of this machine's devices runs the kernels (and so
    # whose tuning records a build reads), if any.
    device_variable: str | None = None

    @abstractmethod
    def toolchain(self, target, *, cc: str | None = None, ndk: str | None = None, android_api: int = 28):
        """The compiler.toolchain.Toolchain that links the target's code (None where none is needed)."""

    @abstractmethod
    def build(self, funcs: dict, kernels: dict, target, out_dir: Path, toolchain,
              progress: Callable[[str], None]) -> list[str]:
        """Compile the scheduled PrimFuncs (by exported symbol) into out_dir; return the artifact file
        names. May add per-variant facts to the manifest entries in `kernels` (GPU launches)."""

    @abstractmethod
    def describe_tools(self, target, toolchain) -> str:
        """The tools that made the artifacts, for the manifest."""

    @abstractmethod
    def candidate_compiler(self, target, work_dir: str) -> Callable:
        """compile_one(build_input) -> artifact path, for MetaSchedule's in-process builder."""

    @abstractmethod
    def tuning_runner(self, target, tracker, rpc_timeout: int, progress: Callable[[str], None]):
        """Where candidates are timed: this machine (tracker None) or the devices under a
        compiler.tuning.rpc.Tracker's key. A MetaSchedule runner (or "local")."""

    def local_tuning_refusal(self, target) -> str | None:
        """Why this machine cannot time the target's candidates itself (None: it can)."""
        return None

    def model_runner(self, target, core, progress: Callable[[str], None]):
        """A MetaSchedule runner that costs candidates by a model of `core` (targets.Core) instead
        of timing them, for a core no device of which is at hand."""
        raise ValueError(f"there is no cycle model for {target.name}'s kernels (it models aarch64 builds)")

    def race(self, modules: dict, task, target, rounds: int) -> dict:
        """Time scheduled IRModules of one task side by side on this machine (alternating rounds,
        medians), each output checked against the first module's: {name: {"median_s", "min_s",
        "max_s", "rate", "matches_default"}}."""
        raise ValueError(f"{target.name}'s kernels cannot be timed side by side on this machine")

    def host_device(self, target) -> str:
        """A stable name for the device this machine runs the target's kernels on: the CPU's model
        and core count ("amd-epyc-2c")."""
        import os
        import platform

        from compiler.runtime.host import cpu_model

        slug = device_slug(cpu_model()) or platform.machine()
        return f"{slug}-{os.cpu_count()}c"


class RemoteMeasurement(ABC):
    """A backend whose candidates TVM's runtime cannot time: `compiler rpc-server` registers
    `<measure_func>.measure` and `.describe` on the device, which call these."""

    measure_func: str

    @abstractmethod
    def time_candidate(self, folder: Path, args_info: list) -> list[float]:
        """Seconds per call of the candidate unpacked in `folder`, on this machine."""

    @abstractmethod
    def describe_measurement(self) -> str:
        """Where this machine times candidates, saying EMULATED where it is."""

"""The Hexagon backend: the native backend's library plus a runner program (program.py) that
serves its kernels where no Python runs; tuning candidates are each linked into their own runner
and timed inside it (tuning.py), on a device running `compiler rpc-server` (here: qemu-hexagon)."""

from __future__ import annotations

import os
from pathlib import Path

from compiler.backends.base import RemoteMeasurement
from compiler.backends.hexagon import tuning
from compiler.backends.hexagon.program import link_runner
from compiler.backends.native import NativeBackend
from compiler.manifest import RUNNER_NAME


class HexagonBackend(NativeBackend, RemoteMeasurement):
    name = "hexagon"
    measure_func = tuning.MEASURE_FUNC

    def extra_artifacts(self, objects: list[Path], symbols, out_dir: Path, tmp: Path, toolchain,
                        progress) -> list[str]:
        progress("linking the Hexagon runner (the library's kernels served over a pipe, e.g. under qemu-hexagon)")
        runner = tmp / RUNNER_NAME
        link_runner(objects, symbols, runner, toolchain)
        os.replace(runner, out_dir / RUNNER_NAME)
        return [RUNNER_NAME]

    def candidate_compiler(self, target, work_dir: str):
        return tuning.runner_candidate(target, self.toolchain(target), work_dir)

    def tuning_runner(self, target, tracker, rpc_timeout, progress):
        if tracker is None:
            return "local"  # on a Hexagon machine itself (local_tuning_refusal stops it elsewhere)
        progress(tracker.describe(self.measure_func, rpc_timeout))
        return tracker.measuring_runner(timeout_sec=rpc_timeout, functions=self.measure_func)

    def time_candidate(self, folder: Path, args_info: list) -> list[float]:
        return tuning.time_candidate(folder, args_info)

    def describe_measurement(self) -> str:
        return tuning.describe()


BACKEND = HexagonBackend()

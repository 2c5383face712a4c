"""Tuning candidates for Hexagon: each is linked into its own runner program (as builds are) and
timed inside it, so the pipe that feeds it is not in the measurement. No Python runs on the DSP,
so the timing happens where compiler.tuning.rpc_server runs it: here under the target's emulator
(qemu-hexagon), whose timings are the emulator's."""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from pathlib import Path

from compiler.backends.hexagon.program import link_runner, write_object
from compiler.manifest import RUNNER_NAME
from compiler.runtime.drivers.runner import RunnerDriver
from compiler.runtime.host import missing_emulator
from compiler.backends.candidate_inputs import random_arguments

RUN_REPEATS = 5
MEASURE_FUNC = "ekc.hexagon"  # compiler.tuning.rpc_server registers <this>.measure and <this>.describe
_TARGET_FILE = "target.json"  # the candidate's target facts (its ISA and emulator), read where it is timed


def runner_candidate(target, toolchain, work_dir: str):
    """compile_one for MetaSchedule's in-process builder: the candidate's runner in a fresh folder
    (its artifact), with the target's facts beside it."""
    import tvm

    def compile_one(build_input) -> str:
        out = Path(tempfile.mkdtemp(dir=work_dir))
        exe = tvm.compile(build_input.mod, build_input.target)
        link_runner([write_object(exe, out / "kernels.o")], ["main"], out / RUNNER_NAME, toolchain)
        (out / _TARGET_FILE).write_text(json.dumps(target.to_json()))
        return str(out / RUNNER_NAME)

    return compile_one


def _emulator(target: dict) -> str | None:
    """None on a machine of the target's ISA; else the target's emulator, which must be installed."""
    if platform.machine() == target["isa"]:
        return None
    emulator = target.get("emulator")
    if not emulator or shutil.which(emulator) is None:
        raise RuntimeError(f"no way to run {target['isa']} code here: "
                           + (missing_emulator(emulator) if emulator else "the target names no emulator"))
    return emulator


def describe() -> str:
    import targets

    emulator = _emulator(targets.get("hexagon").to_json())
    if emulator is None:
        return f"measuring on this {platform.machine()} machine"
    return (f"measuring under {emulator}: EMULATED; its timings rank candidates for the emulator only, "
            "not for a DSP")


def time_candidate(folder: Path, args_info: list) -> list[float]:
    """Seconds per call of the candidate runner in `folder`: every argument kept in the runner, one
    warm-up call, then RUN_REPEATS calls timed inside it. `args_info` holds MetaSchedule's
    ["TENSOR", dtype, shape] per argument."""
    target = json.loads((folder / _TARGET_FILE).read_text())
    (folder / RUNNER_NAME).chmod(0o755)
    driver = RunnerDriver(folder / RUNNER_NAME, _emulator(target))
    try:
        arrays = random_arguments(args_info)
        kept = driver.keep(len(arrays), dict(enumerate(arrays)))
        driver.call_kept("main", kept, [], [], [])
        return driver.time_kept("main", kept, RUN_REPEATS)
    finally:
        driver.close()

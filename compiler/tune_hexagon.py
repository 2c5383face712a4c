"""MetaSchedule's builder and measurement for Hexagon: each candidate is linked into its own
runner program (compiler/hexagon_runner.c, as builds are) and timed inside it, so the pipe that
feeds it is not in the measurement. No Python runs on the DSP, so the timing happens where
compiler.rpc_server runs it: here under qemu-hexagon, whose timings are the emulator's."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from compiler.candidate_inputs import random_arguments

RUN_REPEATS = 5
MEASURE_FUNC = "ekc.hexagon"  # compiler.rpc_server registers <this>.measure and <this>.describe
RUNNER = "runner"


def runner_candidate(target, work_dir: str):
    """compile_one for tune.in_process_builder: the candidate's runner in a fresh folder (its
    artifact)."""
    import tvm

    from compiler import toolchain
    from compiler.build import build_hexagon_runner

    tools = toolchain.for_target(target)

    def compile_one(build_input) -> str:
        out = Path(tempfile.mkdtemp(dir=work_dir))
        exe = tvm.compile(build_input.mod, build_input.target)
        build_hexagon_runner(exe, ["main"], out / RUNNER, tools)
        return str(out / RUNNER)

    return compile_one


def emulator() -> str:
    """The program that runs Hexagon code on this machine."""
    if shutil.which("qemu-hexagon") is None:
        raise RuntimeError("no way to run Hexagon code here: qemu-hexagon is not installed "
                           "(Debian: apt-get install qemu-user)")
    return "qemu-hexagon"


def describe() -> str:
    return (f"measuring under {emulator()}: EMULATED; its timings rank candidates for the emulator only, "
            "not for a DSP")


def time_candidate(folder: Path, args_info: list) -> list[float]:
    """Seconds per call of the candidate runner in `folder`: every argument kept in the runner, one
    warm-up call, then RUN_REPEATS calls timed inside it. `args_info` holds MetaSchedule's
    ["TENSOR", dtype, shape] per argument."""
    from compiler.loader import RunnerBackend

    backend = RunnerBackend(folder / RUNNER, emulator())
    try:
        arrays = random_arguments(args_info)
        kept = backend.keep(len(arrays), dict(enumerate(arrays)))
        backend.call_kept("main", kept, [], [], [])
        return backend.time_kept("main", kept, RUN_REPEATS)
    finally:
        backend.close()

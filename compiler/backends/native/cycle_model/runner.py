"""A MetaSchedule runner that "measures" aarch64 candidates by the cycle model of one ARM core: each
candidate library's call is counted under qemu-aarch64 (counts.py) and costed by the pinned llvm-mca
(mca.py); its "run time" is the modelled cycles at the core's clock. `tune --target arm --core C`
searches with it, so a core we have no board of still gets a tuned schedule, recorded as MODELLED
(the database folder is named model-<core>).

A batch of candidates is counted in one emulator run per worker (the emulated CPython's start-up,
~7 s, dominates a small kernel's count); a failing run is retried one candidate at a time, so one
crashing candidate costs only itself."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from compiler.backends.candidate_inputs import random_arguments
from compiler.backends.native.cycle_model import blocks_cost, instruction_text
from compiler.backends.native.cycle_model.counts import Call, count_calls
from compiler.backends.native.cycle_model.mca import ModelError, check_version

SYMBOL = "main"  # the function MetaSchedule's candidates export


def modelled_seconds(libraries: list[Path], arguments: list[list], cores, *, emulator: str) -> list[dict | str]:
    """Per candidate library (its kernel called once on `arguments`), the modelled seconds of the
    call on each of `cores` ({core name: seconds}; the counts are the same for every core), or the
    error that stopped it."""
    try:
        counted = count_calls([Call(lib, SYMBOL, args, []) for lib, args in zip(libraries, arguments)],
                              emulator=emulator)
    except ModelError as err:
        if len(libraries) == 1:
            return [str(err)]
        return [result for lib, args in zip(libraries, arguments)
                for result in modelled_seconds([lib], [args], cores, emulator=emulator)]
    results = []
    for library, blocks in zip(libraries, counted):
        if not blocks:
            results.append(f"the counted run of {library.name} executed none of its code")
            continue
        text = instruction_text(library)
        results.append({core.name: blocks_cost(text, blocks, core)[1] / (core.ghz * 1e9) for core in cores})
    return results


def model_runner(target, core, progress: Callable[[str], None], *, workers: int | None = None):
    """The MetaSchedule runner timing `target`'s candidates by the cycle model of `core`
    (targets.Core); `workers` emulator runs at once (default: one per CPU)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    if target.isa != "aarch64" or not target.emulator:
        raise ValueError(f"the cycle model stands for ARM cores; {target.name} is {target.isa}")
    check_version()  # a missing or wrong llvm-mca fails now, not once per candidate
    workers = max(1, workers or os.cpu_count() or 1)
    progress(f"candidates are MODELLED on {core.name} (qemu-aarch64 block counts x llvm-mca {core.mca_cpu}; "
             "one core, L1 hits), not timed")

    @derived_object
    class ModelRunner(PyRunner):
        def run(self, runner_inputs):
            libraries = [Path(r.artifact_path) for r in runner_inputs]
            arguments = [random_arguments([info.as_json() for info in r.args_info]) for r in runner_inputs]
            shares = [list(range(i, len(libraries), workers)) for i in range(min(workers, len(libraries)))]
            with ThreadPoolExecutor(len(shares)) as pool:
                answers = pool.map(lambda share: modelled_seconds([libraries[i] for i in share],
                                                                  [arguments[i] for i in share], [core],
                                                                  emulator=target.emulator), shares)
                results: list = [None] * len(libraries)
                for share, answer in zip(shares, answers):
                    for i, result in zip(share, answer):
                        results[i] = result
            return [LocalRunnerFuture(res=[r[core.name]]) if isinstance(r, dict) else LocalRunnerFuture(error_message=r)
                    for r in results]

    return ModelRunner()

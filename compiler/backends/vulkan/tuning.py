"""Tuning candidates for Vulkan targets: candidates are compiled by our SPIR-V
codegen and timed through the loader's Vulkan dispatcher, on this machine's Vulkan device (lavapipe
here, which the tuner's device line says) or over TVM RPC on a phone or board that runs
`python -m compiler rpc-server` (compiler.rpc_server)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from compiler.backends.candidate_inputs import random_arguments

RUN_REPEATS = 5
MEASURE_FUNC = "ekc.vulkan"  # compiler.tuning.rpc_server registers <this>.measure and <this>.describe


def spirv_candidate(target, work_dir: str):
    """compile_one for MetaSchedule's in-process builder: a candidate's shaders and launch plan in a fresh
    folder; the artifact is its plan.json."""
    from compiler.backends.vulkan import spirv

    def compile_one(build_input) -> str:
        out = Path(tempfile.mkdtemp(dir=work_dir))
        func = build_input.mod["main"].with_attr("global_symbol", "main")
        plans, _ = spirv.build({"main": func}, build_input.target, target.gpu.api_version, out,
                                progress=lambda _: None)
        (out / "plan.json").write_text(json.dumps(plans["main"]))
        return str(out / "plan.json")

    return compile_one


def describe_local() -> str:
    """The tuner's line naming where candidates are timed, saying so when the driver emulates a GPU."""
    from compiler.runtime.drivers.vulkan_device import Device

    device = Device()
    try:
        if device.is_cpu:
            return (f"measuring on {device.name}: EMULATED (a CPU Vulkan driver); its timings rank "
                    "candidates for this driver only, not for a phone's GPU")
        return f"measuring on {device.name}"
    finally:
        device.close()


def _candidate_driver(folder: Path, device):
    """The loader's Vulkan driver over one candidate's folder (plan.json and shaders), as "main"."""
    from compiler.runtime.drivers.vulkan import VulkanDriver

    plan = json.loads((folder / "plan.json").read_text())
    manifest = {"kernels": {"main": {"args": [], "variants": [{"symbol": "main", "vulkan": plan}]}}}
    return VulkanDriver(folder, manifest, device=device)


def time_candidate(folder: Path, args_info: list, device) -> list[float]:
    """Seconds per launch of the candidate in `folder` (its plan.json and shaders): one warm-up call
    that also creates its pipelines, then RUN_REPEATS timed calls with every argument resident (as
    weights are in use). `args_info` holds MetaSchedule's ["TENSOR", dtype, shape] per argument."""
    backend = _candidate_driver(folder, device)
    try:
        arrays = random_arguments(args_info)
        kept = backend.keep(len(arrays), dict(enumerate(arrays)))
        backend.call_kept("main", kept, [], [], [])
        times = []
        for _ in range(RUN_REPEATS):
            start = time.perf_counter()
            backend.call_kept("main", kept, [], [], [])
            times.append(time.perf_counter() - start)
        return times
    finally:
        backend.close()


def runner():
    """Times candidates on this machine's Vulkan device, one device for the whole search."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    from compiler.runtime.drivers.vulkan_device import Device

    @derived_object
    class DispatcherRunner(PyRunner):
        def __init__(self):
            super().__init__()
            self.device = None

        def run(self, runner_inputs):
            if self.device is None:
                self.device = Device()
            futures = []
            for runner_input in runner_inputs:
                try:
                    times = time_candidate(Path(runner_input.artifact_path).parent,
                                           [info.as_json() for info in runner_input.args_info], self.device)
                    futures.append(LocalRunnerFuture(res=times))
                except Exception as err:  # noqa: BLE001
                    futures.append(LocalRunnerFuture(error_message=f"{type(err).__name__}: {err}"))
            return futures

    return DispatcherRunner()


def race(modules: dict, task, target, rounds: int) -> dict:
    """Backend.race on this machine's Vulkan device: each module compiled by our codegen, all
    arguments resident (the same random ones for all), the last argument (the output) read back
    after one call, then compare.alternate's rounds of launch batches."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from compiler.runtime.drivers.vulkan_device import Device
    from compiler.tuning.compare import alternate

    first = next(iter(modules.values()))
    arrays = random_arguments([info.as_json() for info in ArgInfo.from_prim_func(first["main"])])
    device = Device()
    drivers, contestants, outputs = [], {}, {}
    with tempfile.TemporaryDirectory() as work:
        try:
            compile_one = spirv_candidate(target, work)
            for name, mod in modules.items():
                driver = _candidate_driver(Path(compile_one(_Candidate(mod, target.tvm_target()))).parent, device)
                drivers.append(driver)
                kept = driver.keep(len(arrays), dict(enumerate(arrays)))

                def call(driver=driver, kept=kept):
                    driver.call_kept("main", kept, [], [], [])

                def batch(n, call=call):
                    start = time.perf_counter()
                    for _ in range(n):
                        call()
                    return (time.perf_counter() - start) / n

                call()
                buffer, shape, _, dtype = kept[len(arrays) - 1]
                outputs[name] = buffer.read(shape, dtype)
                contestants[name] = (call, batch)
            return alternate(contestants, outputs, task.work, rounds)
        finally:
            for driver in drivers:
                driver.close()
            device.close()


class _Candidate:
    """What spirv_candidate's compile_one reads of MetaSchedule's BuilderInput."""

    def __init__(self, mod, target):
        self.mod = mod
        self.target = target

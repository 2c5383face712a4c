"""MetaSchedule's builder and runner for Vulkan targets: candidates are compiled by our SPIR-V
codegen and timed through the loader's Vulkan dispatcher (on lavapipe here, which the tuner's
device name says; on a phone's driver where this runs on the phone)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

RUN_REPEATS = 5


def spirv_candidate(target, work_dir: str):
    """compile_one for tune.in_process_builder: a candidate's shaders and launch plan in a fresh
    folder; the artifact is its plan.json."""
    from compiler.codegen import vulkan

    def compile_one(build_input) -> str:
        out = Path(tempfile.mkdtemp(dir=work_dir))
        func = build_input.mod["main"].with_attr("global_symbol", "main")
        plans, _ = vulkan.build({"main": func}, build_input.target, target.gpu.api_version, out,
                                progress=lambda _: None)
        (out / "plan.json").write_text(json.dumps(plans["main"]))
        return str(out / "plan.json")

    return compile_one


def describe_device() -> str:
    from compiler.vulkan_runtime import Device

    device = Device()
    try:
        if device.is_cpu:
            return (f"measuring on {device.name}: EMULATED (a CPU Vulkan driver); its timings rank "
                    "candidates for this driver only, not for a phone's GPU")
        return f"measuring on {device.name}"
    finally:
        device.close()


def _random(dtype: str, shape, rng) -> np.ndarray:
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 8, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def runner():
    """Times each candidate's launches with all arguments resident (weights are, in use), after one
    warm-up call that also creates its pipelines."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    from compiler.vulkan_runtime import Device, VulkanBackend

    @derived_object
    class DispatcherRunner(PyRunner):
        def __init__(self):
            super().__init__()
            self.device = None

        def run(self, runner_inputs):
            if self.device is None:
                self.device = Device()
            rng = np.random.default_rng(0)
            futures = []
            for runner_input in runner_inputs:
                backend = None
                try:
                    path = Path(runner_input.artifact_path)
                    plan = json.loads(path.read_text())
                    manifest = {"kernels": {"main": {"args": [], "variants": [{"symbol": "main", "vulkan": plan}]}}}
                    backend = VulkanBackend(path.parent, manifest, device=self.device)
                    arrays = [_random(info.as_json()[1], info.as_json()[2], rng) for info in runner_input.args_info]
                    kept = backend.keep(len(arrays), dict(enumerate(arrays)))
                    backend.call_kept("main", kept, [], [], [])
                    times = []
                    for _ in range(RUN_REPEATS):
                        start = time.perf_counter()
                        backend.call_kept("main", kept, [], [], [])
                        times.append(time.perf_counter() - start)
                    futures.append(LocalRunnerFuture(res=times))
                except Exception as err:  # noqa: BLE001
                    futures.append(LocalRunnerFuture(error_message=f"{type(err).__name__}: {err}"))
                finally:
                    if backend is not None:
                        backend.close()
            return futures

    return DispatcherRunner()

"""MetaSchedule's builder and runners for Vulkan targets: candidates are compiled by our SPIR-V
codegen and timed through the loader's Vulkan dispatcher, on this machine's Vulkan device (lavapipe
here, which the tuner's device line says) or over TVM RPC on a phone or board that runs
`python -m compiler rpc-server` (compiler.rpc_server)."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

RUN_REPEATS = 5
# The functions compiler.rpc_server registers on the device.
MEASURE_FUNC = "ekc.vulkan.measure"
DESCRIBE_FUNC = "ekc.vulkan.describe"


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


def describe(device) -> str:
    """The tuner's line naming where candidates are timed, saying so when the driver emulates a GPU."""
    if device.is_cpu:
        return (f"measuring on {device.name}: EMULATED (a CPU Vulkan driver); its timings rank "
                "candidates for this driver only, not for a phone's GPU")
    return f"measuring on {device.name}"


def describe_local() -> str:
    from compiler.vulkan_runtime import Device

    device = Device()
    try:
        return describe(device)
    finally:
        device.close()


def _random(dtype: str, shape, rng) -> np.ndarray:
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 8, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def time_candidate(folder: Path, args_info: list, device) -> list[float]:
    """Seconds per launch of the candidate in `folder` (its plan.json and shaders): one warm-up call
    that also creates its pipelines, then RUN_REPEATS timed calls with every argument resident (as
    weights are in use). `args_info` holds MetaSchedule's ["TENSOR", dtype, shape] per argument."""
    from compiler.vulkan_runtime import VulkanBackend

    plan = json.loads((folder / "plan.json").read_text())
    manifest = {"kernels": {"main": {"args": [], "variants": [{"symbol": "main", "vulkan": plan}]}}}
    backend = VulkanBackend(folder, manifest, device=device)
    try:
        rng = np.random.default_rng(0)
        arrays = [_random(dtype, shape, rng) for _, dtype, shape in args_info]
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

    from compiler.vulkan_runtime import Device

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


# MetaSchedule's RPCRunner steps for Vulkan: it sends the candidate's folder as one tar and has the
# device time it (compiler.rpc_server); TVM's own steps would load a TVM module there instead.

def _upload(session, local_path: str, remote_path: str) -> str:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for file in Path(local_path).parent.iterdir():
            tar.add(file, arcname=file.name)
    session.upload(bytearray(data.getvalue()), remote_path + ".tar")
    return remote_path + ".tar"


def _arguments(session, device, args_info, alloc_repeat) -> list:
    return [list(args_info)]  # the device fills them: random data need not cross the network


def _measure(session, remote_tar: str, device, evaluator_config, repeated_args) -> list[float]:
    return json.loads(session.get_function(MEASURE_FUNC)(remote_tar, json.dumps(repeated_args[0])))


def _cleanup(session, remote_path) -> None:
    if session is not None and remote_path is not None:
        session.remove(remote_path + ".tar")


def rpc_runner(tracker, timeout_sec: int):
    """MetaSchedule's RPCRunner over `tracker` (a compiler.rpc.Tracker) with the Vulkan steps."""
    return tracker.runner(timeout_sec=timeout_sec, f_upload_module=_upload, f_alloc_argument=_arguments,
                          f_run_evaluator=_measure, f_cleanup=_cleanup)


def describe_remote(tracker, timeout_sec: int) -> str:
    """The device line of a device under `tracker`'s key, which also proves it serves our functions."""
    from compiler.rpc import RpcError

    session = tracker.session(timeout_sec)
    try:
        return session.get_function(DESCRIBE_FUNC)()
    except Exception as err:  # noqa: BLE001 (TVM raises a bare error for a missing remote function)
        if DESCRIBE_FUNC not in str(err):
            raise
        raise RpcError(f"the device under key {tracker.key!r} runs TVM's stock RPC server, which cannot time "
                       "Vulkan shaders; run `python -m compiler rpc-server --tracker HOST:PORT --key KEY` "
                       "on it instead") from None

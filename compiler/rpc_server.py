"""The device side of the autotuner's RPC route for targets whose kernels TVM's runtime cannot
time: TVM's RPC server with our measuring functions registered. Today that is Vulkan, whose
shaders run through the loader's dispatcher rather than a TVM module (compiler.tune_vulkan sends
each candidate's shaders and launch plan as one tar)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path


def _measure_vulkan(tar_name: str, args_json: str) -> str:
    import tvm

    from compiler import tune_vulkan
    from compiler.vulkan_runtime import Device

    tar_path = Path(tvm.get_global_func("tvm.rpc.server.workpath")(tar_name))
    folder = tar_path.with_suffix(".d")
    with tarfile.open(tar_path) as tar:
        tar.extractall(folder, filter="data")
    device = Device()  # per session: the server forks a process per session
    try:
        return json.dumps(tune_vulkan.time_candidate(folder, json.loads(args_json), device))
    finally:
        device.close()


def _describe_vulkan() -> str:
    from compiler import tune_vulkan

    return tune_vulkan.describe_local()


def register() -> None:
    """server_init_callback of TVM's RPC server: runs in its serving process, before any session."""
    import tvm_ffi

    from compiler import tune_vulkan

    tvm_ffi.register_global_func(tune_vulkan.MEASURE_FUNC, _measure_vulkan, override=True)
    tvm_ffi.register_global_func(tune_vulkan.DESCRIBE_FUNC, _describe_vulkan, override=True)


def serve(tracker, *, host: str, port: int, progress=print) -> None:
    """Serve under `tracker`'s key (a compiler.rpc.Tracker) until interrupted."""
    from tvm import rpc

    server = rpc.Server(host=host, port=port, port_end=port + 100, tracker_addr=(tracker.host, tracker.port),
                        key=tracker.key, server_init_callback=register)
    progress(f"serving on {host}:{server.port}, registered at {tracker.address} under key {tracker.key!r} "
             "(Ctrl-C stops)")
    try:
        server.proc.join()
    finally:
        server.terminate()

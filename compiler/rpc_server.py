"""The device side of the autotuner's RPC route for kernels TVM's runtime cannot time: TVM's RPC
server with our measuring functions registered. Vulkan shaders run through the loader's
dispatcher (compiler.tune_vulkan), Hexagon code in its runner program (compiler.tune_hexagon);
the tuner sends each candidate's folder as one tar (compiler.rpc.Tracker.measuring_runner)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path


def _unpack(tar_name: str) -> Path:
    import tvm

    tar_path = Path(tvm.get_global_func("tvm.rpc.server.workpath")(tar_name))
    folder = tar_path.with_suffix(".d")
    with tarfile.open(tar_path) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _measure_vulkan(tar_name: str, args_json: str) -> str:
    from compiler import tune_vulkan
    from compiler.vulkan_runtime import Device

    folder = _unpack(tar_name)
    device = Device()  # per session: the server forks a process per session
    try:
        return json.dumps(tune_vulkan.time_candidate(folder, json.loads(args_json), device))
    finally:
        device.close()


def _measure_hexagon(tar_name: str, args_json: str) -> str:
    from compiler import tune_hexagon

    folder = _unpack(tar_name)
    (folder / tune_hexagon.RUNNER).chmod(0o755)
    return json.dumps(tune_hexagon.time_candidate(folder, json.loads(args_json)))


def register() -> None:
    """server_init_callback of TVM's RPC server: runs in its serving process, before any session."""
    import tvm_ffi

    from compiler import tune_hexagon, tune_vulkan

    for prefix, measure, describe in ((tune_vulkan.MEASURE_FUNC, _measure_vulkan, tune_vulkan.describe_local),
                                      (tune_hexagon.MEASURE_FUNC, _measure_hexagon, tune_hexagon.describe)):
        tvm_ffi.register_global_func(prefix + ".measure", measure, override=True)
        tvm_ffi.register_global_func(prefix + ".describe", describe, override=True)


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

"""The device side of the autotuner's RPC route for kernels TVM's runtime cannot time: TVM's RPC
server with our measuring functions registered (each backend's time_candidate: Vulkan shaders
through the loader's dispatcher, Hexagon code in its runner program);
the tuner sends each candidate's folder as one tar (compiler.tuning.rpc.Tracker.measuring_runner)."""

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


def _measuring_backends():
    """The backends whose candidates TVM's runtime cannot time (they measure them themselves)."""
    from compiler import backends
    from compiler.backends.base import RemoteMeasurement

    return [b for b in map(backends.by_name, backends.names()) if isinstance(b, RemoteMeasurement)]


def register() -> None:
    """server_init_callback of TVM's RPC server: runs in its serving process, before any session.
    Registers `<measure_func>.measure` and `.describe` of every backend that measures its own."""
    import tvm_ffi

    for backend in _measuring_backends():
        def measure(tar_name: str, args_json: str, backend=backend) -> str:
            return json.dumps(backend.time_candidate(_unpack(tar_name), json.loads(args_json)))

        tvm_ffi.register_global_func(backend.measure_func + ".measure", measure, override=True)
        tvm_ffi.register_global_func(backend.measure_func + ".describe", backend.describe_measurement, override=True)


def serve(tracker, *, host: str, port: int, progress=print) -> None:
    """Serve under `tracker`'s key (a compiler.tuning.rpc.Tracker) until interrupted."""
    from tvm import rpc

    server = rpc.Server(host=host, port=port, port_end=port + 100, tracker_addr=(tracker.host, tracker.port),
                        key=tracker.key, server_init_callback=register)
    progress(f"serving on {host}:{server.port}, registered at {tracker.address} under key {tracker.key!r} "
             "(Ctrl-C stops)")
    try:
        server.proc.join()
    finally:
        server.terminate()

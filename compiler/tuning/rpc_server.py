"""The device side of the autotuner's RPC route for kernels TVM's runtime cannot time: TVM's RPC
server with our measuring functions registered (each backend's time_candidate: Vulkan shaders
through the loader's dispatcher, Hexagon code in its runner program);
the tuner sends each candidate's folder as one tar (compiler.tuning.rpc.Tracker.measuring_runner)."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import tarfile
from pathlib import Path


def checked_tar_name(tar_name: str) -> str:
    """`tar_name` if it is one plain file name, else ValueError: it comes from the network, and the
    tar and the folder it unpacks to must stay inside TVM's server work folder."""
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if not tar_name or tar_name in (".", "..") or "\0" in tar_name or any(s in tar_name for s in separators):
        raise ValueError(f"refusing the candidate tar name {tar_name!r}: it must be a plain file name "
                         "inside the RPC server's work folder (no path separator, '..' or absolute path)")
    return tar_name


def _unpack(tar_name: str) -> Path:
    import tvm

    name = checked_tar_name(tar_name)
    tar_path = Path(tvm.get_global_func("tvm.rpc.server.workpath")(name))
    folder = tar_path.with_suffix(".d")
    with tarfile.open(tar_path) as tar:
        tar.extractall(folder, filter="data")
    return folder


def exposure_warning(host: str) -> str | None:
    """The warning for listening on `host` when it is not loopback: TVM RPC has no authentication,
    so whoever reaches the port can upload code and run it here."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (f"warning: rpc-server listens on {host}: anyone who can reach it can upload and run code on this "
            "machine (TVM RPC has no authentication); use a private network or an SSH tunnel")


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

    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    server = rpc.Server(host=host, port=port, port_end=port + 100, tracker_addr=(tracker.host, tracker.port),
                        key=tracker.key, server_init_callback=register)
    progress(f"serving on {host}:{server.port}, registered at {tracker.address} under key {tracker.key!r} "
             "(Ctrl-C stops)")
    try:
        server.proc.join()
    finally:
        server.terminate()

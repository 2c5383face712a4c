"""The emulated driver: a library built for another ISA (an ARM build on an x86 workstation) runs in
a worker process, an aarch64 CPython under qemu-user that loads it with the native driver
(compiler/runtime/worker.py) and answers calls over a pipe."""

from __future__ import annotations

import pickle
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from compiler.runtime.drivers.child import ChildProcess
from compiler.runtime.errors import LoaderError
from compiler.runtime.host import missing_emulator
from compiler.runtime.paths import emulated_environment, emulated_python, sysroot_dir

WORKER = Path(__file__).resolve().parents[1] / "worker.py"


def send(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def receive(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))



class EmulatedDriver(ChildProcess):
    """The same library, run by this file in a worker process under qemu-user."""

    mode = "emulated"

    def __init__(self, library: Path, isa: str, emulator: str):
        qemu = shutil.which(emulator)
        if qemu is None:
            raise LoaderError(f"{library} is built for {isa}, which this machine runs only under "
                              f"{emulator}: {missing_emulator(emulator)}")
        python = emulated_python(isa)
        if not python.is_file():
            raise LoaderError(f"no {isa} userland for {emulator} at {sysroot_dir(isa)}; "
                              f"create it with: python -m compiler setup-emulator --isa {isa}")
        env = emulated_environment(isa)
        self._stderr = tempfile.TemporaryFile()  # the worker's messages, quoted if it fails
        self._proc = subprocess.Popen(
            [qemu, str(python), str(WORKER), "--serve", str(library)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        self._request(("ping",))

    def _request(self, message):
        if self._proc.poll() is not None:
            raise LoaderError(f"the emulated worker has exited: {self._worker_log()}")
        try:
            send(self._proc.stdin, message)
            reply = receive(self._proc.stdout)
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:
            self._proc.wait(timeout=10)
            raise LoaderError(f"the emulated worker died (exit {self._proc.returncode}): {self._worker_log()}")
        status, payload = reply
        if status == "error":
            raise LoaderError(f"kernel failed under emulation: {payload}")
        return payload

    def call(self, name, inputs, out_specs):
        return self._request(("call", name, inputs, out_specs))

    def keep(self, count: int, resident: dict[int, np.ndarray]) -> int:
        """The worker keeps the arrays: later calls send only the per-call inputs."""
        return self._request(("keep", count, resident))

    def call_kept(self, name, kept: int, slots, inputs, out_specs):
        return self._request(("call_kept", name, kept, slots, inputs, out_specs))

    def _say_goodbye(self) -> None:
        send(self._proc.stdin, ("exit",))

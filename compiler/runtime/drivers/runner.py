"""The runner driver: kernels served by a build's static runner program (targets where no Python
runs: the Hexagon DSP), under the target's emulator here or directly on the device. The binary
protocol is the one compiler/backends/hexagon/runner.c serves."""

from __future__ import annotations

import platform
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from compiler.runtime.drivers.child import ChildProcess
from compiler.runtime.errors import LoaderError
from compiler.runtime.host import missing_emulator
from compiler.runtime.manifest import artifact_path
from compiler.runtime.memory import empty


class RunnerDriver(ChildProcess):
    """Kernels served by the build's static runner (targets without Python: Hexagon), under the
    target's emulator here or directly on the device; the binary protocol is in runner.c."""

    mode = "emulated"
    _CODES = {"i": 0, "u": 1, "f": 2}

    def __init__(self, runner: Path, emulator: str | None):
        command = [str(runner)]
        if emulator:
            qemu = shutil.which(emulator)
            if qemu is None:
                raise LoaderError(f"{runner.parent} needs {emulator} to run here: {missing_emulator(emulator)}")
            command = [qemu, str(runner)]
        else:
            self.mode = "native"
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)

    def _fail(self, what: str):
        self._proc.kill()
        self._proc.wait(timeout=10)
        return LoaderError(f"the kernel runner died {what} (exit {self._proc.returncode}): {self._worker_log()}")

    def _exchange(self, message: bytes, reply_bytes: int) -> bytes:
        try:
            self._proc.stdin.write(message)
            self._proc.stdin.flush()
            reply = self._proc.stdout.read(reply_bytes)
        except (BrokenPipeError, OSError):
            reply = b""
        if len(reply) != reply_bytes:
            raise self._fail("during a call")
        return reply

    @classmethod
    def _header(cls, role: int, dtype, shape) -> bytes:
        dtype = np.dtype(dtype)
        return struct.pack(f"<BBBHI{len(shape)}q", role, cls._CODES[dtype.kind], dtype.itemsize * 8, 1, len(shape),
                           *shape)

    def _call(self, name: str, parts: list[bytes], out_specs) -> list[np.ndarray]:
        encoded = name.encode()
        count = len(parts) + len(out_specs)
        message = [b"C", struct.pack("<I", len(encoded)), encoded, struct.pack("<I", count), *parts]
        message += [self._header(2, dtype, shape) for shape, dtype in out_specs]
        self._check_status(b"".join(message))
        outputs = []
        for shape, dtype in out_specs:
            out = empty(shape, dtype)
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(self._exchange(b"", out.nbytes), np.uint8)
            outputs.append(out)
        return outputs

    def time_kept(self, name: str, kept, repeats: int) -> list[float]:
        """Seconds of each of `repeats` back-to-back calls, timed inside the runner (the autotuner's
        measurement: no pipe in it). `kept` holds every argument, outputs included."""
        encoded = name.encode()
        message = [b"T", struct.pack("<I", len(encoded)), encoded, struct.pack("<I", len(kept)), *kept,
                   struct.pack("<I", repeats)]
        self._check_status(b"".join(message))
        return list(struct.unpack(f"<{repeats}d", self._exchange(b"", 8 * repeats)))

    def _check_status(self, request: bytes) -> None:
        """Send a call request; raise the runner's message if the kernel failed."""
        (status,) = struct.unpack("<i", self._exchange(request, 4))
        if status != 0:
            (length,) = struct.unpack("<I", self._exchange(b"", 4))
            raise LoaderError(f"kernel failed in the runner: {self._exchange(b'', length).decode(errors='replace')}")

    def _input(self, array: np.ndarray) -> bytes:
        array = np.ascontiguousarray(array)
        return self._header(0, array.dtype, array.shape) + struct.pack("<Q", array.nbytes) + array.tobytes()

    def call(self, name, inputs, out_specs):
        return self._call(name, [self._input(a) for a in inputs], out_specs)

    def keep(self, count: int, resident: dict[int, np.ndarray]):
        """The runner keeps each weight; the template holds (id, dtype, shape) at its position."""
        template = [None] * count
        for position, array in resident.items():
            array = np.ascontiguousarray(array)
            (index,) = struct.unpack("<I", self._exchange(b"K" + struct.pack("<Q", array.nbytes) + array.tobytes(), 4))
            template[position] = self._header(1, array.dtype, array.shape) + struct.pack("<I", index)
        return template

    def call_kept(self, name, kept, slots, inputs, out_specs):
        parts = list(kept)
        for position, array in zip(slots, inputs):
            parts[position] = self._input(array)
        return self._call(name, parts, out_specs)

    def _say_goodbye(self) -> None:
        self._proc.stdin.write(b"Q")
        self._proc.stdin.close()


def open_driver(directory: Path, manifest: dict[str, Any], emulate: bool | None) -> RunnerDriver:
    """The runner directly on a machine of the target's ISA, else under its emulator."""
    target = manifest["target"]
    runner = artifact_path(directory, manifest, "runner")
    on_device = platform.machine() == target["isa"] and not emulate
    if not on_device and not target.get("emulator"):
        why = target.get("compile_only") or f"no emulator runs {target['llvm'].get('mcpu', target['isa'])} code"
        raise LoaderError(f"{target['name']} builds are compile-only here: {why}")
    return RunnerDriver(runner, None if on_device else target["emulator"])

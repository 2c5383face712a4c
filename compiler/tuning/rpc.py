"""Measuring on devices over TVM RPC, the way TVM users tune on phones and boards: one tracker,
any number of devices running TVM's RPC server under one key. Candidates are cross-compiled here
and timed there by MetaSchedule's RPCRunner; devices sharing a key share the measurements.

`EmulatedDevice` is such a device on this machine: a tracker on loopback and TVM's RPC server in
an emulated CPython of the target ISA under qemu-user (the userland `setup-emulator` builds), or
our RPC server (compiler.rpc_server) timing Vulkan shaders on lavapipe or Hexagon runners under
qemu-hexagon. Its timings are the emulator's, not the chip's: its key and device name say "emulated".
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import targets
from compiler.runtime.host import missing_emulator
from compiler.runtime.paths import emulated_python, sysroot_dir


class RpcError(RuntimeError):
    pass


@dataclass(frozen=True)
class Tracker:
    host: str
    port: int
    key: str

    @classmethod
    def parse(cls, address: str, key: str) -> Tracker:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--rpc-tracker must be HOST:PORT, got {address!r}")
        if not key:
            raise ValueError("--rpc-key is required with --rpc-tracker")
        return cls(host, int(port), key)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def summary(self, timeout: float = 5.0) -> dict:
        """The tracker's queue and server summary. A plain socket probe comes first (OSError if
        nothing answers): TVM's connect_tracker would retry for a minute, loudly."""
        from tvm import rpc

        with socket.create_connection((self.host, self.port), timeout=timeout):
            pass
        return rpc.connect_tracker(self.host, self.port).summary()

    def devices(self, timeout: float = 5.0) -> int:
        """How many devices serve our key (free or busy); a clear error if the tracker cannot be
        reached or has no device under the key."""
        try:
            summary = self.summary(timeout)
        except OSError as err:
            raise RpcError(f"cannot reach the RPC tracker at {self.address}: {err.strerror or err}. Start one "
                           "with `python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190`") from None
        queues = summary.get("queue_info", {})
        # server_info keys read "server:<key>"
        servers = [s for s in summary.get("server_info", []) if str(s.get("key", "")).split(":", 1)[-1] == self.key]
        if self.key not in queues and not servers:
            known = sorted(queues) or ["none"]
            raise RpcError(f"no device is registered with key {self.key!r} at the tracker {self.address} "
                           f"(keys there: {', '.join(known)}); on the device run `python -m tvm.exec.rpc_server "
                           f"--tracker {self.address} --key {self.key}`")
        queue = queues.get(self.key, {})
        return max(len(servers), int(queue.get("free", 0)) + int(queue.get("pending", 0)), 1)

    def runner(self, *, timeout_sec: int, **steps):
        """MetaSchedule's RPC runner: one measuring worker per device under the key. `steps`
        replace RPCRunner's f_upload_module, f_run_evaluator, ... for devices TVM cannot time."""
        from tvm.s_tir import meta_schedule as ms

        config = ms.runner.RPCConfig(tracker_host=self.host, tracker_port=self.port, tracker_key=self.key,
                                     session_timeout_sec=timeout_sec)
        return ms.runner.RPCRunner(rpc_config=config, max_workers=self.devices(), **steps)

    def measuring_runner(self, *, timeout_sec: int, functions: str):
        """An RPC runner for candidates TVM's runtime cannot time (Vulkan shaders, Hexagon runners):
        each candidate's folder goes to the device as one tar and `<functions>.measure` there
        (compiler.rpc_server) times it."""
        return self.runner(timeout_sec=timeout_sec, f_upload_module=_upload_folder, f_alloc_argument=_arguments,
                           f_run_evaluator=functools.partial(_measure, functions + ".measure"), f_cleanup=_cleanup)

    def describe(self, functions: str, timeout_sec: int) -> str:
        """`<functions>.describe` on a device under the key: where it measures (which also proves
        it runs compiler.rpc_server)."""
        name = functions + ".describe"
        session = self.session(timeout_sec)
        try:
            return session.get_function(name)()
        except Exception as err:  # noqa: BLE001 (TVM raises a bare error for a missing remote function)
            if name not in str(err):
                raise
            raise RpcError(f"the device under key {self.key!r} runs TVM's stock RPC server, which cannot time "
                           "these kernels; run `python -m compiler rpc-server --tracker HOST:PORT --key KEY` "
                           "on it instead") from None

    def session(self, timeout_sec: int):
        """An RPC session with one device under the key (waiting while all are busy)."""
        from tvm import rpc

        return rpc.connect_tracker(self.host, self.port).request(self.key, session_timeout=timeout_sec)


# MetaSchedule RPCRunner steps of Tracker.measuring_runner (module functions: they are pickled to
# the runner's worker processes).

def _upload_folder(session, local_path: str, remote_path: str) -> str:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for file in Path(local_path).parent.iterdir():
            tar.add(file, arcname=file.name)
    session.upload(bytearray(data.getvalue()), remote_path + ".tar")
    return remote_path + ".tar"


def _arguments(session, device, args_info, alloc_repeat) -> list:
    return [list(args_info)]  # the device fills them: random data need not cross the network


def _measure(function: str, session, remote_tar: str, device, evaluator_config, repeated_args) -> list[float]:
    return json.loads(session.get_function(function)(remote_tar, json.dumps(repeated_args[0])))


def _cleanup(session, remote_path) -> None:
    if session is not None and remote_path is not None:
        session.remove(remote_path + ".tar")


@contextlib.contextmanager
def ending_on_signals(signals=(signal.SIGTERM, signal.SIGHUP, signal.SIGINT)):
    """Within this block SIGTERM and SIGHUP raise SystemExit (SIGINT KeyboardInterrupt), so that the
    `with` blocks inside exit: EmulatedDevice starts its tracker and server in their own sessions,
    which no signal to this process reaches, and only its stop() ends them (killed by a signal's
    default action, this process would leave them serving). A signal ignored when the block starts
    (SIGINT in a background job, SIGHUP under nohup) stays ignored, and once one has arrived the
    others are ignored until the block ends, so that the stop runs to its end. Main thread only."""
    handled = [s for s in signals if signal.getsignal(s) is not signal.SIG_IGN]

    def end(signum, frame):
        for s in handled:
            signal.signal(s, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, end) for s in handled}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmulatedDevice:
    """A tracker on loopback plus an RPC server for `isa`, registered with key "<isa>-<emulator>-emulated":
    TVM's server in an emulated aarch64 CPython, or ours (on lavapipe for "vulkan", timing runners
    under qemu-hexagon for "hexagon"). Use as a context manager; both stop on exit."""

    EMULATORS = {"aarch64": "qemu", "vulkan": "lavapipe", "hexagon": "qemu"}

    def __init__(self, isa: str = "aarch64", *, start_timeout: float = 300.0):
        if isa not in self.EMULATORS:
            raise RpcError(f"no emulated RPC device for {isa!r}; known: {', '.join(self.EMULATORS)}")
        self.isa = isa
        self.emulator = targets.emulator_for(isa) if isa != "vulkan" else None  # lavapipe is a driver
        self.key = f"{isa}-{self.EMULATORS[isa]}-emulated"
        self.start_timeout = start_timeout
        self._procs: list[tuple[subprocess.Popen, Path]] = []
        self._logs = tempfile.TemporaryDirectory(prefix="ekc-rpc-")
        self.tracker: Tracker | None = None

    def __enter__(self) -> EmulatedDevice:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        port = _free_port()
        self._spawn([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                     "--port-end", str(port + 1), "--silent"], os.environ.copy())
        self.tracker = Tracker("127.0.0.1", port, self.key)
        if self.isa == "aarch64":
            self._start_qemu_server()
        else:
            self._start_our_server()
        self._wait_registered()

    def _start_our_server(self) -> None:
        if self.isa == "vulkan":
            from compiler.runtime.drivers.vulkan_device import Device

            device = Device()
            name, is_cpu = device.name, device.is_cpu
            device.close()
            if not is_cpu:  # the key would call a real GPU's timings emulated
                raise RpcError(f"this machine's Vulkan device is {name}, not an emulator: serve it with "
                               "`python -m compiler rpc-server --tracker HOST:PORT --key KEY`")
        elif shutil.which(self.emulator) is None:
            raise RpcError(missing_emulator(self.emulator))
        self._spawn([sys.executable, "-m", "compiler", "rpc-server", "--tracker", self.tracker.address,
                     "--key", self.key, "--host", "127.0.0.1", "--port", str(_free_port())], os.environ.copy())

    def _start_qemu_server(self) -> None:
        root = sysroot_dir(self.isa)
        python = emulated_python(self.isa)
        if not (root / "rpc-site" / "tvm").is_dir() or not python.is_file():
            raise RpcError(f"no {self.isa} userland with TVM's RPC server at {root}; create it with: "
                           f"python -m compiler setup-emulator --isa {self.isa}")
        qemu = shutil.which(self.emulator)
        if qemu is None:
            raise RpcError(missing_emulator(self.emulator))
        # TVM's server re-executes sys.executable for its worker process; point that at a script
        # that starts the emulated CPython again (so no binfmt_misc registration is needed).
        relaunch = root / "python-under-qemu"
        relaunch.write_text(f'#!/bin/sh\nexec {shlex.quote(qemu)} {shlex.quote(str(python))} "$@"\n')
        relaunch.chmod(0o755)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "QEMU_LD_PREFIX": str(root / "root"),
               "PYTHONPATH": f"{root / 'rpc-site'}:{root / 'site'}", "HOME": os.environ.get("HOME", "/tmp")}
        server_port = _free_port()
        launcher = ("import runpy, sys; sys.executable = sys.argv.pop(1); "
                    "runpy.run_module('tvm.exec.rpc_server', run_name='__main__', alter_sys=True)")
        self._spawn([qemu, str(python), "-c", launcher, str(relaunch), "--host", "127.0.0.1",
                     "--port", str(server_port), "--port-end", str(server_port + 50),
                     "--tracker", self.tracker.address, "--key", self.key], env)

    def _spawn(self, cmd: list[str], env: dict[str, str]) -> None:
        log = Path(self._logs.name) / f"{len(self._procs)}.log"  # a file: a full pipe would stall the server
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self._procs.append((proc, log))

    def _wait_registered(self) -> None:
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            for proc, log in self._procs:
                if proc.poll() is not None:
                    output = log.read_text(errors="replace")[-3000:]
                    raise RpcError(f"`{' '.join(map(str, proc.args[:3]))} ...` exited with {proc.returncode}:\n{output}")
            try:
                queues = self.tracker.summary(timeout=2).get("queue_info", {})
                if queues.get(self.key, {}).get("free", 0) > 0:
                    return
            except (OSError, RuntimeError):
                pass  # the tracker is still starting
            time.sleep(1.0)
        raise RpcError(f"the emulated {self.isa} RPC server did not register within {self.start_timeout:.0f} s")

    def stop(self) -> None:
        for proc, _ in reversed(self._procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 15)
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()
                except ProcessLookupError:
                    pass
        self._procs.clear()
        self._logs.cleanup()

"""`python -m compiler rpc-emulator` stops its tracker and server when it is told to stop by a
signal, not only by Ctrl-C: they run in their own sessions, so the signal never reaches them and
only the emulator's own stop ends them. The real command, with sleepers standing in for the
tracker and the server (the faithful, slower check is test_rpc_emulator_signals.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# cmd_rpc_emulator as it is, with EmulatedDevice.start spawning two sleepers the way it spawns the
# tracker and the server (its _spawn: own session, output to a log file).
EMULATOR = r"""
import os, sys
from compiler import cli
from compiler.tuning import rpc

def start(self):
    for _ in range(2):
        self._spawn(["sleep", "600"], dict(os.environ))
    self.tracker = rpc.Tracker("127.0.0.1", 9, self.key)
    print("children", *[proc.pid for proc, _ in self._procs], flush=True)

rpc.EmulatedDevice.start = start
sys.exit(cli.main(["rpc-emulator", "--isa", "vulkan"]))
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_to_the_emulator_stops_its_tracker_and_server(signum, code):
    # The emulator keeps a signal ignored that it inherited ignored (as nohup or a background job
    # hands it on); a suite started as a background job passes SIGINT on ignored, one under nohup
    # SIGHUP: start it with the tested signal at its default.
    parent = subprocess.Popen([sys.executable, "-c", EMULATOR], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))
    children = []
    try:
        children = [int(pid) for pid in parent.stdout.readline().split()[1:]]
        assert len(children) == 2 and all(map(_alive, children))
        assert "device registered" in parent.stdout.readline()  # now in its serving loop
        parent.send_signal(signum)
        parent.wait(timeout=30)
        deadline = time.time() + 10
        while any(map(_alive, children)) and time.time() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in children if _alive(pid)], "the tracker / server outlived the emulator"
        assert parent.returncode == code, parent.stderr.read()  # 128 + the signal, as a shell reports it
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in children:  # before the fix they survive: end them (their own process groups)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)

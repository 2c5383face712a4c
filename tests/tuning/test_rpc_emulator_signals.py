"""The faithful check of test_rpc_emulator_stop.py: `python -m compiler rpc-emulator --isa vulkan`
(a TVM tracker and our RPC server on lavapipe, each in its own session) leaves no process behind
after a SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import require_emulator

pytestmark = pytest.mark.emulated

ROOT = Path(__file__).resolve().parents[2]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigterm_stops_the_emulated_vulkan_device():
    require_emulator("spirv")
    parent = subprocess.Popen([sys.executable, "-m", "compiler", "rpc-emulator", "--isa", "vulkan"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = []
    try:
        line = parent.stdout.readline()  # printed once the server is registered with the tracker
        assert "device registered" in line, line + parent.stderr.read()
        started = psutil.Process(parent.pid).children(recursive=True)
        assert len(started) >= 2 and all(map(_alive, started))  # the tracker and the server (and its workers)
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=60)
        deadline = time.time() + 15
        while any(map(_alive, started)) and time.time() < deadline:
            time.sleep(0.1)
        assert not [p.cmdline() for p in started if _alive(p)], "processes outlived the emulator"
        assert parent.returncode == 128 + signal.SIGTERM, parent.stderr.read()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for process in started:  # before the fix they survive, each in its own process group
            if _alive(process):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

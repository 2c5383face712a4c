"""apache-tvm-ffi 0.1.15 segfaults in Schedule.tensorize and when printing an IRModule; the project
pins 0.1.14.post0. Run both in a subprocess so a regression is a failed test, not a dead pytest."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

pytestmark = pytest.mark.unit

SCRIPT = """
import tvm
import targets
from compiler import build
from compiler.specs import make_spec

func, *_ = build.lower_kernel(make_spec("qgemm_w8a8", n=16, k=32), targets.get("arm"))  # tensorizes SDOT
text = tvm.IRModule({"main": func}).script()
assert "sdot" in text, "the SDOT intrinsic was not applied"
print("ok")
"""


def test_pinned_ffi_version():
    assert metadata.version("apache-tvm-ffi") == "0.1.14.post0"


def test_tensorize_and_print_do_not_crash():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]

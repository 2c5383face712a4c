"""Helpers in the per-user cache are made once when several processes need them at the same time
(the suite's parallel workers, a `bench` beside a `run`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

MAKER = """
import sys, time
from pathlib import Path
from compiler.runtime.paths import cache_dir, cache_lock
made = cache_dir() / "helper"
with cache_lock("helper"):
    if not made.is_file():
        with open(cache_dir() / "makers.log", "a") as log:
            log.write(sys.argv[1] + "\\n")
        time.sleep(0.5)  # long enough for the other process to arrive while this one makes it
        made.write_text("done")
print(made.read_text())
"""


@pytest.mark.unit
def test_two_processes_needing_one_missing_helper_make_it_once(tmp_path):
    env = {**os.environ, "EKC_CACHE_DIR": str(tmp_path)}
    makers = [subprocess.Popen([sys.executable, "-c", MAKER, str(i)], env=env, stdout=subprocess.PIPE, text=True)
              for i in range(3)]
    outputs = [p.communicate(timeout=60)[0].strip() for p in makers]
    assert [p.returncode for p in makers] == [0, 0, 0]
    assert outputs == ["done"] * 3  # each found it whole: made before it looked, or made by itself
    assert len((tmp_path / "makers.log").read_text().split()) == 1

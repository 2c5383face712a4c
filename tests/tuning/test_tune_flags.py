"""`tune`'s budget and device flags are checked before anything is prepared (one `error:` line, exit
code 2, no TVM imported), and the progress line never reports more trials than the budget or a
negative ETA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compiler import cli
from compiler.specs import make_spec
from compiler.tuning import database as tuning_db
from compiler.tuning import progress, search
from compiler.tuning.tasks import Task

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tune_calls(monkeypatch):
    """search.tune's calls: none is made when the flags are refused (before the fix, --trials 0 ran
    a 64-trial search)."""
    calls = []
    monkeypatch.setattr(search, "tune", lambda *args, **kwargs: calls.append(kwargs) or pytest.fail("tune ran"))
    return calls


@pytest.mark.parametrize("flags, message", [
    (["--trials", "0"], "--trials must be a whole number of at least 1, got 0"),
    (["--trials", "-1"], "--trials must be a whole number of at least 1, got -1"),
    (["--minutes", "0"], "--minutes must be a positive number of minutes, got 0"),
    (["--minutes", "-1"], "--minutes must be a positive number of minutes, got -1"),
    (["--minutes", "nan"], "--minutes must be a positive number of minutes, got nan"),
    (["--trials", "0", "--minutes", "5"], "--trials must be a whole number of at least 1, got 0"),
    (["--device", ".."], "device name '..' must be a plain folder name"),
    (["--device", "."], "device name '.' must be a plain folder name"),
    (["--device", "a/b"], "device name 'a/b' must be a plain folder name"),
    (["--rpc-timeout", "0"], "--rpc-timeout must be at least 1 second, got 0"),
])
def test_bad_tuning_flags_are_one_error_line_before_any_preparation(tmp_path, capsys, tune_calls, flags, message):
    code = cli.main(["tune", "--target", "x86", "--tuning-logs", str(tmp_path / "logs"), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert tune_calls == []
    assert not (tmp_path / "logs").exists()  # nothing written, not even a folder


def test_a_refused_flag_imports_no_tvm():
    """The refusal comes first: TVM and the kernel preparation (minutes) are never reached."""
    code = ("import sys; from compiler.cli import main; "
            "code = main(['tune', '--target', 'x86', '--trials', '-1']); "
            "print(code, 'tvm' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr
    assert result.stderr == "error: --trials must be a whole number of at least 1, got -1\n"


@pytest.mark.parametrize("flags, budget", [
    ([], (64, None)),
    (["--trials", "5"], (5, None)),
    (["--minutes", "2"], (None, 2.0)),
    (["--trials", "5", "--minutes", "0.5"], (5, 0.5)),
])
def test_the_budget_given_is_the_budget_used(tmp_path, monkeypatch, flags, budget):
    """No budget is 64 trials; --minutes alone leaves the trials open."""
    calls = []
    finished = search.TuningRun(tmp_path, [], 0)
    monkeypatch.setattr(search, "tune", lambda *args, **kwargs: calls.append(kwargs) or finished)
    monkeypatch.setattr(tuning_db, "host_device", lambda target: "test-host")
    assert cli.main(["tune", "--target", "x86", "--ops", "qgemm_w8a8", "--tuning-logs", str(tmp_path), *flags]) == 0
    assert (calls[0]["trials"], calls[0]["minutes"]) == budget


@pytest.mark.parametrize("device", [".", "..", "a/b", "", "../x86"])
def test_device_dir_refuses_anything_but_a_plain_name(tmp_path, device):
    """'.' and '..' would put the records into the target's folder or the logs root itself."""
    with pytest.raises(ValueError, match="device name"):
        tuning_db.device_dir(tmp_path, "x86", device)
    assert tuning_db.device_dir(tmp_path, "x86", "amd-epyc-2c.v2") == tmp_path / "x86" / "amd-epyc-2c.v2"


# --- the progress line ----------------------------------------------------------------------

def _task() -> Task:
    return Task(make_spec("qgemm_w8a8", n=64, k=128), {"M": 1}, {"M": 1}, mod=None, work=1e6, unit="GB/s")


def test_the_progress_line_never_passes_the_budget_nor_goes_negative():
    """MetaSchedule measures its last batch whole: 35 trials measured on a 32-trial budget."""
    task = _task()
    line = progress.progress_line(task, done=35, total=32, elapsed=40.0,
                                  eta=progress.eta_seconds(35, 32, 40.0, None))
    assert "32/32 (+3 in the last batch) trials" in line and "ETA 0 s" in line
    assert "35/32" not in line and "-" not in line.split("ETA")[1].split("]")[0]
    assert progress.eta_seconds(35, 32, 40.0, to_deadline=-4.0) == 0
    assert progress.eta_seconds(8, 32, 40.0, None) == pytest.approx(120.0)  # 5 s a trial, 24 to go
    assert progress.eta_seconds(8, 32, 40.0, to_deadline=30.0) == pytest.approx(30.0)
    assert "[8/32 trials," in progress.progress_line(task, 8, 32, 40.0, 120.0)
    assert "[8 trials," in progress.progress_line(task, 8, None, 40.0, 30.0)


class _Result:
    def __init__(self, secs=None, error=None):
        self.error_msg, self.run_secs = error, secs


def test_the_measure_callback_clamps_a_last_batch_past_the_budget():
    """The callback's accounting (what MetaSchedule's apply() runs), fed batches of 16 on a budget
    of 20: the second batch ends at 32 measured."""
    tasks, lines = [_task()], []
    for _ in range(2):
        batch = [_Result([1e-3])] * 15 + [_Result(error="build failed")]
        progress.measured(tasks, 0, [_Result()] * 16, batch, total=20, deadline=None, start=0.0,
                          progress=lines.append)
    assert tasks[0].trials == 32 and tasks[0].failures == 2 and len(tasks[0].history) == 32
    assert "[16/20 trials," in lines[0]
    assert "[20/20 (+12 in the last batch) trials," in lines[1] and "ETA 0 s" in lines[1]

"""Tuning for a core we do not have: `tune --target arm --core C` costs each candidate by the ARM
cycle model into tuning_logs/arm/model-C/, and builds for C read those records unless records
measured on such a core (tuned over RPC with --core C) exist; a cross build never reads records of
this machine's CPU."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import require_cycle_model

import targets
from compiler import backends, build, cli, selection
from compiler.backends.native.cycle_model import model_kernel
from compiler.backends.native.cycle_model.runner import modelled_seconds
from compiler.manifest import LIBRARY_NAME
from compiler.specs import make_spec
from compiler.tuning import database as tuning_db
from compiler.tuning import search, verdicts
from compiler.tuning.tasks import make_tasks


def _args(root: Path, **flags) -> argparse.Namespace:
    return argparse.Namespace(no_tuning=False, tuning_logs=str(root), device=None, core=None, **flags)


def _records(root: Path, target: str, device: str) -> Path:
    directory = tuning_db.device_dir(root, target, device)
    directory.mkdir(parents=True)
    (directory / tuning_db.RECORDS).write_text('[0, [["trace"], [0.1], {"kind": "llvm"}, []]]\n')
    return directory


@pytest.mark.unit
def test_a_cross_build_reads_its_cores_records_measured_before_modelled(tmp_path):
    arm = targets.get("arm")
    assert arm.default_core == "cortex-a76"
    modelled_dir = tuning_db.device_dir(tmp_path, "arm", "model-cortex-a76")
    assert selection.records_dir(_args(tmp_path), arm) == modelled_dir  # never this x86 CPU's folder
    measured_dir = _records(tmp_path, "arm", "cortex-a76")
    assert selection.records_dir(_args(tmp_path), arm) == measured_dir
    assert selection.records_dir(_args(tmp_path), arm, core="cortex-a55") == \
        tuning_db.device_dir(tmp_path, "arm", "model-cortex-a55")
    args = _args(tmp_path)
    args.core = "cortex-a55"
    assert selection.records_dir(args, arm) == tuning_db.device_dir(tmp_path, "arm", "model-cortex-a55")
    args.device = "my-board"  # a named database wins over any core
    assert selection.records_dir(args, arm) == tuning_db.device_dir(tmp_path, "arm", "my-board")


@pytest.mark.unit
def test_tuning_a_cross_arm_target_models_its_default_core(tmp_path):
    flags = dict(rpc_tracker=None, rpc_key=None, replay=None)
    tracker, device, core = selection.tune_route(_args(tmp_path, **flags), targets.get("arm-a55"))
    assert (tracker, device, core.name) == (None, "model-cortex-a55", "cortex-a55")
    args = _args(tmp_path, **flags)
    args.core = "cortex-x1"
    assert selection.tune_route(args, targets.get("arm"))[1:] == ("model-cortex-x1", targets.core("cortex-x1"))
    args.replay = "some.json"
    with pytest.raises(ValueError, match="takes no --core"):
        selection.tune_route(args, targets.get("arm"))


@pytest.mark.unit
def test_a_target_this_machine_runs_reads_its_own_records(tmp_path):
    x86 = targets.get("x86")
    assert x86.default_core is None
    assert selection.records_dir(_args(tmp_path), x86) == \
        tuning_db.device_dir(tmp_path, "x86", tuning_db.host_device(x86))


@pytest.mark.unit
@pytest.mark.parametrize("argv, message", [
    (["build", "--target", "x86", "--core", "cortex-a76"], "--core names an ARM core; x86 is x86_64"),
    (["build", "--target", "arm", "--core", "cortex-z9"], "unknown core 'cortex-z9'"),
    (["tune", "--target", "x86", "--core", "cortex-a76"], "--core names an ARM core; x86 is x86_64"),
])
def test_core_flags_are_checked(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(search, "tune", lambda *a, **k: pytest.fail("tune ran"))
    monkeypatch.setattr(build, "build", lambda *a, **k: pytest.fail("build ran"))
    assert cli.main([*argv, "--tuning-logs", str(tmp_path), "--out", str(tmp_path / "out")]
                    if argv[0] == "build" else [*argv, "--tuning-logs", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


@pytest.mark.emulated
def test_tune_by_the_cycle_model_then_build_for_that_core(tmp_path):
    require_cycle_model()
    target = targets.get("arm")
    spec = make_spec("qgemm_w8a8", n=64, k=256)
    lines = []
    run = search.tune([spec], target, device=tuning_db.modelled_device("cortex-a55"), logs_root=tmp_path / "logs",
                      trials=4, core=targets.core("cortex-a55"), progress=lines.append)
    assert any("MODELLED" in line for line in lines)
    assert run.directory == tmp_path / "logs" / "arm" / "model-cortex-a55"
    assert all(task.trials and not task.failures and task.best_secs < float("inf") for task in run.tasks)
    # each variant's best record raced against its default as `build` makes the kernel, by the model
    found = verdicts.load(run.directory)
    assert set(found) == {f"{spec.name}__m1", spec.name}, found
    for verdict in found.values():
        assert verdict["modelled"] == "cortex-a55" and verdict["kept"] == (verdict["speedup"] >= 1.0)
        assert verdict["speedup"] == pytest.approx(verdict["default_mcycles"] / verdict["tuned_mcycles"], rel=1e-3)
    assert sum(line.startswith("  race ") and "MODELLED" in line for line in lines) == 2, lines
    # the default it raced is the default schedule, as a build without records makes it
    plain = tmp_path / "plain"
    build.build([spec], target, plain, toolchain=backends.toolchain_for(target), progress=lambda _: None)
    default = model_kernel(plain, json.loads((plain / "manifest.json").read_text()), spec.name, {"M": 128},
                           targets.core("cortex-a55"))
    assert found[spec.name]["default_mcycles"] == pytest.approx(default.cycles / 1e6, rel=1e-6)
    out = tmp_path / "lib"
    build.build([spec], target, out, toolchain=backends.toolchain_for(target),
                tuning_dir=selection.records_dir(_args(tmp_path / "logs"), target, core="cortex-a55"),
                progress=lambda _: None)
    variants = json.loads((out / "manifest.json").read_text())["kernels"][spec.name]["variants"]
    for variant in variants:  # a record that lost its race leaves the default; the others are labelled a model
        kept = found[variant["symbol"]]["kept"]
        assert (variant["tuning"] != "default" and variant["tuning"]["modelled"]) if kept else variant["tuning"] == "default"


@pytest.mark.emulated
def test_one_failing_candidate_costs_only_itself(tmp_path):
    """A batch is counted in one emulator run; a candidate that cannot run (here: a library without
    the candidate's entry point) is retried alone and reported, the others still get their time,
    and counting is deterministic."""
    require_cycle_model()
    target = targets.get("arm")
    spec = make_spec("qgemm_w8a8", n=64, k=256)
    task = make_tasks([spec], target, lambda _: None)[0]
    compile_one = backends.get(target).candidate_compiler(target, str(tmp_path))
    from tvm import s_tir
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    import schedules
    from compiler.backends.candidate_inputs import random_arguments

    sch = s_tir.Schedule(task.mod)
    schedules.schedule(sch, spec, target, task.bucket)
    good = Path(compile_one(argparse.Namespace(mod=sch.mod, target=target.tvm_target())))
    wrong = tmp_path / "wrong"
    build.build([spec], target, wrong, toolchain=backends.toolchain_for(target), progress=lambda _: None)
    arguments = random_arguments([info.as_json() for info in ArgInfo.from_prim_func(sch.mod["main"])])
    twin = tmp_path / "twin.so"
    shutil.copy(good, twin)
    cores = [targets.core("cortex-a76"), targets.core("cortex-a55")]
    first, failed, second = modelled_seconds([good, wrong / LIBRARY_NAME, twin], [arguments] * 3, cores,
                                             emulator=target.emulator)
    assert isinstance(first, dict) and first == second
    assert 0 < first["cortex-a76"] < first["cortex-a55"]  # the big core is the faster, by the model
    assert isinstance(failed, str) and "failed" in failed


@pytest.mark.unit
def test_the_portability_summary_is_a_geometric_mean_over_common_variants():
    from compiler.tuning.matrix import summarise

    rows = [{"seconds": {"a": {"default": 4.0, "a": 2.0, "b": 4.0}, "b": {"default": 1.0, "a": 2.0, "b": 0.5}}},
            {"seconds": {"a": {"default": 1.0, "a": 0.5, "b": 2.0}, "b": {"default": 3.0, "b": 3.0}}}]
    summary = summarise(rows, ["a", "b"])
    assert summary["a"] == {"variants": 2, "a": pytest.approx(2.0), "b": pytest.approx(math.sqrt(0.5))}
    assert summary["b"] == {"variants": 1, "a": pytest.approx(0.5), "b": pytest.approx(2.0)}  # row 2 lacks "a"


@pytest.mark.unit
def test_trials_to_95_percent_of_the_final_best(tmp_path):
    from compiler.tuning.matrix import trials_to_95

    lines = [[0, 10.0], [0, 5.0], [1, 2.0], [0, 4.9], [0, 4.0], [1, 2.2], [0, 3.9]]
    (tmp_path / tuning_db.RECORDS).write_text("".join(
        json.dumps([w, [["trace"], [t], {"kind": "llvm"}, []]]) + "\n" for w, t in lines))
    # workload 0: 10, 5, 4.9, 4, 3.9 -> 4.0 is within 95% of 3.9 at trial 4; workload 1: first trial
    assert trials_to_95(tmp_path) == {"tasks": 2, "median": 2.5, "max": 4}


@pytest.mark.emulated
def test_the_matrix_models_default_own_and_borrowed_records(tmp_path):
    require_cycle_model()
    from compiler.tuning import matrix

    target = targets.get("arm")
    spec = make_spec("qgemm_w8a8", n=64, k=256)
    for core in ("cortex-a55", "cortex-a76"):
        search.tune([spec], target, device=tuning_db.modelled_device(core), logs_root=tmp_path, trials=6,
                    core=targets.core(core), progress=lambda _: None)
    devices = matrix.devices_for(target, tmp_path, ["model-cortex-a55", "model-cortex-a76"])
    result = matrix.matrix([spec], target, devices, progress=lambda _: None)
    assert result["kind"] == "modelled" and len(result["rows"]) == 2  # the decode and any-length variants
    for row in result["rows"]:
        for device in ("model-cortex-a55", "model-cortex-a76"):
            seconds = row["seconds"][device]
            assert set(seconds) == {"default", "model-cortex-a55", "model-cortex-a76"}
            # the default is measured first, so a device's own record is never slower than it (modelled
            # times are deterministic: the matrix re-counts exactly what the tuner counted)
            assert seconds[device] <= seconds["default"]
    for device in ("model-cortex-a55", "model-cortex-a76"):
        assert result["summary"][device][device] >= 1.0
    assert "MODELLED portability matrix" in matrix.format_matrix(result)
    with pytest.raises(ValueError, match="neither a modelled core"):
        matrix.devices_for(target, tmp_path, ["some-phone"])

"""The autotuner: records land in the MetaSchedule JSON database, survive bad lines, and `build`
replays them (visibly, in the manifest) with the same numerical results. One search measures on
this machine (and records its timings); the others replay recordings (tuning/recordings/, made by
make_recordings.py), so the search logic is tested in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_matches

import targets
from compiler import backends, build, runtime
from compiler.specs import make_spec
from compiler.tuning import database as tuning_db
from compiler.tuning import search, tasks, verdicts
from compiler.tuning.replay import Recording

RECORDINGS = Path(__file__).with_name("recordings")


def _write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


@pytest.mark.unit
def test_sanitize_moves_bad_lines_aside_and_renumbers(tmp_path):
    good_workload = json.dumps(["0x1", "mod-a"])
    other_workload = json.dumps(["0x2", "mod-b"])
    _write_lines(tmp_path / tuning_db.WORKLOADS, [good_workload, "{not json", other_workload])
    record_b = json.dumps([2, [["trace"], [0.5], {"kind": "llvm"}, []]])
    _write_lines(tmp_path / tuning_db.RECORDS, [
        json.dumps([0, [["trace"], [0.1], {"kind": "llvm"}, []]]),
        json.dumps([1, [["trace"], [0.2], {"kind": "llvm"}, []]]),  # its workload line is corrupt
        record_b,
        '[0, [["trace"], [0.3]',  # cut short by an interrupted run
        "hello from another tool",
    ])
    warnings = []
    assert tuning_db.sanitize(tmp_path, warn=warnings.append) == 4
    assert "4 unreadable line(s)" in warnings[0]
    assert (tmp_path / tuning_db.WORKLOADS).read_text().splitlines() == [good_workload, other_workload]
    records = [json.loads(line) for line in (tmp_path / tuning_db.RECORDS).read_text().splitlines()]
    assert [r[0] for r in records] == [0, 1]  # the record of workload 2 now points at line 1
    assert len((tmp_path / tuning_db.REJECTED).read_text().splitlines()) == 4
    assert tuning_db.sanitize(tmp_path, warn=warnings.append) == 0  # clean now, nothing more moved


@pytest.mark.unit
def test_device_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="device name"):
        tuning_db.device_dir(tmp_path, "x86", "../escape")


@pytest.mark.e2e
def test_tune_then_build_replays_the_records(tmp_path):
    target = targets.get("x86")
    spec = make_spec("qgemm_w8a8", n=64, k=128)
    lines = []
    run = search.tune([spec], target, device="test-host", logs_root=tmp_path / "logs", trials=8, race=False,
                      record=tmp_path / "timings.json", progress=lines.append)  # 2 per task: variant x row tile
    directory = run.directory
    assert any("trials" in line and "best" in line and "ETA" in line for line in lines)  # live progress
    assert all(task.history and task.history[-1][0] == task.trials for task in run.tasks)
    assert not any(task.failures for task in run.tasks)  # the default schedules measured first included
    recording = Recording.load(tmp_path / "timings.json")  # what --replay answers from
    # every measured setting is recorded; the default may have been measured twice (first, then by the search)
    settings, measured = sum(len(timings) for timings in recording.timings.values()), sum(t.trials for t in run.tasks)
    assert measured - len(run.tasks) <= settings <= measured
    records = (directory / tuning_db.RECORDS).read_text().splitlines()
    assert len(records) >= 2
    # A damaged line appended to the database must not cost the build its records.
    with open(directory / tuning_db.RECORDS, "a") as f:
        f.write('[0, [["cut short"\n')

    out = tmp_path / "lib"
    build.build([spec], target, out, toolchain=backends.toolchain_for(target), tuning_dir=directory,
                progress=lines.append)
    manifest = json.loads((out / "manifest.json").read_text())
    variants = manifest["kernels"][spec.name]["variants"]
    assert all(v["tuning"] != "default" and v["tuning"]["run_ms"] > 0 for v in variants)
    assert all(v["knobs"]["n_block"] in (8, 16, 32, 64) for v in variants)
    with runtime.load(out) as lib:
        for m in (1, 5):
            assert_matches(lib[spec.name], {"M": m}, seed=m)


@pytest.mark.native
def test_attention_length_buckets_are_tuned_and_dispatched(tmp_path):
    target = targets.get("x86")
    spec = make_spec("attention_decode", hq=4, hkv=2, d=64)
    run = search.tune([spec], target, device="test-host", logs_root=tmp_path / "logs", trials=12,
                      replay=RECORDINGS / "x86-attention_decode.json", progress=lambda _: None)
    # short and long KV, each with its default split length and the two alternatives
    assert [(t.shape, t.layout_tag) for t in run.tasks] == [
        ({"L": 512}, ""), ({"L": 512}, "split_len=32"), ({"L": 512}, "split_len=128"),
        ({"L": 2048}, ""), ({"L": 2048}, "split_len=128"), ({"L": 2048}, "split_len=512")]
    out = tmp_path / "lib"
    build.build([spec], target, out, toolchain=backends.toolchain_for(target), tuning_dir=run.directory,
                progress=lambda _: None)
    variants = json.loads((out / "manifest.json").read_text())["kernels"][spec.name]["variants"]
    assert [v["bucket"] for v in variants] == [{"L": [1, 512]}, {}]
    assert all(v["tuning"] != "default" and "unroll" in v["knobs"] for v in variants)
    with runtime.load(out) as lib:
        for length in (1, 512, 513, 1100):  # both sides of the bucket edge
            assert_matches(lib[spec.name], {"L": length}, seed=length)


@pytest.mark.unit
def test_time_budget_stops_the_search(tmp_path):
    lines = []
    run = search.tune([make_spec("qgemm_w8a8", n=64, k=128)], targets.get("x86"), device="test-host",
                      logs_root=tmp_path, trials=None, minutes=0.0005, replay=RECORDINGS / "x86-qgemm_w8a8.json",
                      progress=lines.append)
    assert any("time budget reached" in line for line in lines)
    assert 0 < sum(t.trials for t in run.tasks) < 48  # 4 tasks x 12 knob settings: not all were measured


@pytest.mark.native
def test_build_without_records_says_default(tmp_path):
    target = targets.get("x86")
    spec = make_spec("qgemm_w8a8", n=32, k=64)
    lines = []
    build.build([spec], target, tmp_path / "lib", toolchain=backends.toolchain_for(target),
                tuning_dir=tmp_path / "no-such-db", progress=lines.append)
    assert any("default schedule" in line for line in lines)
    manifest = json.loads((tmp_path / "lib" / "manifest.json").read_text())
    assert all(v["tuning"] == "default" for v in manifest["kernels"][spec.name]["variants"])


@pytest.mark.e2e
def test_a_record_that_no_longer_replays_is_set_aside(tmp_path):
    """A record made by another version of a schedule (here: another op's trace filed under this
    kernel's workload) would make MetaSchedule's database fail to open: it is moved to
    rejected.jsonl with the reason, the build says so and uses the default schedule."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    import schedules

    target = targets.get("x86")
    spec, other = make_spec("qgemm_w8a8", n=32, k=64), make_spec("qgemm_w4a16", n=32, k=64, group=32)
    foreign = s_tir.Schedule(tasks.tuning_module(other, target, {})[0])
    schedules.schedule(foreign, other, target, {})
    mod, _ = tasks.tuning_module(spec, target, {})
    database = tuning_db.open_database(tmp_path / "db")
    database.commit_tuning_record(ms.database.TuningRecord(
        foreign.trace, database.commit_workload(mod), [tvm.runtime.const(1e-3, "float32")], target.tvm_target(),
        ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    lines = []
    build.build([spec], target, tmp_path / "lib", toolchain=backends.toolchain_for(target),
                tuning_dir=tmp_path / "db", progress=lines.append)
    assert any("1 unreplayable line(s)" in line for line in lines), lines
    assert json.loads((tmp_path / "db" / tuning_db.REJECTED).read_text())["why"]
    assert (tmp_path / "db" / tuning_db.RECORDS).read_text() == ""
    manifest = json.loads((tmp_path / "lib" / "manifest.json").read_text())
    assert all(v["tuning"] == "default" for v in manifest["kernels"][spec.name]["variants"])
    with runtime.load(tmp_path / "lib") as lib:
        assert_matches(lib[spec.name], {"M": 3}, seed=3)


@pytest.mark.unit
def test_a_replayed_search_finds_the_recorded_best(tmp_path):
    """Against a recording of every knob setting, a budget larger than the space measures each
    setting and ends at the recorded optimum of each variant; the records say so to `build`."""
    path = RECORDINGS / "x86-qgemm_w8a8.json"
    recording = Recording.load(path)
    spec = make_spec("qgemm_w8a8", n=64, k=128)
    run = search.tune([spec], targets.get("x86"), device="replayed", logs_root=tmp_path, trials=64, replay=path,
                      progress=lambda _: None)
    for task in run.tasks:
        recorded = [min(times) if len(times) == 1 else sorted(times)[len(times) // 2]
                    for times in recording.timings[task.name].values()]
        # the space, exhausted: the default schedule is measured first, and the evolutionary search
        # may measure it once more (it seeds its population from the database, but counts as measured
        # only what it measured itself)
        assert task.trials in (len(recorded), len(recorded) + 1) and task.failures == 0
        assert task.best_secs == pytest.approx(min(recorded))
    database = tuning_db.open_database(run.directory)
    best = tasks.best_record(database, spec, targets.get("x86"), {"M": 1})
    assert float(best.run_secs[0]) == pytest.approx(min(min(t) for t in recording.timings[f"{spec.name}__m1"].values()))


@pytest.mark.unit
def test_a_knob_setting_the_recording_lacks_is_a_failed_candidate(tmp_path):
    path = tmp_path / "partial.json"
    full = Recording.load(RECORDINGS / "x86-qgemm_w8a8.json")
    kept = {variant: dict(list(settings.items())[:3]) for variant, settings in full.timings.items()}
    Recording(kept, device=full.device).save(path)
    run = search.tune([make_spec("qgemm_w8a8", n=64, k=128)], targets.get("x86"), device="replayed",
                      logs_root=tmp_path / "logs", trials=64, replay=path, progress=lambda _: None)
    # the 3 recorded settings succeed (the default among them may be measured twice: first, then by the search)
    assert all(task.trials - task.failures in (3, 4) and task.best_secs < float("inf") for task in run.tasks)


@pytest.mark.unit
def test_another_layout_must_beat_the_default_by_a_margin(tmp_path, monkeypatch):
    """A layout other than the default is built only where its record beat the default layout's by
    LAYOUT_MARGIN: a tie at the tuning shape says nothing about the other lengths a variant serves."""
    target, spec = targets.get("x86"), make_spec("qgemm_w8a8", n=64, k=128)
    run = search.tune([spec], target, device="replayed", logs_root=tmp_path, trials=64,
                      replay=RECORDINGS / "x86-qgemm_w8a8.json", progress=lambda _: None)
    general = [t for t in run.tasks if t.bucket == {}]
    default, fastest = general[0], min(general[1:], key=lambda t: t.best_secs)
    win = default.best_secs / fastest.best_secs
    assert win > 1.0, "the recording should hold a layout faster than the default's"
    database = tuning_db.open_database(run.directory)

    def chosen(margin):
        monkeypatch.setattr(tasks, "LAYOUT_MARGIN", margin)
        layout, record = tasks.layout_record(database, spec, target, {}, raced=False)
        assert record is not None
        return layout

    assert chosen(win * 0.99) == fastest.layout
    assert chosen(win * 1.01) == default.layout


@pytest.mark.native
def test_build_takes_the_layout_whose_record_ran_fastest(tmp_path):
    """The outer space: each layout choice of a variant is a task of its own; `build` compares
    their best records and builds the variant with the winning layout (named in the manifest), and
    the kernel still matches numpy."""
    path = RECORDINGS / "x86-qgemm_w8a8.json"
    target, spec = targets.get("x86"), make_spec("qgemm_w8a8", n=64, k=128)
    run = search.tune([spec], target, device="replayed", logs_root=tmp_path / "logs", trials=64, replay=path,
                      progress=lambda _: None)
    assert [t.layout_tag for t in run.tasks] == ["", "", "m_tile=2", "m_tile=8"]
    fastest = min((t for t in run.tasks if t.bucket == {}),
                  key=lambda t: t.best_secs * (tasks.LAYOUT_MARGIN if t.layout_tag else 1.0))
    out = tmp_path / "lib"
    build.build([spec], target, out, toolchain=backends.toolchain_for(target), tuning_dir=run.directory,
                progress=lambda _: None)
    general = json.loads((out / "manifest.json").read_text())["kernels"][spec.name]["variants"][1]
    assert general["layout"]["m_tile"] == fastest.layout.m_tile
    assert general["tuning"].get("layout", "") == fastest.layout_tag
    assert general["tuning"]["run_ms"] == pytest.approx(fastest.best_secs * 1e3, rel=1e-5)
    with runtime.load(out) as lib:
        for m in (1, 3, 9):
            assert_matches(lib[spec.name], {"M": m}, seed=m)


@pytest.mark.native
def test_a_record_that_loses_its_race_with_the_default_is_not_built(tmp_path):
    """Each variant's best record is raced against the default schedule side by side (records
    replayed from a recording, raced for real on this CPU); `build` uses a record only where it won,
    and a record raced once is not raced again."""
    target, spec = targets.get("x86"), make_spec("qgemm_w8a8", n=64, k=128)
    run = search.tune([spec], target, device="replayed", logs_root=tmp_path, trials=64,
                      replay=RECORDINGS / "x86-qgemm_w8a8.json", progress=lambda _: None)
    lines = []
    search.tune([spec], target, device="replayed", logs_root=tmp_path, trials=None, race_only=True,
                progress=lines.append)
    found = verdicts.load(run.directory)
    assert set(found) == {"qgemm_w8a8_n64_k128__m1", "qgemm_w8a8_n64_k128"}
    assert sum(line.startswith("  race ") for line in lines) == 2, lines
    for verdict in found.values():  # raced (timed), or its best record is the default schedule itself
        assert verdict["kept"] == (verdict["speedup"] >= 1.0) if "speedup" in verdict else verdict["kept"]
    # a verdict against the GEMV's record, for the GEMM's: the build follows them
    database = tuning_db.open_database(run.directory)
    for variant, bucket in (("qgemm_w8a8_n64_k128__m1", {"M": 1}), ("qgemm_w8a8_n64_k128", {})):
        record = tasks.layout_record(database, spec, target, bucket, raced=False)[1]
        found[variant] = {"record": verdicts.record_key(record), "kept": bucket == {}}
    verdicts.write(run.directory, found)
    out = tmp_path / "lib"
    build.build([spec], target, out, toolchain=backends.toolchain_for(target), tuning_dir=run.directory,
                progress=lambda _: None)
    gemv, gemm = json.loads((out / "manifest.json").read_text())["kernels"][spec.name]["variants"]
    assert gemv["tuning"] == "default" and gemm["tuning"] != "default"
    database = tuning_db.open_database(run.directory)
    assert [build.lower_kernel(spec, target, bucket, database)[2] == "default" for bucket in ({"M": 1}, {})] == [
        True, False]
    lines.clear()
    search.tune([spec], target, device="replayed", logs_root=tmp_path, trials=None, race_only=True,
                progress=lines.append)
    assert not any(line.startswith("  race ") for line in lines)
    with runtime.load(out) as lib:
        for m in (1, 6):
            assert_matches(lib[spec.name], {"M": m}, seed=m)

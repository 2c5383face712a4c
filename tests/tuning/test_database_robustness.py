"""The tuning database's clean-up: it never rewrites the files without the lock a running `tune`
holds (a rewrite then loses the records it appends), and it sets aside every line MetaSchedule would
choke on, each with its reason, while every record that stays still points at its own workload."""

from __future__ import annotations

import fcntl
import json
import threading
import time
from pathlib import Path

import pytest

from compiler.tuning import database as tuning_db

pytestmark = pytest.mark.unit

COMMITTED = tuning_db.default_logs_root() / "x86" / "amd-epyc-2c"


@pytest.fixture(scope="module")
def lines():
    """(3 workload lines, records: 2 per workload) from the committed x86 records, as bytes."""
    workloads = (COMMITTED / tuning_db.WORKLOADS).read_bytes().split(b"\n")[:3]
    records = {}
    for line in (COMMITTED / tuning_db.RECORDS).read_bytes().split(b"\n"):
        if line and json.loads(line)[0] < 3 and len(records.setdefault(json.loads(line)[0], [])) < 2:
            records[json.loads(line)[0]].append(line)
    assert sorted(records) == [0, 1, 2] and all(len(r) == 2 for r in records.values())
    return workloads, [line for index in sorted(records) for line in records[index]]


def _write(directory: Path, workloads: list[bytes], records: list[bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / tuning_db.WORKLOADS).write_bytes(b"".join(line + b"\n" for line in workloads))
    (directory / tuning_db.RECORDS).write_bytes(b"".join(line + b"\n" for line in records))
    return directory


def _pointed_at(index: int, line: bytes) -> bytes:
    """`line` as a record of workload line `index`."""
    return json.dumps([index, json.loads(line)[1]]).encode()


def _workload_of_each_record(directory: Path) -> dict[str, str]:
    """Each readable record (its body, as JSON) -> the workload line it points at (split as
    MetaSchedule reads the files: at '\\n' only)."""
    workloads = (directory / tuning_db.WORKLOADS).read_bytes().split(b"\n")
    found = {}
    for line in (directory / tuning_db.RECORDS).read_bytes().split(b"\n"):
        try:
            index, body = json.loads(line)
        except ValueError:
            continue
        found[json.dumps(body)] = workloads[index].decode("utf-8", "replace")
    return found


def _rejected(directory: Path) -> list[dict]:
    path = directory / tuning_db.REJECTED
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _open(directory: Path):
    warnings = []
    database = tuning_db.open_database(directory, warn=warnings.append)
    return database, warnings


# --- issue 5: every line MetaSchedule chokes on is set aside, records stay with their workloads ---

@pytest.mark.parametrize("garbage", [
    b"junk\x0cmore junk\xe2\x80\xa8and more",  # str.splitlines() splits here, MetaSchedule does not
    b"junk\rjunk",
    b"\xff\xfe not UTF-8",
    b'["12345", "not base64!"]',  # well-formed, but its module does not decode
    b"   ",
], ids=["line-separators", "carriage-return", "not-utf8", "bad-base64", "blank"])
def test_a_garbage_first_workload_line_keeps_every_record_with_its_workload(tmp_path, lines, garbage):
    workloads, records = lines
    shifted = [_pointed_at(json.loads(line)[0] + 1, line) for line in records]
    directory = _write(tmp_path / "db", [garbage, *workloads], shifted)
    before = _workload_of_each_record(directory)
    assert len(before) == len(records)

    database, warnings = _open(directory)

    assert _workload_of_each_record(directory) == before  # every record kept, each on its own workload
    assert len(database.get_all_tuning_records()) == len(records)
    rejected = _rejected(directory)
    assert [(r["file"], r["line"]) for r in rejected] == [(tuning_db.WORKLOADS, 1)] and rejected[0]["why"]
    assert any("1 " in w and "line(s)" in w for w in warnings), warnings


@pytest.mark.parametrize("corrupt", [
    lambda b64: b64[:100] + "!!!" + b64[103:],
    lambda b64: b64[:-10],
], ids=["foreign-characters", "truncated"])
def test_bad_base64_in_a_workload_sets_it_and_its_records_aside(tmp_path, lines, corrupt):
    workloads, records = lines
    shash, module = json.loads(workloads[1])
    broken = json.dumps([shash, corrupt(module)]).encode()
    directory = _write(tmp_path / "db", [workloads[0], broken, workloads[2]], records)
    before = _workload_of_each_record(directory)

    database, warnings = _open(directory)

    kept = _workload_of_each_record(directory)
    assert kept == {body: workload for body, workload in before.items() if workload != broken.decode()}
    assert len(kept) == 4 and len(database.get_all_tuning_records()) == 4
    why = {(r["file"], r["line"]): r["why"] for r in _rejected(directory)}
    assert "bad base64" in why[(tuning_db.WORKLOADS, 2)]
    assert "was set aside" in why[(tuning_db.RECORDS, 3)] and "was set aside" in why[(tuning_db.RECORDS, 4)]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_record_timed_nan_or_infinite_is_set_aside(tmp_path, lines, value):
    workloads, records = lines
    item = json.loads(records[2])
    item[1][1] = ["RUN_SECS"]
    bad = json.dumps(item).replace('"RUN_SECS"', value).encode()
    directory = _write(tmp_path / "db", workloads, [*records, bad])

    database, warnings = _open(directory)

    assert len(database.get_all_tuning_records()) == len(records)
    rejected = _rejected(directory)
    assert [(r["file"], r["line"]) for r in rejected] == [(tuning_db.RECORDS, len(records) + 1)]
    assert value in rejected[0]["why"]
    assert _open(directory)[1] == []  # clean now: nothing more to say


def test_bad_base64_in_an_encoded_field_of_a_trace_is_set_aside(tmp_path, lines):
    workloads, records = lines
    item = json.loads(records[0])
    graph = {"root_index": 0, "nodes": [{"type": "ffi.Tensor", "data": "P6G0!!not base64"}], "metadata": {}}
    item[1][0][0][0][1].append(json.dumps(graph))  # an input of the first instruction, as an index map is
    directory = _write(tmp_path / "db", workloads, [json.dumps(item).encode(), *records[1:]])

    database, _ = _open(directory)

    assert len(database.get_all_tuning_records()) == len(records) - 1
    rejected = _rejected(directory)
    assert [(r["file"], r["line"]) for r in rejected] == [(tuning_db.RECORDS, 1)]
    assert "bad base64 in an encoded field of the trace" in rejected[0]["why"]


def test_a_record_line_that_is_not_utf8_is_set_aside_not_refused(tmp_path, lines):
    workloads, records = lines
    directory = _write(tmp_path / "db", workloads, [records[0], b"\x80\x81 binary \xff", *records[1:]])

    database, _ = _open(directory)

    assert len(database.get_all_tuning_records()) == len(records)
    rejected = _rejected(directory)
    assert [(r["file"], r["line"]) for r in rejected] == [(tuning_db.RECORDS, 2)]
    assert "not UTF-8" in rejected[0]["why"]


def _with(line: bytes, change) -> bytes:
    item = json.loads(line)
    change(item[1])
    return json.dumps(item).encode()


def test_records_that_would_crash_metaschedule_are_set_aside_before_it_reads_them(tmp_path, lines):
    """MetaSchedule's loader crashes the process (no exception to catch) on these: the clean-up that
    runs before it must catch them. Checked with sanitize() alone, so that nothing here reaches it."""
    workloads, records = lines
    crashing = [
        _with(records[0], lambda body: body.__setitem__(1, [None])),  # a null run time
        _with(records[0], lambda body: body[0][1].append([999, 1])),  # a decision of no instruction
        _with(records[0], lambda body: body[0][1][0].__setitem__(1, None)),  # a null decision
        _with(records[0], lambda body: body[3][0].__setitem__(2, None)),  # a null argument shape
        b'"a record that is no list"',
        b"[0, null]",
    ]
    directory = _write(tmp_path / "db", workloads, [*records, *crashing])

    assert tuning_db.sanitize(directory, warn=lambda _: None) == len(crashing)

    assert (directory / tuning_db.RECORDS).read_bytes() == b"".join(line + b"\n" for line in records)
    assert all(r["why"] for r in _rejected(directory))
    assert len(_open(directory)[0].get_all_tuning_records()) == len(records)


# --- issue 4: the files are rewritten only under the lock a tune holds ---------------------------

def _probe_lock(directory: Path) -> bool:
    """Whether some run holds the database's lock (tried on a new open file description, as
    another process would)."""
    with open(directory / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def test_a_reader_never_rewrites_the_files_while_a_tune_appends_under_the_lock(tmp_path, lines):
    """A `build` while a `tune` runs: the tune holds the lock and appends records; the build finds a
    bad line but leaves the files alone (reading a cleaned copy), so none of the appended records is
    lost."""
    workloads, records = lines
    directory = _write(tmp_path / "db", workloads, [*records, b'[0, [["cut short by a crash"'])
    inode = (directory / tuning_db.RECORDS).stat().st_ino
    holding, stop, appended = threading.Event(), threading.Event(), []

    def tune():
        with tuning_db.locked(directory):
            holding.set()
            while not stop.is_set() or len(appended) < 200:
                with open(directory / tuning_db.RECORDS, "ab") as f:  # as MetaSchedule appends a record
                    f.write(records[len(appended) % len(records)] + b"\n")
                appended.append(1)
                time.sleep(0.0005)

    writer = threading.Thread(target=tune, daemon=True)
    writer.start()
    assert holding.wait(10)
    try:
        database, warnings = _open(directory)
    finally:
        stop.set()
        writer.join(30)
    assert not writer.is_alive()

    assert (directory / tuning_db.RECORDS).stat().st_ino == inode, "the records file was rewritten without the lock"
    lines_now = (directory / tuning_db.RECORDS).read_bytes().split(b"\n")[:-1]
    assert len(lines_now) == len(records) + 1 + len(appended)  # nothing appended was lost
    assert lines_now[len(records)] == b'[0, [["cut short by a crash"'  # left for a run holding the lock
    assert not (directory / tuning_db.REJECTED).exists()
    assert len(database.get_all_tuning_records()) >= len(records)  # the copy's good records
    assert any("holds the lock" in w for w in warnings), warnings
    assert any("1 unreadable line(s)" in w and "left as they are" in w for w in warnings), warnings


def test_the_clean_up_rewrites_only_while_holding_the_lock(tmp_path, lines, monkeypatch):
    """With the lock free (a `build` alone, or sanitize()), the files are cleaned in place, and the
    lock is held while they are rewritten."""
    workloads, records = lines
    rewrites = []
    set_aside = tuning_db._set_aside

    def probed(directory, *args, **kwargs):
        rewrites.append(_probe_lock(directory))
        return set_aside(directory, *args, **kwargs)

    monkeypatch.setattr(tuning_db, "_set_aside", probed)
    first = _write(tmp_path / "a", workloads, [*records, b"garbage"])
    assert tuning_db.sanitize(first, warn=lambda _: None) == 1
    second = _write(tmp_path / "b", workloads, [*records, b"garbage"])
    _open(second)
    assert rewrites == [True, True]
    assert not _probe_lock(first) and not _probe_lock(second)  # released afterwards
    assert len(_rejected(second)) == 1


def test_a_tune_opens_its_database_inside_its_own_lock(tmp_path, lines):
    """`tune` holds the lock for its whole run and opens the database inside it: no deadlock on
    its own lock, and the clean-up happens in place."""
    workloads, records = lines
    directory = _write(tmp_path / "db", workloads, [*records, b"garbage"])
    result = {}

    def tune():
        with tuning_db.locked(directory):
            result["database"] = _open(directory)[0]
            result["held"] = _probe_lock(directory)

    thread = threading.Thread(target=tune, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "open_database deadlocked on the lock its caller holds"
    assert result["held"] and len(result["database"].get_all_tuning_records()) == len(records)
    assert [r["text"] for r in _rejected(directory)] == ["garbage"]


def test_an_interrupted_append_in_the_copy_is_not_reported(tmp_path, lines):
    """The copy a reader takes during a tune ends at the last complete line: the one the tune is
    writing is not garbage."""
    workloads, records = lines
    directory = _write(tmp_path / "db", workloads, records)
    with open(directory / tuning_db.RECORDS, "ab") as f:
        f.write(records[0][:50])  # half a record, its writer still at work
    with tuning_db.locked(directory):
        warnings = []
        thread = threading.Thread(target=lambda: warnings.extend(_open(directory)[1]))
        thread.start()
        thread.join(60)
    assert [w for w in warnings if "line(s)" in w] == []
    assert (directory / tuning_db.RECORDS).read_bytes().endswith(records[0][:50])

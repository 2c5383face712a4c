"""Tuning records on disk: MetaSchedule's JSON database (database_workload.json +
database_tuning_record.json) in tuning_logs/<target>/<device>/, guarded so that records survive.

- An exclusive lock file serialises runs that write the same database.
- Before MetaSchedule reads the files, lines that are not valid records (a line cut by an
  interrupted run, hand edits, another tool's output) are moved to rejected.jsonl with a warning
  and the remaining records renumbered: one bad line never costs the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sys
from pathlib import Path

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
REJECTED = "rejected.jsonl"


def default_logs_root() -> Path:
    return Path(__file__).resolve().parents[2] / "tuning_logs"


def host_device(target) -> str:
    """A stable name for the device this machine runs `target`'s kernels on (its backend decides:
    the CPU's model and core count, "amd-epyc-2c", or the Vulkan device's name)."""
    from compiler import backends

    return backends.get(target).host_device(target)


def device_dir(root: Path, target_name: str, device: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", device):
        raise ValueError(f"device name {device!r} may only use letters, digits, '.', '_' and '-'")
    return Path(root) / target_name / device


@contextlib.contextmanager
def locked(directory: Path):
    """Hold the database's lock; a second run writing the same database waits for the first."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another tuning run using {directory}", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _valid_workload(line: str) -> bool:
    try:
        item = json.loads(line)
    except ValueError:
        return False
    return isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)


def _valid_record(line: str, workloads: int) -> bool:
    try:
        item = json.loads(line)
    except ValueError:
        return False
    return (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int) and 0 <= item[0] < workloads
            and isinstance(item[1], list) and len(item[1]) >= 2)


def sanitize(directory: Path, warn=lambda message: print(message, file=sys.stderr)) -> int:
    """Move invalid lines of the database in `directory` to rejected.jsonl; returns how many."""
    workload_path, record_path = directory / WORKLOADS, directory / RECORDS
    workloads = workload_path.read_text().splitlines() if workload_path.is_file() else []
    records = record_path.read_text().splitlines() if record_path.is_file() else []
    rejected, kept_workloads, renumber = [], [], {}
    for index, line in enumerate(workloads):
        if not line.strip():
            continue
        if _valid_workload(line):
            renumber[index] = len(kept_workloads)
            kept_workloads.append(line)
        else:
            rejected.append({"file": WORKLOADS, "line": index + 1, "text": line})
    kept_records = []
    for index, line in enumerate(records):
        if not line.strip():
            continue
        if _valid_record(line, len(workloads)) and json.loads(line)[0] in renumber:
            item = json.loads(line)
            kept_records.append(line if renumber[item[0]] == item[0] else json.dumps([renumber[item[0]], item[1]]))
        else:
            rejected.append({"file": RECORDS, "line": index + 1, "text": line})
    if not rejected:
        return 0
    _set_aside(directory, rejected, kept_workloads, kept_records, "unreadable", warn)
    return len(rejected)


def _set_aside(directory: Path, rejected: list, workloads: list[str], records: list[str], why: str, warn) -> None:
    """Append `rejected` to rejected.jsonl, then rewrite the database with the kept lines."""
    warn(f"warning: {len(rejected)} {why} line(s) in the tuning database {directory} skipped "
         f"(kept in {directory / REJECTED})")
    with open(directory / REJECTED, "a") as f:
        for item in rejected:
            f.write(json.dumps(item) + "\n")
    for path, lines in ((directory / WORKLOADS, workloads), (directory / RECORDS, records)):
        staged = path.with_suffix(".json.tmp")
        staged.write_text("".join(line + "\n" for line in lines))
        os.replace(staged, path)


def reject_unreplayable(directory: Path, warn=lambda message: print(message, file=sys.stderr)) -> int:
    """Move aside the records whose traces do not replay on their workloads (made by another
    version of a schedule): MetaSchedule's database replays every record when it opens, and one
    such record would make the whole database fail to open. Returns how many."""
    from tvm.s_tir import meta_schedule as ms

    workload_lines = (directory / WORKLOADS).read_text().splitlines()
    workloads = [ms.database.Workload.from_json(json.loads(line)) for line in workload_lines]
    kept, rejected = [], []
    for index, line in enumerate((directory / RECORDS).read_text().splitlines()):
        item = json.loads(line)
        try:
            ms.database.TuningRecord.from_json(item[1], workloads[item[0]])
            kept.append(line)
        except Exception as err:  # noqa: BLE001 (TVM raises bare errors from the replay)
            reason = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
            rejected.append({"file": RECORDS, "line": index + 1, "text": line, "why": reason})
    if rejected:
        _set_aside(directory, rejected, workload_lines, kept, "unreplayable", warn)
    return len(rejected)


def open_database(directory: Path, warn=lambda message: print(message, file=sys.stderr)):
    """The MetaSchedule JSON database in `directory` (created if missing), after sanitize(), with
    records that do not replay set aside."""
    from tvm.s_tir import meta_schedule as ms

    from schedules.cpu.intrinsics import register_all

    register_all()  # records' traces name our tensor intrinsics
    directory.mkdir(parents=True, exist_ok=True)
    sanitize(directory, warn)

    def database():
        return ms.database.JSONDatabase(str(directory / WORKLOADS), str(directory / RECORDS), allow_missing=True)

    try:
        return database()
    except RuntimeError:  # a record that does not replay fails the whole load: set those aside
        if not reject_unreplayable(directory, warn):
            raise
        return database()

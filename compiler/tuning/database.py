"""Tuning records on disk: MetaSchedule's JSON database (database_workload.json +
database_tuning_record.json) in tuning_logs/<target>/<device>/, guarded so that records survive.

- An exclusive lock file serialises runs that write the same database. `tune` holds it for its whole
  run, appending records meanwhile, so the files are only ever rewritten under it: a reader that
  cannot take it at once (a `build` during a `tune`) cleans a copy instead and leaves them alone.
- Before MetaSchedule reads the files, every line it would choke on (a line cut by an interrupted
  run, hand edits, another tool's output, text that is not UTF-8, NaN timings, bad base64, a trace
  that no longer replays) is moved to rejected.jsonl with its reason and a warning, and the records
  that stay are renumbered so that each still points at its own workload: one bad line never costs
  the rest, nor files a record under another kernel.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from compiler.tuning.record_checks import RECORDS, WORKLOADS, partition, read_lines, replay_checks, summary
from compiler.tuning.verdicts import VERDICTS

REJECTED = "rejected.jsonl"


def default_logs_root() -> Path:
    return Path(__file__).resolve().parents[2] / "tuning_logs"


def host_device(target) -> str:
    """A stable name for the device this machine runs `target`'s kernels on (its backend decides:
    the CPU's model and core count, "amd-epyc-2c", or the Vulkan device's name)."""
    from compiler import backends

    return backends.get(target).host_device(target)


def device_dir(root: Path, target_name: str, device: str) -> Path:
    """The database folder of `device`: a plain name, one folder under <root>/<target>/ ('.' or '..'
    would put records into the target's or the root's own folder)."""
    if device in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._-]+", device):
        raise ValueError(f"device name {device!r} must be a plain folder name: letters, digits, '.', '_' and '-', "
                         "not '.' or '..'")
    return Path(root) / target_name / device


MODELLED_PREFIX = "model-"  # a database of candidates costed by a core's cycle model, not timed


def modelled_device(core: str) -> str:
    """The database name of `core`'s modelled records (tune --core CORE): model-CORE."""
    return MODELLED_PREFIX + core


def core_device(root: Path, target_name: str, core: str) -> str:
    """The database a build for `core` reads: records measured on such a core (tuned over RPC with
    --core CORE, filed under the core's own name) take precedence over the modelled ones."""
    measured = device_dir(root, target_name, core) / RECORDS
    return core if measured.is_file() and measured.stat().st_size > 0 else modelled_device(core)


# The databases whose lock this thread holds: flock on a second open of the lock file blocks even
# within one process, and `tune` opens its database while it holds the lock.
_held = threading.local()


def _held_here() -> set[Path]:
    if not hasattr(_held, "directories"):
        _held.directories = set()
    return _held.directories


@contextlib.contextmanager
def _flock(directory: Path, wait: bool):
    """Yields None once the lock is held (by this call or already by this thread), else, without
    waiting when `wait` is False, why it cannot be taken now."""
    key = Path(directory).resolve()
    if key in _held_here():
        yield None
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / ".lock", "a")
    except OSError as err:
        if wait:
            raise
        lock, unwritable = None, f"cannot lock the tuning database {directory} ({err.strerror or err})"
    if lock is None:
        yield unwritable
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            busy = False
        except BlockingIOError:
            busy = True
        if busy and not wait:
            yield f"another run (a tune writing records) holds the lock of the tuning database {directory}"
            return
        if busy:
            print(f"waiting for another tuning run using {directory}", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        _held_here().add(key)
        try:
            yield None
        finally:
            _held_here().discard(key)
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(directory: Path):
    """Hold the database's lock; a second run writing the same database waits for the first.
    Re-entrant within a thread."""
    with _flock(directory, wait=True):
        yield


# --- reading lines as MetaSchedule does ---------------------------------------------------------

def _set_aside(directory: Path, rejected: list, workloads: list[bytes], records: list[bytes], why: str, warn,
               shown: Path | None = None) -> None:
    """Append `rejected` to rejected.jsonl, then rewrite the database with the kept lines. The caller
    holds the lock, or `directory` is a private copy of the database `shown`."""
    if shown is None:
        warn(f"warning: {len(rejected)} {why} line(s) in the tuning database {directory} skipped "
             f"(kept in {directory / REJECTED}): {summary(rejected)}")
    else:
        warn(f"warning: {len(rejected)} {why} line(s) in the tuning database {shown} skipped for this run, its "
             f"files left as they are (the next run that holds its lock sets them aside): {summary(rejected)}")
    with open(directory / REJECTED, "a") as f:
        for item in rejected:
            f.write(json.dumps(item) + "\n")
    for path, lines in ((directory / WORKLOADS, workloads), (directory / RECORDS, records)):
        staged = path.with_suffix(".json.tmp")
        staged.write_bytes(b"".join(line + b"\n" for line in lines))
        os.replace(staged, path)


def _clean(directory: Path, why: str, warn, shown: Path | None = None, **checks) -> int:
    workloads, records = read_lines(directory / WORKLOADS), read_lines(directory / RECORDS)
    kept_workloads, kept_records, rejected = partition(workloads, records, **checks)
    if rejected:
        _set_aside(directory, rejected, kept_workloads, kept_records, why, warn, shown)
    return len(rejected)


def sanitize(directory: Path, warn=lambda message: print(message, file=sys.stderr)) -> int:
    """Move the lines MetaSchedule could not even parse (not UTF-8, not JSON, NaN timings, not
    shaped as a workload or record, a record of a missing workload) to rejected.jsonl, under the
    database's lock; returns how many."""
    with locked(directory):
        return _clean(directory, "unreadable", warn)


def reject_unreplayable(directory: Path, warn=lambda message: print(message, file=sys.stderr)) -> int:
    """Move aside, under the database's lock, the records whose traces do not replay on their
    workloads (made by another version of a schedule), the workloads that do not load (and their
    records), and whatever sanitize() moves: MetaSchedule's database replays every record when it
    opens, and one such line would make the whole database fail to open. Returns how many."""
    with locked(directory):
        return _clean(directory, "unreplayable", warn, **replay_checks())


def _snapshot(directory: Path, copy: Path) -> None:
    """Copy the database's complete lines to `copy` while a tune may be appending: records first, so
    that every record copied has its workload copied too (a tune appends a workload before its records)."""
    records = read_lines(directory / RECORDS, complete_only=True)
    workloads = read_lines(directory / WORKLOADS, complete_only=True)
    for path, lines in ((copy / WORKLOADS, workloads), (copy / RECORDS, records)):
        path.write_bytes(b"".join(line + b"\n" for line in lines))
    if (directory / VERDICTS).is_file():  # written whole (renamed into place): always complete
        shutil.copyfile(directory / VERDICTS, copy / VERDICTS)


def _clean_and_open(directory: Path, warn, shown: Path | None = None):
    from tvm.s_tir import meta_schedule as ms

    def database():
        return ms.database.JSONDatabase(str(directory / WORKLOADS), str(directory / RECORDS), allow_missing=True)

    _clean(directory, "unreadable", warn, shown)
    try:
        return database()
    except Exception:  # noqa: BLE001 (TVM raises ValueError, InternalError, ... by the problem)
        if not _clean(directory, "unreplayable", warn, shown, **replay_checks()):
            raise
        return database()


def open_database(directory: Path, warn=lambda message: print(message, file=sys.stderr)):
    """The MetaSchedule JSON database in `directory` (created if missing), with the lines it would
    choke on set aside (sanitize(), reject_unreplayable()). The files are cleaned in place only under
    the database's lock, taken here if it is free (or already held by this thread, as in `tune`):
    a tune holds it while it appends records, and a rewrite then would lose them. When another run
    holds it, this reads a cleaned copy of the records as they are now and leaves the files alone."""
    from schedules.cpu.intrinsics import register_all

    register_all()  # records' traces name our tensor intrinsics
    with _flock(directory, wait=False) as busy:
        if busy is None:
            return _clean_and_open(directory, warn)
    warn(f"warning: {busy}: reading a cleaned copy of its records as they are now, its files left alone")
    with tempfile.TemporaryDirectory(prefix="ekc-records-") as copy:
        _snapshot(directory, Path(copy))
        return _clean_and_open(Path(copy), warn, shown=directory)  # read whole when opened: the copy can go

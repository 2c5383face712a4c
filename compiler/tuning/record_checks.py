"""The lines of a tuning database MetaSchedule would choke on, found before it reads them: text that
is not UTF-8, not JSON, NaN timings, lines not shaped as a workload or record, bad base64, records
of a missing workload, and (replay_checks) modules that do not load and traces that do not replay.
`partition` keeps the good lines and renumbers the records so each still points at its workload."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from pathlib import Path

# MetaSchedule's JSON database: one file of workloads, one of records (each naming its workload's line).
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"


def read_lines(path: Path, *, complete_only: bool = False) -> list[bytes]:
    """The file's lines as MetaSchedule counts them (std::getline: split at b'\\n' only; a last line
    without one is a line too). Not str.splitlines(), which also splits at '\\r', '\\f', '\\x1c',
    '\\x85', '\\u2028', ...: a garbage line holding one would shift every later workload's index.
    `complete_only` drops a last line without its newline (still being appended by a tune)."""
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    last = lines.pop()  # b"" when the file ends with a newline
    if last and not complete_only:
        lines.append(last)
    return lines


def _not_finite(text: str):
    raise ValueError(f"{text} is not a number MetaSchedule can read")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _not_finite(text)
    return value


def _parse(line: bytes):
    """(the JSON value of a line, None), or (None, why MetaSchedule's JSON reader would refuse it):
    not UTF-8, not JSON, or NaN / Infinity, which Python writes and reads but MetaSchedule does not."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text (byte {err.start})"
    if not text.strip():
        return None, "blank line"
    try:
        return json.loads(text, parse_constant=_not_finite, parse_float=_finite_float), None
    except ValueError as err:
        return None, f"not JSON: {err}"
    except RecursionError:
        return None, "not JSON a reader can take: nested too deeply"


def _workload_problem(item) -> str | None:
    if not (isinstance(item, list) and len(item) == 2 and all(isinstance(part, str) for part in item)):
        return "not a workload: [structural hash, module]"
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _holds_null(value) -> bool:
    return value is None or (isinstance(value, list) and any(map(_holds_null, value)))


def _trace_problem(trace: list) -> str | None:
    """What in a trace would crash MetaSchedule's replay instead of raising: it stores each decision
    at its instruction index unchecked, and a null in a decision crashes the sampling instruction."""
    if not (len(trace) == 2 and all(isinstance(part, list) for part in trace)):
        return None  # refused with an error by the replay, as a trace that does not replay
    instructions, decisions = trace
    for decision in decisions:
        if not (isinstance(decision, list) and len(decision) == 2):
            continue  # refused with an error
        index, value = decision
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(instructions):
            return f"trace decision for instruction {index!r}, not one of its {len(instructions)}"
        if _holds_null(value):
            return f"trace decision for instruction {index} holds a null"
    return None


def _record_problem(item, workloads: int) -> str | None:
    """Why a parsed record line is not [workload line index, [trace, run_secs, target, args_info]]
    (the shapes MetaSchedule's loader indexes without checking: a record that is no list, or a null
    run time, crashes the process instead of raising)."""
    if not (isinstance(item, list) and len(item) == 2):
        return "not a record: [workload index, [trace, run_secs, target, args_info]]"
    index, body = item
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < workloads:
        return f"workload index {index!r} is not a line of {WORKLOADS} ({workloads} lines)"
    if not (isinstance(body, list) and len(body) == 4):
        return "not a record: [workload index, [trace, run_secs, target, args_info]]"
    trace, run_secs, target, args_info = body
    if not isinstance(trace, list):
        return "trace is not a list"
    why = _trace_problem(trace)
    if why:
        return why
    if run_secs is not None and not (isinstance(run_secs, list) and all(map(_is_number, run_secs))):
        return f"run_secs {run_secs!r} is not a list of finite numbers"
    if target is not None and not isinstance(target, dict):
        return "target is not an object"
    if args_info is not None and not (isinstance(args_info, list) and all(isinstance(a, list) for a in args_info)):
        return "args_info is not a list of argument descriptions"
    if args_info is not None and _holds_null(args_info):
        return "args_info holds a null"
    return None


_RECORD_INDEX = re.compile(rb"^(\s*\[\s*)-?\d+")


def _renumbered(line: bytes, index: int) -> bytes:
    """The record line pointing at workload line `index`, its other bytes unchanged."""
    return _RECORD_INDEX.sub(lambda m: m.group(1) + str(index).encode(), line, count=1)


def _rejection(file: str, index: int, line: bytes, why: str) -> dict:
    return {"file": file, "line": index + 1, "text": line.decode("utf-8", "backslashreplace"), "why": why}


def partition(workloads: list[bytes], records: list[bytes], check_workload=None, check_record=None):
    """(kept workload lines, kept record lines, rejections). A record's first element is the line
    index of its workload: records follow their workload to its new line, and a record whose
    workload was set aside is set aside too. `check_workload(index, item)` and
    `check_record(item, workload_index)` add deeper checks (why, or None)."""
    rejected, kept_workloads, renumber = [], [], {}
    for index, line in enumerate(workloads):
        item, why = _parse(line)
        why = why or _workload_problem(item) or (check_workload and check_workload(index, item))
        if why:
            rejected.append(_rejection(WORKLOADS, index, line, why))
        else:
            renumber[index] = len(kept_workloads)
            kept_workloads.append(line)
    kept_records = []
    for index, line in enumerate(records):
        item, why = _parse(line)
        why = why or _record_problem(item, len(workloads))
        if not why and item[0] not in renumber:
            why = f"its workload (line {item[0] + 1} of {WORKLOADS}) was set aside"
        why = why or (check_record and check_record(item, item[0]))
        if why:
            rejected.append(_rejection(RECORDS, index, line, why))
        else:
            kept_records.append(line if renumber[item[0]] == item[0] else _renumbered(line, renumber[item[0]]))
    return kept_workloads, kept_records, rejected


def summary(rejected: list[dict], shown: int = 3) -> str:
    lines = [f"{item['file']} line {item['line']}: {item['why']}" for item in rejected[:shown]]
    return "; ".join(lines) + ("; ..." if len(rejected) > shown else "")


def _tvm_reason(err: Exception) -> str:
    return str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__


def _base64_problem(text: str, what: str) -> str | None:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        return f"bad base64 in {what}: {err}"
    return None


def _encoded_problem(trace) -> str | None:
    """Why an encoded field of a trace would not decode, or None: a string input such as an index
    map is a TVM JSON graph, whose tensor and bytes nodes carry their data in base64."""
    if isinstance(trace, list):
        return next(filter(None, map(_encoded_problem, trace)), None)
    if not (isinstance(trace, str) and trace.startswith("{") and trace.endswith("}")):
        return None
    graph, why = _parse(trace.encode("utf-8", "surrogatepass"))
    if why:
        return f"an encoded field of the trace is {why}"
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    for node in nodes if isinstance(nodes, list) else []:
        if isinstance(node, dict) and node.get("type") in ("ffi.Tensor", "ffi.Bytes"):
            data = node.get("data")
            why = _base64_problem(data, "an encoded field of the trace") if isinstance(data, str) else None
            if why:
                return why
    return None


def replay_checks() -> dict:
    """The checks MetaSchedule itself makes when it opens a database: each workload's module decodes
    and each record's trace replays on its workload."""
    from tvm.s_tir import meta_schedule as ms

    workloads = {}

    def check_workload(index, item):
        why = _base64_problem(item[1], "the workload's module")
        if why:
            return why
        try:
            workloads[index] = ms.database.Workload.from_json(item)
        except Exception as err:  # noqa: BLE001 (TVM raises ValueError, InternalError, ... by the problem)
            return f"the workload's module does not load: {_tvm_reason(err)}"
        return None

    def check_record(item, index):
        why = _encoded_problem(item[1][0])
        if why:
            return why
        try:
            ms.database.TuningRecord.from_json(item[1], workloads[index])
        except Exception as err:  # noqa: BLE001 (TVM raises bare errors from the replay)
            return _tvm_reason(err)
        return None

    return {"check_workload": check_workload, "check_record": check_record}

"""The verdicts of races between tuned records and default schedules (tuning.confirm), stored
beside a records folder's MetaSchedule database: which record a race found no faster than the
default, so that `tasks.layout_record` keeps the default for that variant."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

VERDICTS = "races.json"  # beside the MetaSchedule database files


def record_key(record) -> str:
    """What identifies one tuning record across loads: its schedule and its measured times."""
    text = str(record.trace) + repr([float(t) for t in record.run_secs])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load(directory: Path) -> dict:
    """{variant: verdict} of a records folder ({} where no race was run)."""
    path = Path(directory) / VERDICTS
    if not path.is_file():
        return {}
    try:
        verdicts = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable race verdict file ({err}); delete it and re-run "
                         "`tune --race-only` to race the records again") from None
    if not isinstance(verdicts, dict):
        raise ValueError(f"{path}: expected an object of verdicts by variant")
    return verdicts


def verdicts_of(database) -> dict:
    """The verdicts stored beside a MetaSchedule JSON database."""
    return load(Path(str(database.path_tuning_record)).parent)


def lost(verdicts: dict, variant: str, record) -> bool:
    """Whether `record` is the one a race for `variant` found no faster than the default."""
    verdict = verdicts.get(variant)
    return isinstance(verdict, dict) and verdict.get("record") == record_key(record) and not verdict.get("kept")


def write(directory: Path, verdicts: dict) -> None:
    """Replace the folder's verdicts (written beside and renamed: a reader never sees half a file)."""
    path = Path(directory) / VERDICTS
    staged = path.with_suffix(".part")
    staged.write_text(json.dumps(verdicts, indent=1, sort_keys=True) + "\n")
    os.replace(staged, path)

"""The tuning records committed in tuning_logs/ keep replaying on today's schedules: a change to a
schedule or a tensor expression that orphans them fails here, not silently in `build`."""

from __future__ import annotations

import shutil

import pytest

import schedules
import targets
from compiler import build, models
from compiler.tuning import database, tasks

pytestmark = pytest.mark.unit

COMMITTED = sorted(p for p in database.default_logs_root().glob("*/*") if (p / database.RECORDS).is_file()
                   and "emulated" not in p.name)


@pytest.mark.parametrize("directory", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_records_replay_and_cover_the_default_preset(directory, tmp_path):
    from schedules.cpu.intrinsics import register_all

    register_all()  # the records' traces name our tensor intrinsics
    copy = tmp_path / "db"
    shutil.copytree(directory, copy)
    assert database.reject_unreplayable(copy, warn=lambda _: None) == 0
    target = targets.get(directory.parent.name)
    records = database.open_database(copy, warn=lambda _: None)
    untuned = []
    for spec in models.kernel_specs(models.preset(models.DEFAULT_PRESET)):
        for bucket in schedules.buckets(spec, target):
            # the best record of each variant, whether or not it won its race with the default (races.json)
            layout, record = tasks.layout_record(records, spec, target, bucket, raced=False)
            _, knobs, tuning, _ = build.lower_kernel(spec, target, bucket, layout=layout, record=record)
            if knobs and tuning == "default":
                untuned.append(f"{spec.name} {bucket}")
    assert not untuned, f"variants with knobs but no record in {directory}: {untuned}"

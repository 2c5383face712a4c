"""Every knob of every schedule must replay with each of its other values: MetaSchedule mutates a
trace's sampled decisions and re-applies it, and one trace whose instructions then return other
outputs (e.g. a loop that compute_at drops for one column block and keeps for another) stops the
whole search with a C++ check, for every task (found tuning SmolLM2 on the ARM model)."""

from __future__ import annotations

import pytest
from conftest import coverage_specs

import targets
from compiler.tuning.tasks import make_tasks


def unreplayable(task, target) -> list[str]:
    """One line per knob value whose trace fails to replay on the task's module (task, value, the check)."""
    from tvm import s_tir

    import schedules

    sch = s_tir.Schedule(task.mod)
    schedules.schedule(sch, task.spec, target, task.bucket, task.layout)
    trace = sch.trace
    failures = []
    for inst in trace.insts:
        if inst.kind.name != "SampleCategorical":
            continue
        values, chosen = inst.attrs[0], int(trace.decisions[inst])
        for index in range(len(values)):
            if index == chosen:
                continue
            try:
                trace.with_decision(inst, index, remove_postproc=True).apply_to_schedule(
                    s_tir.Schedule(task.mod), remove_postproc=True)
            except Exception as err:  # tvm's errors carry the check that failed on their last line
                failures.append(f"{task.name} {task.bucket} value {int(values[index])}: {str(err).splitlines()[-1]}")
    return failures


@pytest.mark.compile  # schedules every coverage kernel for each target (~85 s in all), builds nothing
@pytest.mark.parametrize("target_name", ["arm", "arm-i8mm", "x86-avx512", "hexagon", "vulkan"])
def test_every_knob_value_replays(target_name):
    from compiler.tuning.search import import_tensor_intrinsics

    import_tensor_intrinsics()
    target = targets.get(target_name)
    failures = [f for task in make_tasks(coverage_specs(), target, lambda _: None) for f in unreplayable(task, target)]
    assert not failures, "\n".join(failures)

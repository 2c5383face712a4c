"""The tuner's live progress: per-task trial counts, best rate and history, an ETA, and the
wall-clock budget, as a MetaSchedule measure callback."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from compiler.tuning.tasks import Task


def progress_callback(tasks: list[Task], total: int | None, deadline: float | None,
                       progress: Callable[[str], None]):
    """Measure callback: per-task trial counts, best rate and history, a live progress line with an
    ETA, and the wall-clock budget (at the deadline every task is terminated; the records measured
    so far are already in the database)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    start = time.time()

    @derived_object
    class Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            if not runner_results:
                return  # a task whose search space is exhausted
            task = tasks[task_id]
            for built, ran in zip(builder_results, runner_results):
                task.trials += 1
                if built.error_msg is None and ran.error_msg is None and ran.run_secs:
                    task.best_secs = min(task.best_secs, float(np.median([float(s) for s in ran.run_secs])))
                else:
                    task.failures += 1
                task.history.append((task.trials, task.rate, time.time() - start))
            done = sum(t.trials for t in tasks)
            elapsed = time.time() - start
            left = [elapsed / done * (total - done)] if total is not None else []
            if deadline is not None:
                left.append(max(deadline - time.time(), 0))
            budget = f"{done}/{total}" if total is not None else f"{done}"
            failed = f", {task.failures} failed" if task.failures else ""
            progress(f"  [{budget} trials, {elapsed:.0f} s, ETA {min(left):.0f} s] {task.name} @ {task.shape}: "
                     f"{task.trials} trials{failed}, best {task.rate:.1f} {task.unit}")
            if deadline is not None and time.time() >= deadline:
                for index, record in enumerate(task_scheduler.tasks_):
                    if not record.is_terminated:
                        task_scheduler.terminate_task(index)
                progress(f"  time budget reached after {done} trials")

    return Progress()


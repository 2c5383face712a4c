"""The tuner's live progress: per-task trial counts, best rate and history, an ETA, and the
wall-clock budget, as a MetaSchedule measure callback."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from compiler.tuning.tasks import Task


def eta_seconds(done: int, total: int | None, elapsed: float, to_deadline: float | None) -> float:
    """Seconds left: the trial budget's pace or the deadline, whichever ends first; never negative
    (MetaSchedule measures its last batch whole, which can pass the trial budget)."""
    left = []
    if total is not None:
        left.append(elapsed / max(done, 1) * max(total - done, 0))
    if to_deadline is not None:
        left.append(max(to_deadline, 0.0))
    return min(left) if left else 0.0


def budget_text(done: int, total: int | None) -> str:
    """"done/total" trials, never more done than the budget: trials MetaSchedule measured past it
    (its last batch is measured whole) are said as such."""
    if total is None:
        return f"{done}"
    if done > total:
        return f"{total}/{total} (+{done - total} in the last batch)"
    return f"{done}/{total}"


def progress_line(task: Task, done: int, total: int | None, elapsed: float, eta: float) -> str:
    failed = f", {task.failures} failed" if task.failures else ""
    return (f"  [{budget_text(done, total)} trials, {elapsed:.0f} s, ETA {max(eta, 0.0):.0f} s] {task.name} @ "
            f"{task.shape}: {task.trials} trials{failed}, best {task.rate:.1f} {task.unit}")


def measured(tasks: list[Task], task_id: int, builder_results, runner_results, *, total: int | None,
             deadline: float | None, start: float, progress: Callable[[str], None]) -> bool:
    """Count one measured batch of tasks[task_id] (trials, failures, best time, history) and print
    its progress line. Returns whether the wall-clock deadline has passed."""
    task = tasks[task_id]
    for built, ran in zip(builder_results, runner_results):
        if ran.error_msg == SKIPPED:
            continue  # never measured: not a trial
        task.trials += 1
        if built.error_msg is None and ran.error_msg is None and ran.run_secs:
            task.best_secs = min(task.best_secs, float(np.median([float(s) for s in ran.run_secs])))
        else:
            task.failures += 1
        task.history.append((task.trials, task.rate, time.time() - start))
    done = sum(t.trials for t in tasks)
    elapsed = time.time() - start
    eta = eta_seconds(done, total, elapsed, deadline - time.time() if deadline is not None else None)
    progress(progress_line(task, done, total, elapsed, eta))
    return deadline is not None and time.time() >= deadline


SKIPPED = "not measured: the time budget was reached"


def paced_runner(runner, tasks: list[Task], deadline: float | None, start: float, progress: Callable[[str], None]):
    """`runner` behind a check of the wall-clock budget (past it, candidates are answered SKIPPED
    unmeasured) and, for the search's first round, a line per task: the gradient task scheduler
    sends every task's first batch before it collects any (and before the progress callback or the
    deadline check runs), which with many tasks and a slow runner (the cycle model) is minutes."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    batches = {"sent": 0}

    @derived_object
    class PacedRunner(PyRunner):
        def run(self, runner_inputs):
            if deadline is not None and time.time() >= deadline:
                return [LocalRunnerFuture(error_message=SKIPPED) for _ in runner_inputs]
            futures = runner.run(runner_inputs)
            batches["sent"] += 1
            if batches["sent"] <= len(tasks):
                progress(f"  first round: {len(runner_inputs)} candidates of task {batches['sent']}/{len(tasks)} "
                         f"sent to measure, {time.time() - start:.0f} s")
            return futures

    return PacedRunner()


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
            if measured(tasks, task_id, builder_results, runner_results, total=total, deadline=deadline,
                        start=start, progress=progress):
                for index, record in enumerate(task_scheduler.tasks_):
                    if not record.is_terminated:
                        task_scheduler.terminate_task(index)
                progress(f"  time budget reached after {sum(t.trials for t in tasks)} trials")

    return Progress()

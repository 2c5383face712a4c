"""Autotuning: MetaSchedule's evolutionary search guided by its XGBoost cost model, over the space
our schedule functions define (their named sample_* knobs), one task per kernel variant, all
tasks under one trial budget (gradient task scheduler). Records go to the MetaSchedule JSON
database in tuning_logs/<target>/<device>/, and `build` replays the best one per variant once it
has beaten the default schedule side by side (tuning.confirm).

Candidates are measured on this
machine or, through compiler.tuning.rpc, on devices registered with a TVM RPC tracker.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compiler import backends
from compiler.specs import KernelSpec
from compiler.tuning import confirm
from compiler.tuning import replay as replay_timings
from compiler.tuning.database import device_dir, locked, open_database
from compiler.tuning.fast_import import import_tensor_intrinsics
from compiler.tuning.progress import measured, paced_runner, progress_callback
from compiler.tuning.record_checks import RECORDS
from compiler.tuning.tasks import Task, make_tasks


def in_process_builder(compile_one):
    """MetaSchedule builder compiling candidates in this process with `compile_one(build_input)` ->
    artifact path: its LocalBuilder starts fresh worker processes per batch, each importing TVM's
    tensor intrinsics (~20 s) first. A candidate that fails to build is recorded with its error."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for build_input in build_inputs:
                try:
                    results.append(BuilderResult(compile_one(build_input), None))
                except Exception as err:  # noqa: BLE001 - a failed candidate is recorded, the search goes on
                    results.append(BuilderResult(None, f"{type(err).__name__}: {err}"))
            return results

    return InProcessBuilder()


@dataclass
class TuningRun:
    directory: Path  # the database written
    tasks: list[Task]
    seconds: float  # wall time of the search


def our_space(task: Task, target):
    """The TuneContext searching `task` over our schedule function's knobs."""
    from tvm.s_tir import meta_schedule as ms

    import schedules

    def space(sch):
        schedules.schedule(sch, task.spec, target, task.bucket, task.layout)

    generator = ms.space_generator.ScheduleFn(space, sch_rules=[], postprocs=[], mutator_probs={})
    # Our spaces are a handful of named knobs, not MetaSchedule's generic tiling space: a small
    # population and few genetic rounds keep the search overhead below the measurements'.
    search_strategy = ms.search_strategy.EvolutionarySearch(population_size=64, init_min_unmeasured=16,
                                                            genetic_num_iters=2)
    import_tensor_intrinsics()
    return ms.TuneContext(task.mod, target=target.tvm_target(), space_generator=generator,
                          search_strategy=search_strategy, task_name=task.name, num_threads=os.cpu_count() or 1)


def search(tasks: list[Task], contexts: list, target, *, database, trials: int | None, minutes: float | None = None,
           runner="local", compile_with: Callable | None = None, observers: tuple[Callable, ...] = (),
           progress: Callable[[str], None] = print) -> float:
    """MetaSchedule's search over `contexts` (one per task) with the XGBoost cost model and the
    gradient task scheduler, candidates built in this process by `compile_with(work_dir)` (default:
    the target backend's candidate compiler); records go to `database`. Returns the wall time in
    seconds."""
    from tvm.s_tir import meta_schedule as ms

    if trials is None and minutes is None:
        raise ValueError("give a trial budget, a time budget or both")
    if trials is not None and trials < 1:
        raise ValueError("--trials must be at least 1")
    if minutes is not None and minutes <= 0:
        raise ValueError("--minutes must be positive")
    start = time.time()
    deadline = start + minutes * 60 if minutes is not None else None
    budget = trials if trials is not None else 1 << 30  # the deadline stops an open-ended run
    # Small batches under a deadline: the clock is checked before each batch is measured.
    per_batch = min(16, max(2, trials // len(tasks))) if trials is not None else 8
    if compile_with is None:
        compile_with = functools.partial(backends.get(target).candidate_compiler, target)
    if isinstance(runner, str):
        runner = ms.runner.Runner.create(runner)
    with tempfile.TemporaryDirectory() as work_dir:
        builder = in_process_builder(compile_with(work_dir))
        past_deadline = measure_defaults(tasks, target, builder, runner, database, observers,
                                         total=trials, deadline=deadline, start=start, progress=progress)
        if past_deadline:
            progress(f"  time budget reached after {sum(t.trials for t in tasks)} trials (the default schedules)")
        elif budget > len(tasks):
            callbacks = [*ms.measure_callback.MeasureCallback.create("default"),
                         progress_callback(tasks, trials, deadline, progress), *map(observer_callback, observers)]
            ms.tune_tasks(tasks=contexts, task_weights=[1.0] * len(contexts), work_dir=work_dir,
                          max_trials_global=budget - len(tasks), num_trials_per_iter=per_batch, builder=builder,
                          runner=paced_runner(runner, tasks, deadline, start, progress), database=database,
                          cost_model="xgb", measure_callbacks=callbacks, task_scheduler="gradient")
    return time.time() - start


def observer_callback(observe: Callable):
    """A MetaSchedule measure callback calling observe(task_id, candidates, builder_results,
    runner_results) after each measured batch (search also calls it for the default trials)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Observer(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            observe(task_id, measure_candidates, builder_results, runner_results)

    return Observer()


def measure_defaults(tasks: list[Task], target, builder, runner, database, observers, *, total, deadline, start,
                     progress, batch: int | None = None) -> bool:
    """Each task's first trial: its default schedule (the target-derived knob values), measured
    and committed to the database, so the evolutionary search starts from it (the database's best
    records seed each population) and a task's best is never one the default beats. Measured in
    batches of `batch` tasks (default: two per CPU), each followed by its progress lines. Returns
    whether the wall-clock deadline has passed."""
    import os

    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    import schedules

    batch = batch or 2 * (os.cpu_count() or 1)
    progress(f"  measuring the default schedule of {len(tasks)} tasks first")
    for first in range(0, len(tasks), batch):
        indices = range(first, min(first + batch, len(tasks)))
        candidates = {}
        for index in indices:
            task = tasks[index]
            sch = s_tir.Schedule(task.mod)
            schedules.schedule(sch, task.spec, target, task.bucket, task.layout)
            candidates[index] = ms.MeasureCandidate(sch, ms.arg_info.ArgInfo.from_prim_func(task.mod["main"]))
        built = dict(zip(indices, builder.build([ms.builder.BuilderInput(candidates[i].sch.mod, target.tvm_target())
                                                 for i in indices])))
        runnable = [i for i in indices if built[i].error_msg is None]
        device_type = tvm.runtime.device(target.tvm_target().get_target_device_type(), 0).type  # "cpu", as MetaSchedule
        futures = runner.run([ms.runner.RunnerInput(built[i].artifact_path, device_type, candidates[i].args_info)
                              for i in runnable])
        ran = {i: future.result() for i, future in zip(runnable, futures)}
        for index in indices:
            task, candidate = tasks[index], candidates[index]
            result = ran.get(index, ms.runner.RunnerResult(None, built[index].error_msg))
            if result.error_msg is None and result.run_secs:
                database.commit_tuning_record(ms.database.TuningRecord(
                    candidate.sch.trace, database.commit_workload(task.mod), result.run_secs, target.tvm_target(),
                    candidate.args_info))
            for observe in observers:
                observe(index, [candidate], [built[index]], [result])
            if measured(tasks, index, [built[index]], [result], total=total, deadline=deadline, start=start,
                        progress=progress):
                return True
    return False


def tune(specs: list[KernelSpec], target, *, device: str, logs_root: Path, trials: int | None,
         minutes: float | None = None, tracker=None, rpc_timeout: int = 60, replay: Path | None = None,
         record: Path | None = None, core=None, race: bool = True, race_only: bool = False,
         progress: Callable[[str], None] = print) -> TuningRun:
    """Tune every tunable variant of `specs` within `trials` measurements and/or `minutes` of wall
    time (at least one given): on this machine, on the devices under `tracker`'s key (a
    compiler.tuning.rpc.Tracker), by the backend's model of `core` (a targets.Core: the ARM cycle
    model), or with `replay`, against a recording of an earlier search (compiler.tuning.replay);
    `record` writes one. Each task stops early once its search space is exhausted. Measured on this
    machine or modelled on a core, each variant's best record is then raced against its default
    schedule (`race`; tuning.confirm); `race_only` races the records already there and searches nothing."""
    if race_only and (tracker is not None or replay is not None or not race):
        raise ValueError("--race-only times records on this machine or models them on a core: not with an RPC "
                         "device, a replay or --no-race")
    if replay is not None and (tracker is not None or record is not None or core is not None):
        raise ValueError("a replayed search measures nothing: it cannot use an RPC device, a core model or make a "
                         "recording")
    if tracker is not None and core is not None:
        raise ValueError("candidates are either measured over RPC or modelled on a core, not both")
    directory = device_dir(logs_root, target.name, device)
    where = (f"replaying {replay}" if replay else
             f"over RPC ({tracker.key} at {tracker.address})" if tracker else
             f"by the cycle model of {core.name} (MODELLED)" if core else "on this machine")
    progress(f"tuning for {target.name} {where}, device {device}, into {directory}")
    if race_only:
        return _race_only(specs, target, directory, core, progress)
    if replay is not None:
        recording = replay_timings.Recording.load(replay)
        runner, compile_with = replay_timings.runner(recording), replay_timings.compile_knobs
    elif core is not None:
        runner, compile_with = backends.get(target).model_runner(target, core, progress), None
    else:
        runner, compile_with = backends.get(target).tuning_runner(target, tracker, rpc_timeout, progress), None
    tasks = make_tasks(specs, target, progress)
    if not tasks:
        raise ValueError("none of the selected kernels has tunable knobs")
    observers = []
    if record is not None:
        recording = replay_timings.Recording(device=device)
        if Path(record).is_file():
            recording = replay_timings.Recording.load(record)  # a second run adds to it
        observers.append(replay_timings.recorder(recording, Path(record), [task.name for task in tasks]))
    with locked(directory):  # for the whole run: readers meanwhile never rewrite the files it appends to
        database = open_database(directory, warn=progress)  # cleans them in place: this thread holds the lock
        seconds = search(tasks, [our_space(task, target) for task in tasks], target, database=database,
                         trials=trials, minutes=minutes, runner=runner, compile_with=compile_with,
                         observers=tuple(observers), progress=progress)
        if race and tracker is None and replay is None:
            _race(specs, target, directory, database, core, progress)
    for task in tasks:
        failed = f", {task.failures} failed" if task.failures else ""
        progress(f"{task.name}: best {task.best_secs * 1e3:.3f} ms ({task.rate:.1f} {task.unit}) "
                 f"after {task.trials} trials{failed}")
    variants = len({(task.spec.name, str(task.bucket)) for task in tasks})
    progress(f"tuned {variants} variants ({len(tasks)} tasks: variants x layout choices) in {seconds:.0f} s; "
             f"records in {directory}")
    return TuningRun(directory, tasks, seconds)


def _race_only(specs, target, directory: Path, core, progress) -> TuningRun:
    """`tune --race-only`: race the records a folder holds against their defaults; no search."""
    if not (directory / RECORDS).is_file():
        raise ValueError(f"no tuning records at {directory} to race")
    start = time.time()
    with locked(directory):
        _race(specs, target, directory, open_database(directory, warn=progress), core, progress)
    return TuningRun(directory, [], time.time() - start)


def _race(specs, target, directory: Path, database, core, progress) -> None:
    """Each variant's best record against its default schedule: timed on this machine, or with `core`
    modelled on it as `build` makes the kernels (tuning.confirm)."""
    if core is None:
        confirm.race_records(specs, target, directory, database, progress=progress)
    else:
        confirm.race_modelled_records(specs, target, directory, database, core, progress=progress)

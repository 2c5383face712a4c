"""Autotuning: MetaSchedule's evolutionary search guided by its XGBoost cost model, over the space
our schedule functions define (their named sample_* knobs), one task per kernel variant, all
tasks under one trial budget (gradient task scheduler). Records go to the MetaSchedule JSON
database in tuning_logs/<target>/<device>/, and `build` replays the best one per variant.

Each variant is measured at a representative static shape: its bucket's own length (M=1 for the
decode variant, the top of a range bucket such as L <= 512) and TUNING_SHAPES for the any-length
one; the record is then replayed on the dynamic-length kernel. Candidates are measured on this
machine or, through compiler.rpc, on devices registered with a TVM RPC tracker.
"""

from __future__ import annotations

import math

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler import ops, toolchain
from compiler.specs import KernelSpec
from compiler.tuning_db import device_dir, locked, open_database

# Lengths at which the any-length variants are measured (a prefill chunk, a long KV cache).
TUNING_SHAPES = {"M": 128, "S": 512, "L": 2048}


@dataclass
class Task:
    spec: KernelSpec
    bucket: dict
    shape: dict[str, int]  # the static lengths it is measured at
    mod: object  # IRModule with the static-shape kernel as "main"
    work: float  # FLOPs per call (or bytes moved, for one-token variants)
    unit: str  # "GFLOP/s" or "GB/s"
    trials: int = 0
    failures: int = 0
    best_secs: float = field(default=float("inf"))
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (trials, best rate, seconds)

    @property
    def rate(self) -> float:
        """Best throughput so far in `unit` (0 before a successful measurement)."""
        return self.work / self.best_secs / 1e9 if self.best_secs < float("inf") else 0.0

    @property
    def name(self) -> str:
        from compiler.build import variant_symbol

        return variant_symbol(self.spec, self.bucket)


def tuning_shape(bucket: dict) -> dict[str, int]:
    """The static lengths a variant is measured at: an exact bucket's own value, the top of a
    range bucket, TUNING_SHAPES for dims the bucket leaves open."""
    return {**TUNING_SHAPES, **{d: v[1] if isinstance(v, list) else v for d, v in bucket.items()}}


def tuning_module(spec: KernelSpec, target, bucket: dict):
    """(IRModule "main", its lengths): the variant's kernel specialised to its tuning shape. The
    function carries the variant's name and bucket as attributes, so every workload in the database
    says which kernel and bucket it serves (and records of other variants never match it)."""
    import tvm

    import schedules
    from compiler.build import variant_symbol

    shape = tuning_shape(bucket)
    layout = schedules.layout(spec, target, bucket)
    op = ops.get(spec.op)
    func = op.build(spec, layout)
    used, bound = set(), set()
    for index, arg in enumerate(op.arguments(spec, layout)):
        dims = {d for d in arg.shape if isinstance(d, str)}
        used |= dims
        if dims - bound or arg.strided:  # bind the still-dynamic lengths through this buffer's static shape
            static = [shape[d] if isinstance(d, str) else d for d in arg.shape]
            # a strided argument is measured contiguous: its stride variables become constants too
            strides = [math.prod(static[i + 1:]) for i in range(len(static))] if arg.strided else None
            func = func.specialize({func.params[index]: tvm.tirx.decl_buffer(static, arg.dtype, arg.name,
                                                                             strides=strides)})
            bound |= dims
    func = func.with_attrs({"ekc.variant": variant_symbol(spec, bucket), "ekc.bucket": str(bucket)})
    return tvm.IRModule({"main": func}), {d: v for d, v in shape.items() if d in used}


def _work(spec: KernelSpec, target, bucket, shape) -> tuple[float, str]:
    """FLOPs of one call, or for the memory-bound variants (one-token GEMV, attention decode) the
    bytes that must move."""
    import schedules

    op = ops.get(spec.op)
    if bucket.get("M") == 1 or spec.op == "attention_decode":
        return op.bytes_moved(spec, shape, schedules.layout(spec, target, bucket)), "GB/s"
    return op.flops(spec, shape), "GFLOP/s"


def _has_knobs(mod, spec, target, bucket) -> bool:
    from tvm import s_tir

    import schedules

    sch = s_tir.Schedule(mod)
    schedules.schedule(sch, spec, target, bucket)
    return bool(schedules.knobs(sch))


def make_task(spec: KernelSpec, target, bucket: dict) -> Task:
    """The tuning task of one length variant, at its tuning shape."""
    mod, shape = tuning_module(spec, target, bucket)
    work, unit = _work(spec, target, bucket, shape)
    return Task(spec, bucket, shape, mod, work, unit)


def make_tasks(specs: list[KernelSpec], target, progress: Callable[[str], None] = print) -> list[Task]:
    import schedules

    tasks = []
    for spec in specs:
        for bucket in schedules.buckets(spec, target):
            task = make_task(spec, target, bucket)
            if not _has_knobs(task.mod, spec, target, bucket):
                progress(f"  {spec.name}: no tunable knobs yet, its default schedule is used")
                break
            tasks.append(task)
    return tasks


def _progress_callback(tasks: list[Task], total: int | None, deadline: float | None,
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


def _cpu_library(toolchain, work_dir: str):
    import tvm

    def compile_one(build_input) -> str:
        exe = tvm.compile(build_input.mod, build_input.target)
        path = os.path.join(tempfile.mkdtemp(dir=work_dir), "candidate.so")
        exe.export_library(path, fcompile=toolchain.fcompile())
        return path

    return compile_one


def _builder(target, work_dir: str):
    if target.gpu is not None:
        from compiler import tune_vulkan

        return in_process_builder(tune_vulkan.spirv_candidate(target, work_dir))
    if target.runner == "hexagon":
        from compiler import tune_hexagon

        return in_process_builder(tune_hexagon.runner_candidate(target, work_dir))
    return in_process_builder(_cpu_library(toolchain.for_target(target), work_dir))


def _runner(target, tracker, rpc_timeout: int, progress):
    """Where candidates are timed: this machine's CPU or Vulkan device, or the devices under
    `tracker`'s key: TVM's own RPC measurement, or for the kernels TVM's runtime cannot time
    (Vulkan shaders, Hexagon runners) the functions compiler.rpc_server registers there."""
    from compiler import tune_hexagon, tune_vulkan

    if tracker is None:
        if target.gpu is None:
            return "local"
        progress(tune_vulkan.describe_local())
        return tune_vulkan.runner()
    if target.gpu is not None:
        functions = tune_vulkan.MEASURE_FUNC
    elif target.runner == "hexagon":
        functions = tune_hexagon.MEASURE_FUNC
    else:
        return tracker.runner(timeout_sec=rpc_timeout)
    progress(tracker.describe(functions, rpc_timeout))
    return tracker.measuring_runner(timeout_sec=rpc_timeout, functions=functions)


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
        schedules.schedule(sch, task.spec, target, task.bucket)

    generator = ms.space_generator.ScheduleFn(space, sch_rules=[], postprocs=[], mutator_probs={})
    # Our spaces are a handful of named knobs, not MetaSchedule's generic tiling space: a small
    # population and few genetic rounds keep the search overhead below the measurements'.
    search_strategy = ms.search_strategy.EvolutionarySearch(population_size=64, init_min_unmeasured=16,
                                                            genetic_num_iters=2)
    return ms.TuneContext(task.mod, target=target.tvm_target(), space_generator=generator,
                          search_strategy=search_strategy, task_name=task.name, num_threads=os.cpu_count() or 1)


def search(tasks: list[Task], contexts: list, target, *, database, trials: int | None, minutes: float | None = None,
           runner="local", extra_callbacks=(), progress: Callable[[str], None] = print) -> float:
    """MetaSchedule's search over `contexts` (one per task) with the XGBoost cost model and the
    gradient task scheduler, candidates built in this process with the target's toolchain; records
    go to `database`. Returns the wall time in seconds."""
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
    # Small batches under a deadline: the clock is checked after each batch is measured.
    per_batch = min(16, max(2, trials // len(tasks))) if trials is not None else 8
    with tempfile.TemporaryDirectory() as work_dir:
        callbacks = [*ms.measure_callback.MeasureCallback.create("default"),
                     _progress_callback(tasks, trials, deadline, progress), *extra_callbacks]
        ms.tune_tasks(tasks=contexts, task_weights=[1.0] * len(contexts), work_dir=work_dir,
                      max_trials_global=budget, num_trials_per_iter=per_batch,
                      builder=_builder(target, work_dir), runner=runner,
                      database=database, cost_model="xgb", measure_callbacks=callbacks,
                      task_scheduler="gradient")
    return time.time() - start


def tune(specs: list[KernelSpec], target, *, device: str, logs_root: Path, trials: int | None,
         minutes: float | None = None, tracker=None, rpc_timeout: int = 60,
         progress: Callable[[str], None] = print) -> TuningRun:
    """Tune every tunable variant of `specs` within `trials` measurements and/or `minutes` of wall
    time (at least one given): on this machine, or on the devices under `tracker`'s key (a
    compiler.rpc.Tracker). Each task stops early once its search space is exhausted."""
    directory = device_dir(logs_root, target.name, device)
    where = f"over RPC ({tracker.key} at {tracker.address})" if tracker else "on this machine"
    progress(f"tuning for {target.name} {where}, device {device}, into {directory}")
    runner = _runner(target, tracker, rpc_timeout, progress)
    tasks = make_tasks(specs, target, progress)
    if not tasks:
        raise ValueError("none of the selected kernels has tunable knobs")
    with locked(directory):
        database = open_database(directory, warn=progress)
        seconds = search(tasks, [our_space(task, target) for task in tasks], target, database=database,
                         trials=trials, minutes=minutes, runner=runner, progress=progress)
    for task in tasks:
        failed = f", {task.failures} failed" if task.failures else ""
        progress(f"{task.name}: best {task.best_secs * 1e3:.3f} ms ({task.rate:.1f} {task.unit}) "
                 f"after {task.trials} trials{failed}")
    progress(f"tuned {len(tasks)} variants in {seconds:.0f} s; records in {directory}")
    return TuningRun(directory, tasks, seconds)


def best_record(database, spec: KernelSpec, target, bucket: dict):
    """The database's best record for this variant (measured at its tuning shape), or None."""
    mod, _ = tuning_module(spec, target, bucket)
    if not database.has_workload(mod):
        return None
    return database.query_tuning_record(mod, target.tvm_target(), "main")

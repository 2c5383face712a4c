"""Autotuning: MetaSchedule's evolutionary search guided by its XGBoost cost model, over the space
our schedule functions define (their named sample_* knobs), one task per kernel variant, all
tasks under one trial budget (gradient task scheduler). Records go to the MetaSchedule JSON
database in tuning_logs/<target>/<device>/, and `build` replays the best one per variant.

Each variant is measured at a representative static shape: its bucket's own lengths (M=1 for the
decode variant) and TUNING_SHAPES for the any-length one; the record is then replayed on the
dynamic-length kernel.
"""

from __future__ import annotations

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
    bucket: dict[str, int]
    shape: dict[str, int]  # the static lengths it is measured at
    mod: object  # IRModule with the static-shape kernel as "main"
    work: float  # FLOPs per call (or bytes moved, for one-token variants)
    unit: str  # "GFLOP/s" or "GB/s"
    trials: int = 0
    best_secs: float = field(default=float("inf"))

    @property
    def rate(self) -> float:
        """Best throughput so far in `unit` (0 before a successful measurement)."""
        return self.work / self.best_secs / 1e9 if self.best_secs < float("inf") else 0.0

    @property
    def name(self) -> str:
        from compiler.build import variant_symbol

        return variant_symbol(self.spec, self.bucket)


def tuning_module(spec: KernelSpec, target, bucket: dict[str, int]):
    """(static-shape IRModule "main", its lengths) at which a variant is tuned and looked up."""
    import tvm

    import schedules

    shape = {**TUNING_SHAPES, **bucket}
    layout = schedules.layout(spec, target, bucket)
    func = ops.get(spec.op).build(spec, dict(layout, bucket=shape))
    used = {d for a in ops.get(spec.op).arguments(spec, layout) for d in a.shape if isinstance(d, str)}
    return tvm.IRModule({"main": func}), {d: v for d, v in shape.items() if d in used}


def _work(spec: KernelSpec, target, bucket, shape) -> tuple[float, str]:
    """FLOPs of one call, or for one-token variants (memory-bound) the bytes that must move."""
    import schedules

    op = ops.get(spec.op)
    if bucket.get("M") == 1:
        return op.bytes_moved(spec, shape, schedules.layout(spec, target, bucket)), "GB/s"
    return op.flops(spec, shape), "GFLOP/s"


def _has_knobs(mod, spec, target, bucket) -> bool:
    from tvm import s_tir

    import schedules

    sch = s_tir.Schedule(mod)
    schedules.schedule(sch, spec, target, bucket)
    return bool(schedules.knobs(sch))


def make_tasks(specs: list[KernelSpec], target, progress: Callable[[str], None] = print) -> list[Task]:
    import schedules

    tasks = []
    for spec in specs:
        for bucket in schedules.buckets(spec, target):
            mod, shape = tuning_module(spec, target, bucket)
            if not _has_knobs(mod, spec, target, bucket):
                progress(f"  {spec.name}: no tunable knobs yet, its default schedule is used")
                break
            work, unit = _work(spec, target, bucket, shape)
            tasks.append(Task(spec, bucket, shape, mod, work, unit))
    return tasks


def _progress_callback(tasks: list[Task], total: int, progress: Callable[[str], None]):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    start = time.time()

    @derived_object
    class Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            task = tasks[task_id]
            for built, ran in zip(builder_results, runner_results):
                task.trials += 1
                if built.error_msg is None and ran.error_msg is None and ran.run_secs:
                    task.best_secs = min(task.best_secs, float(np.median([float(s) for s in ran.run_secs])))
            done = sum(t.trials for t in tasks)
            eta = (time.time() - start) / done * max(total - done, 0)
            progress(f"  [{done}/{total} trials, {time.time() - start:.0f} s, ETA {eta:.0f} s] {task.name} @ {task.shape}: "
                     f"{task.trials} trials, best {task.rate:.1f} {task.unit}")

    return Progress()


def _in_process_builder(toolchain, work_dir: str):
    """MetaSchedule builder compiling candidates in this process: its LocalBuilder starts fresh
    worker processes per batch, each importing TVM's tensor intrinsics (~20 s) first."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for build_input in build_inputs:
                try:
                    exe = tvm.compile(build_input.mod, build_input.target)
                    path = os.path.join(tempfile.mkdtemp(dir=work_dir), "candidate.so")
                    exe.export_library(path, fcompile=toolchain.fcompile())
                    results.append(BuilderResult(path, None))
                except Exception as err:  # noqa: BLE001 - a failed candidate is recorded, the search goes on
                    results.append(BuilderResult(None, f"{type(err).__name__}: {err}"))
            return results

    return InProcessBuilder()


def tune(specs: list[KernelSpec], target, *, device: str, logs_root: Path, trials: int,
         progress: Callable[[str], None] = print) -> Path:
    """Tune every tunable variant of `specs` on this machine; returns the database directory."""
    from tvm.s_tir import meta_schedule as ms

    import schedules

    if trials < 1:
        raise ValueError("--trials must be at least 1")
    directory = device_dir(logs_root, target.name, device)
    progress(f"tuning for {target.name} on {device} into {directory}")
    tasks = make_tasks(specs, target, progress)
    if not tasks:
        raise ValueError("none of the selected kernels has tunable knobs")
    tvm_target = target.tvm_target()
    contexts = []
    for task in tasks:
        def space(sch, task=task):
            schedules.schedule(sch, task.spec, target, task.bucket)

        generator = ms.space_generator.ScheduleFn(space, sch_rules=[], postprocs=[], mutator_probs={})
        # Our spaces are a handful of named knobs, not MetaSchedule's generic tiling space: a small
        # population and few genetic rounds keep the search overhead below the measurements'.
        search = ms.search_strategy.EvolutionarySearch(population_size=64, init_min_unmeasured=16,
                                                       genetic_num_iters=2)
        contexts.append(ms.TuneContext(task.mod, target=tvm_target, space_generator=generator,
                                       search_strategy=search, task_name=task.name,
                                       num_threads=os.cpu_count() or 1))
    with locked(directory), tempfile.TemporaryDirectory() as work_dir:
        database = open_database(directory, warn=progress)
        callbacks = [*ms.measure_callback.MeasureCallback.create("default"),
                     _progress_callback(tasks, trials, progress)]
        ms.tune_tasks(tasks=contexts, task_weights=[1.0] * len(contexts), work_dir=work_dir,
                      max_trials_global=trials, num_trials_per_iter=min(16, max(2, trials // len(tasks))),
                      builder=_in_process_builder(toolchain.for_target(target), work_dir),
                      database=database, cost_model="xgb", measure_callbacks=callbacks,
                      task_scheduler="gradient")
    for task in tasks:
        progress(f"{task.name}: best {task.best_secs * 1e3:.3f} ms ({task.rate:.1f} {task.unit}) after {task.trials} trials")
    return directory


def best_record(database, spec: KernelSpec, target, bucket: dict[str, int]):
    """The database's best record for this variant (measured at its tuning shape), or None."""
    mod, _ = tuning_module(spec, target, bucket)
    if not database.has_workload(mod):
        return None
    return database.query_tuning_record(mod, target.tvm_target(), "main")

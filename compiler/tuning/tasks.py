"""Tuning tasks: one per kernel variant and layout choice, its kernel specialised to a
representative static shape.

Each variant is measured at its bucket's own length (M=1 for the decode variant, the top of a range
bucket such as L <= 512) and at TUNING_SHAPES for the any-length one; the record is then replayed
on the dynamic-length kernel (`best_record`, which `build` calls).

The structural choices (schedules.layout_choices: row tiles, KV tiles, query rows, split lengths)
are an outer space: each alternative layout is a task of its own, its function tagged with what
sets it apart ("ekc.layout"), so its records never pass for another layout's; the trial budget is
shared by all tasks, and `build` takes the layout whose record ran fastest (`layout_record`). The
default layout's function carries no tag: its records are those made before the outer space existed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from compiler import ops
from compiler.specs import KernelSpec, variant_symbol
from compiler.tuning import verdicts

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
    layout: object = None  # the schedules.layouts.Layout its kernel is built with
    layout_tag: str = ""  # what sets that layout apart from the variant's default ("" for the default)
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
        return tagged_name(variant_symbol(self.spec, self.bucket), self.layout_tag)


def tagged_name(variant: str, layout_tag: str) -> str:
    """A task's name: its variant's symbol, with "@" and its layout tag for a non-default layout."""
    return f"{variant}@{layout_tag}" if layout_tag else variant


def tuning_shape(bucket: dict) -> dict[str, int]:
    """The static lengths a variant is measured at: an exact bucket's own value, the top of a
    range bucket, TUNING_SHAPES for dims the bucket leaves open."""
    return {**TUNING_SHAPES, **{d: v[1] if isinstance(v, list) else v for d, v in bucket.items()}}


def tuning_module(spec: KernelSpec, target, bucket: dict, *, layout=None, func=None):
    """(IRModule "main", its lengths): the variant's kernel specialised to its tuning shape. The
    function carries the variant's name and bucket as attributes, so every workload in the database
    says which kernel and bucket it serves (and records of other variants never match it). A caller
    that has the variant's layout and kernel already passes them."""
    import tvm

    import schedules

    shape = tuning_shape(bucket)
    op = ops.get(spec.op)
    default = schedules.layout(spec, target, bucket)
    layout = layout or default
    tag = schedules.layout_tag(layout, default)
    if func is None:
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
    func = func.with_attrs({"ekc.variant": variant_symbol(spec, bucket), "ekc.bucket": str(bucket),
                            **({"ekc.layout": tag} if tag else {})})
    return tvm.IRModule({"main": func}), {d: v for d, v in shape.items() if d in used}


def _work(spec: KernelSpec, bucket, shape, layout) -> tuple[float, str]:
    """FLOPs of one call, or for the memory-bound variants (one-token GEMV, attention decode) the
    bytes that must move."""
    op = ops.get(spec.op)
    if bucket.get("M") == 1 or spec.op == "attention_decode":
        return op.bytes_moved(spec, shape, layout), "GB/s"
    return op.flops(spec, shape), "GFLOP/s"


def _has_knobs(mod, spec, target, bucket, layout) -> bool:
    from tvm import s_tir

    import schedules

    sch = s_tir.Schedule(mod)
    schedules.schedule(sch, spec, target, bucket, layout)
    return bool(schedules.knobs(sch))


def make_task(spec: KernelSpec, target, bucket: dict, layout=None) -> Task:
    """The tuning task of one length variant with `layout` (default: the variant's default), at its
    tuning shape."""
    import schedules

    default = schedules.layout(spec, target, bucket)
    layout = layout or default
    mod, shape = tuning_module(spec, target, bucket, layout=layout)
    work, unit = _work(spec, bucket, shape, layout)
    return Task(spec, bucket, shape, mod, work, unit, layout, schedules.layout_tag(layout, default))


def default_module(task: Task, target):
    """The task's kernel scheduled by the default schedule of its layout."""
    from tvm import s_tir

    import schedules

    sch = s_tir.Schedule(task.mod)
    schedules.schedule(sch, task.spec, target, task.bucket, task.layout)
    return sch.mod


def record_module(spec: KernelSpec, target, bucket: dict, layout, record):
    """The variant's kernel in `layout` at its tuning shape, scheduled by replaying `record`."""
    from tvm import s_tir

    sch = s_tir.Schedule(make_task(spec, target, bucket, layout).mod)
    record.trace.apply_to_schedule(sch, remove_postproc=True)
    return sch.mod


def make_tasks(specs: list[KernelSpec], target, progress: Callable[[str], None] = print) -> list[Task]:
    """Every variant's tasks, one per layout choice; a variant with one layout and no knobs has none."""
    import schedules

    tasks = []
    for spec in specs:
        for bucket in schedules.buckets(spec, target):
            choices = schedules.layout_choices(spec, target, bucket)
            variant_tasks = [make_task(spec, target, bucket, layout) for layout in choices]
            if len(choices) == 1 and not _has_knobs(variant_tasks[0].mod, spec, target, bucket, choices[0]):
                progress(f"  {spec.name}: no tunable knobs yet, its default schedule is used")
                break
            tasks += variant_tasks
    return tasks


def best_record(database, spec: KernelSpec, target, bucket: dict, *, layout=None, func=None):
    """The database's best record for this variant with `layout` (default: the variant's default),
    measured at its tuning shape, or None."""
    mod, _ = tuning_module(spec, target, bucket, layout=layout, func=func)
    if not database.has_workload(mod):
        return None
    return database.query_tuning_record(mod, target.tvm_target(), "main")


def tagged_layouts(database) -> set[tuple[str, str]]:
    """(variant, layout tag) of every non-default layout the database has records of."""
    found = set()
    for record in database.get_all_tuning_records():
        attrs = record.workload.mod["main"].attrs
        if attrs is not None and "ekc.layout" in attrs:
            found.add((str(attrs["ekc.variant"]), str(attrs["ekc.layout"])))
    return found


def layout_record(database, spec: KernelSpec, target, bucket: dict, tagged: set | None = None, *, raced: bool = True):
    """(layout, record) of a variant: of its layout choices with a record in `database`, the one whose
    record ran fastest, where another layout than the default must beat the default's record by
    LAYOUT_MARGIN; the default layout and None where none has one, or (`raced`) where that record
    lost its race against the default schedule (tuning.confirm). `tagged`: the database's
    tagged_layouts(), when the caller has it already."""
    import schedules

    choices = schedules.layout_choices(spec, target, bucket)
    default = choices[0]
    tagged = tagged_layouts(database) if tagged is None else tagged
    variant = variant_symbol(spec, bucket)
    timed = []  # (seconds, layout, record), the default layout's first
    for layout in choices:
        if layout is not default and (variant, schedules.layout_tag(layout, default)) not in tagged:
            continue  # never tuned: spare building its kernel
        record = best_record(database, spec, target, bucket, layout=layout)
        if record is not None:
            timed.append((median_seconds(record) * (1.0 if layout is default else LAYOUT_MARGIN), layout, record))
    if not timed:
        return default, None
    _, layout, record = min(timed, key=lambda entry: entry[0])
    if raced and verdicts.lost(verdicts.verdicts_of(database), variant, record):
        return default, None
    return layout, record


# How much faster than the default layout's record another layout's must have run to be built. A
# record times one static shape (the variant's tuning shape); a layout that ties there says nothing
# of the kernel build makes (SmolLM2's 3072 x 576 GEMM with 8-row tiles won by 0.05% and, as the
# any-length kernel, was 14% slower, MODELLED: tuning.confirm races such records as built), and the
# default, derived from the target's facts, is the safer guess.
LAYOUT_MARGIN = 1.02


def median_seconds(record) -> float:
    return float(statistics.median(float(t) for t in record.run_secs))

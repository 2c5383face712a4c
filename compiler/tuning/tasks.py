"""Tuning tasks: one per kernel variant, its kernel specialised to a representative static shape.

Each variant is measured at its bucket's own length (M=1 for the decode variant, the top of a range
bucket such as L <= 512) and at TUNING_SHAPES for the any-length one; the record is then replayed
on the dynamic-length kernel (`best_record`, which `build` calls).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from compiler import ops
from compiler.specs import KernelSpec, variant_symbol

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
        return variant_symbol(self.spec, self.bucket)


def tuning_shape(bucket: dict) -> dict[str, int]:
    """The static lengths a variant is measured at: an exact bucket's own value, the top of a
    range bucket, TUNING_SHAPES for dims the bucket leaves open."""
    return {**TUNING_SHAPES, **{d: v[1] if isinstance(v, list) else v for d, v in bucket.items()}}


def tuning_module(spec: KernelSpec, target, bucket: dict, *, layout: dict | None = None, func=None):
    """(IRModule "main", its lengths): the variant's kernel specialised to its tuning shape. The
    function carries the variant's name and bucket as attributes, so every workload in the database
    says which kernel and bucket it serves (and records of other variants never match it). A caller
    that has the variant's layout and kernel already passes them."""
    import tvm

    import schedules

    shape = tuning_shape(bucket)
    op = ops.get(spec.op)
    if layout is None:
        layout = schedules.layout(spec, target, bucket)
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


def best_record(database, spec: KernelSpec, target, bucket: dict, *, layout: dict | None = None, func=None):
    """The database's best record for this variant (measured at its tuning shape), or None."""
    mod, _ = tuning_module(spec, target, bucket, layout=layout, func=func)
    if not database.has_workload(mod):
        return None
    return database.query_tuning_record(mod, target.tvm_target(), "main")

"""`python -m compiler knobs`: every variant's knobs as data (name, candidates, the target-derived
default) beside the value its tuning record chose, so what tuning changed can be read and diffed
without running anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compiler.specs import KernelSpec, variant_symbol


@dataclass(frozen=True)
class KnobRow:
    variant: str
    name: str
    candidates: tuple[int, ...]
    default: int
    tuned: int | None  # the record's choice; None without a record

    @property
    def changed(self) -> bool:
        return self.tuned is not None and self.tuned != self.default


def knob_rows(specs: list[KernelSpec], target, database=None) -> list[KnobRow]:
    """One row per knob of every variant of `specs` (variants without knobs have none)."""
    import tvm
    from tvm import s_tir

    import schedules
    from compiler import ops
    from compiler.tuning.tasks import best_record

    rows = []
    for spec in specs:
        for bucket in schedules.buckets(spec, target):
            layout = schedules.layout(spec, target, bucket)
            func = ops.get(spec.op).build(spec, layout)
            default = schedules.knob_table(schedules.schedule(s_tir.Schedule(tvm.IRModule({"main": func})), spec,
                                                              target, bucket))
            record = best_record(database, spec, target, bucket, layout=layout, func=func) if database else None
            tuned = {}
            if record is not None:
                replayed = s_tir.Schedule(tvm.IRModule({"main": func}))
                record.trace.apply_to_schedule(replayed, remove_postproc=True)
                tuned = schedules.knobs(replayed)
            rows += [KnobRow(variant_symbol(spec, bucket), knob.name, knob.candidates, knob.value, tuned.get(knob.name))
                     for knob in default]
    return rows


def print_rows(rows: list[KnobRow], emit: Callable[[str], None] = print) -> None:
    width = max((len(r.variant) for r in rows), default=7)
    names = max((len(r.name) for r in rows), default=4)
    choices = max((len(str(list(r.candidates))) for r in rows), default=10)
    emit(f"{'variant':{width}}  {'knob':{names}}  {'candidates':{choices}}  {'default':>7} {'tuned':>7}")
    for r in rows:
        tuned = "-" if r.tuned is None else str(r.tuned)
        mark = "  *" if r.changed else ""
        emit(f"{r.variant:{width}}  {r.name:{names}}  {str(list(r.candidates)):{choices}}  {r.default:>7} {tuned:>7}{mark}")
    tuned = [r for r in rows if r.tuned is not None]
    emit(f"{len(rows)} knobs; {len(tuned)} with a tuning record, {sum(r.changed for r in rows)} of them (*) "
         "changed from the default")

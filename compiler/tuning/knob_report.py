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
    from compiler.tuning.tasks import layout_record, tagged_layouts

    tagged = tagged_layouts(database) if database else set()
    rows = []
    for spec in specs:
        for bucket in schedules.buckets(spec, target):
            variant = variant_symbol(spec, bucket)
            choices = schedules.layout_choices(spec, target, bucket)
            layout, record = layout_record(database, spec, target, bucket, tagged) if database else (choices[0], None)
            rows += _structural_rows(variant, choices, layout if record is not None else None)
            func = ops.get(spec.op).build(spec, layout)
            default = schedules.knob_table(schedules.schedule(s_tir.Schedule(tvm.IRModule({"main": func})), spec,
                                                              target, bucket, layout))
            tuned = {}
            if record is not None:
                replayed = s_tir.Schedule(tvm.IRModule({"main": func}))
                record.trace.apply_to_schedule(replayed, remove_postproc=True)
                tuned = schedules.knobs(replayed)
            rows += [KnobRow(variant, knob.name, knob.candidates, knob.value, tuned.get(knob.name)) for knob in default]
    return rows


def _structural_rows(variant: str, choices: list, chosen) -> list[KnobRow]:
    """A row per layout field the variant's layout choices differ in (the outer space), with the
    value of the layout its record chose (`chosen`, None without a record)."""
    fields = [layout.to_json() for layout in choices]
    rows = []
    for name, value in fields[0].items():
        if any(f[name] != value for f in fields[1:]):
            values = tuple(dict.fromkeys(f[name] for f in fields))
            rows.append(KnobRow(variant, name, values, value, chosen.to_json()[name] if chosen is not None else None))
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

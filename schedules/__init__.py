"""Schedules, one package per target family, each exposing the same three functions:

    buckets(spec, target) -> [dict]          the length buckets to build, most specific first:
                                             {"M": 1} is a variant specialised to one token
                                             (decode GEMV), {"L": [1, 512]} one for a range of
                                             lengths (still dynamic), {} serves every length
    layout(spec, target, bucket) -> Layout   structural choices the op's tensor expression needs
                                             (weight tiles matching the dot-product instruction,
                                             accumulator row tiles, KV tiles, the bucket itself)
    layout_choices(spec, target, bucket)     the default layout, then the structural alternatives
                                             the tuner searches as tasks of their own (the outer
                                             space); each keeps the kernel's arguments, so the
                                             packed weights do not depend on which one is chosen
    schedule(sch, spec, target, bucket,      schedule the kernel (built with `layout`, default: the
             layout=None)                    variant's default) in place; every choice is drawn
                                             with sch.sample_* so this one function is also the
                                             inner tuning space

Families are imported lazily: a missing dependency of one family never breaks another.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

KNOB_PREFIX = "ekc.knob."


@dataclass(frozen=True)
class Knob:
    """One named decision of a scheduled kernel: the values the tuner may choose from and the one
    this schedule took (the target-derived default, or a tuning record's choice when one was
    replayed). A fixed, untuned choice has one candidate."""

    name: str
    candidates: tuple[int, ...]
    value: int


def knob_table(sch) -> list[Knob]:
    """The knobs of a scheduled kernel, read from its trace: each sch.sample_categorical that
    schedules.decisions annotated on a block as ekc.knob.<name>."""
    decisions = sch.trace.decisions
    sampled = {inst.outputs[0]: tuple(int(c) for c in inst.attrs[0])
               for inst in sch.trace.insts if inst.kind.name == "SampleCategorical"}
    chosen = {inst.outputs[0]: int(decisions[inst])
              for inst in sch.trace.insts if inst.kind.name == "SampleCategorical"}
    table = []
    for inst in sch.trace.insts:
        if inst.kind.name == "Annotate" and str(inst.attrs[0]).startswith(KNOB_PREFIX):
            name, value = str(inst.attrs[0])[len(KNOB_PREFIX):], inst.inputs[1]
            if value in sampled:
                table.append(Knob(name, sampled[value], sampled[value][chosen[value]]))
            else:
                table.append(Knob(name, (int(value),), int(value)))
    return table


def knobs(sch) -> dict[str, int]:
    """The named decisions a scheduled kernel used ({"n_block": 16})."""
    return {knob.name: knob.value for knob in knob_table(sch)}


def _family(target):
    try:
        return importlib.import_module(f"schedules.{target.family}")
    except ModuleNotFoundError as err:
        raise ValueError(f"target {target.name!r}: no schedule family {target.family!r} ({err})") from None


def buckets(spec, target) -> list[dict]:
    return _family(target).buckets(spec, target)


def layout(spec, target, bucket: dict | None = None):
    """The variant's layout (a schedules.layouts.Layout of the target's family)."""
    return _family(target).layout(spec, target, bucket or {})


def layout_choices(spec, target, bucket: dict | None = None) -> list:
    """The variant's layouts for the tuner: its default first, then the alternatives."""
    return _family(target).layout_choices(spec, target, bucket or {})


def layout_tag(layout, default) -> str:
    """What sets `layout` apart from the variant's `default` ("m_tile=8"); "" for the default. It
    names the layout in tuning records and task names."""
    ours, theirs = layout.to_json(), default.to_json()
    return ",".join(f"{name}={ours[name] if ours[name] != '' else 'none'}" for name in ours
                    if ours[name] != theirs.get(name))


def schedule(sch, spec, target, bucket: dict | None = None, layout=None):
    """Schedule in place a kernel built with `layout` (default: the variant's default layout); a
    family that builds a new Schedule (gpu) returns it, else returns sch."""
    bucket = bucket or {}
    return _family(target).schedule(sch, spec, target, bucket, layout or _family(target).layout(spec, target, bucket)) or sch

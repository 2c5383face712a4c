"""Schedules, one package per target family, each exposing the same two functions:

    layout(spec, target) -> dict     structural choices the op's tensor expression needs
                                     (weight tiles matching the dot-product instruction, KV tiles)
    schedule(sch, spec, target)      schedule the kernel in place; every choice is drawn with
                                     sch.sample_* so this one function is also the tuning space

Families are imported lazily: a missing dependency of one family never breaks another.
"""

from __future__ import annotations

import importlib
from typing import Any


def _family(target):
    try:
        return importlib.import_module(f"schedules.{target.family}")
    except ModuleNotFoundError as err:
        raise ValueError(f"target {target.name!r}: no schedule family {target.family!r} ({err})") from None


def layout(spec, target) -> dict[str, Any]:
    return _family(target).layout(spec, target)


def schedule(sch, spec, target) -> None:
    _family(target).schedule(sch, spec, target)

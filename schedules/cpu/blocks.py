"""Small queries on a schedule's blocks."""

from __future__ import annotations


def has_block(sch, name: str) -> bool:
    """Whether the function being scheduled has a block `name` (optional stages: bias, zero point)."""
    from tvm.s_tir.schedule import ScheduleError

    try:
        sch.get_sblock(name)
        return True
    except ScheduleError:
        return False

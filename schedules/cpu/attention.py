"""CPU schedules for attention: the TensorIR bodies are already SIMD over the head dim; here the
independent blocks (query rows, decode splits) are spread over cores."""

from __future__ import annotations


def schedule_prefill(sch, spec, target, layout) -> None:
    row = sch.get_sblock("rows")
    sch.parallel(sch.fuse(*sch.get_loops(row)))


def schedule_decode(sch, spec, target, layout) -> None:
    split = sch.get_sblock("split")
    sch.parallel(sch.fuse(*sch.get_loops(split)))
    (h,) = sch.get_loops(sch.get_sblock("merge"))
    sch.parallel(h)

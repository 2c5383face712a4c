"""Tunable decisions as sch.sample_* calls with target-derived defaults.

Outside tuning, the default decision is what is applied; MetaSchedule re-samples the same calls,
so the default schedule and the tuning space are one function.
"""

from __future__ import annotations

from schedules import KNOB_PREFIX


def sample_divisor(sch, name: str, block, n: int, *, multiple_of: int, preferred: int, limit: int):
    """Knob `name`: a tile size dividing n (so no tail predicates break tensorisation), default
    `preferred`. The decision is annotated on `block` as ekc.knob.<name>, so the trace, the IR and
    the manifest all say which value was used."""
    candidates = [c for c in (1, 2, 4, 8, 16, 32, 64, 128) if c % multiple_of == 0 and n % c == 0 and c <= limit]
    if not candidates:
        raise ValueError(f"no tile divides {n} in multiples of {multiple_of}")
    return sample_choice(sch, name, block, candidates, max((c for c in candidates if c <= preferred), default=candidates[0]))


def sample_choice(sch, name: str, block, candidates: list[int], default: int):
    """Knob `name`: one of `candidates` (uniform prior), `default` outside tuning; annotated on `block`."""
    value = sch.sample_categorical(candidates, [1.0 / len(candidates)] * len(candidates),
                                   decision=candidates.index(default))
    sch.annotate(block, KNOB_PREFIX + name, value)
    return value

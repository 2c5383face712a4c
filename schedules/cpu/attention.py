"""CPU schedules for attention: the TensorIR bodies are already SIMD over the head dim; here the
independent blocks (query rows, decode splits) are spread over cores, and the knob "unroll"
(TVM's auto-unroll limit for the block body, 0 leaves the loops to LLVM) is left to tuning.
Structural choices (keys per tile, query rows per block, keys per decode split) are layout, fixed
per length bucket."""

from __future__ import annotations

from schedules.decisions import sample_choice

UNROLL_STEPS = [0, 16, 64, 256]


def schedule_prefill(sch, spec, target, layout) -> None:
    _schedule_grid(sch, sch.get_sblock("rows"))


def schedule_decode(sch, spec, target, layout) -> None:
    """The splits in parallel; their merge (a few exps and FMAs per split and head) on the calling
    thread: a second parallel region was a second fork-join, whose barrier waits for the slowest
    core. MEASURED on x86-avx512 (2 cores, SmolLM2's heads, old and new side by side): hot L=2048
    0.050 -> 0.046 ms; cold L=2048 1.02-1.6x faster in 6 runs, L=8192 0.66-1.14x (noisy)."""
    _schedule_grid(sch, sch.get_sblock("split"))


def _schedule_grid(sch, block) -> None:
    fused = sch.fuse(*sch.get_loops(block))
    sch.parallel(fused)
    # A sampled value can only flow into instructions (not Python branches): MetaSchedule replays
    # the trace with new decisions, it does not re-run this function.
    unroll = sample_choice(sch, "unroll", block, UNROLL_STEPS, default=0)
    sch.annotate(fused, "pragma_auto_unroll_max_step", unroll)
    sch.annotate(fused, "pragma_unroll_explicit", 1)

"""Is our search space worth having? For a few representative kernels, side by side in one process:
our default schedule, our space searched by MetaSchedule + XGBoost, and MetaSchedule's own generic
space (post-order-apply with its CPU rules) searched the same way, each at the same trial budgets.

Each space is searched once per kernel up to the largest budget; the result at a smaller budget is
the best candidate among the first that-many trials of the same run (the search is sequential, so
that is what a run with the smaller budget measures). Records go to in-memory databases: nothing
here touches tuning_logs/. The winners are then compiled and timed alternately, many rounds,
medians, on the same inputs, and checked against the default schedule's output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.specs import make_spec
from compiler.tuning.fast_import import import_tensor_intrinsics
from compiler.tuning.search import our_space, search
from compiler.tuning.tasks import Task, default_module, make_task


def cases() -> list[tuple[str, object, dict]]:
    """(label, spec, bucket): the kernels the autotuner issue names."""
    return [
        ("qgemm_w8a8 M=128 N=K=2048", make_spec("qgemm_w8a8", n=2048, k=2048), {}),
        ("qgemm_w4a16 decode M=1 N=K=2048 g128", make_spec("qgemm_w4a16", n=2048, k=2048, group=128), {"M": 1}),
        ("attention_prefill S=512 Hq32 Hkv8 D64", make_spec("attention_prefill", hq=32, hkv=8, d=64), {}),
    ]


@dataclass
class SpaceResult:
    seconds_at: dict[int, float] = field(default_factory=dict)  # budget -> wall time to reach it
    best_at: dict[int, object] = field(default_factory=dict)  # budget -> best IRModule within it
    trials: int = 0
    failures: int = 0
    error: str | None = None


def _metaschedule_space(task: Task, target):
    import os

    import tvm
    from tvm.s_tir import meta_schedule as ms

    # Its CPU rules size parallel loops from the target's "num-cores".
    tvm_target = tvm.target.Target({**target.tvm_target().export(), "num-cores": os.cpu_count() or 1})
    import_tensor_intrinsics()
    return ms.TuneContext(task.mod, target=tvm_target, space_generator="post-order-apply",
                          search_strategy="evolutionary", task_name=task.name, num_threads="physical")


def _improvements(found: list):
    """Search observer keeping (trial number, seconds, candidate module) of each new best."""
    state = {"trials": 0, "best": float("inf")}

    def observe(task_id, measure_candidates, builder_results, runner_results):
        for candidate, built, ran in zip(measure_candidates, builder_results, runner_results):
            state["trials"] += 1
            if built.error_msg is None and ran.error_msg is None and ran.run_secs:
                secs = float(np.median([float(s) for s in ran.run_secs]))
                if secs < state["best"]:
                    state["best"] = secs
                    found.append((state["trials"], secs, candidate.sch.mod))

    return observe


def _search_space(task: Task, context, target, budgets: list[int], progress) -> SpaceResult:
    from tvm.s_tir import meta_schedule as ms

    result, found = SpaceResult(), []
    try:
        search([task], [context], target, database=ms.database.MemoryDatabase(), trials=max(budgets),
               observers=(_improvements(found),), progress=progress)
    except Exception as err:  # noqa: BLE001 - a space that cannot be searched is a result to report
        result.error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}"
    result.trials, result.failures = task.trials, task.failures
    if result.error is None and not found:
        result.error = "no candidate was generated or ran (MetaSchedule logs say why)"
    for budget in budgets:
        within = [f for f in found if f[0] <= budget]
        if within:
            result.best_at[budget] = min(within, key=lambda f: f[1])[2]
        reached = [h[2] for h in task.history if h[0] <= budget]
        if reached:
            result.seconds_at[budget] = reached[-1]
    return result


def _inputs(mod, rng):
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    arrays = []
    for info in ArgInfo.from_prim_func(mod["main"]):
        shape, dtype = [int(d) for d in info.shape], str(info.dtype)
        if dtype.startswith("float"):
            data = rng.standard_normal(shape).astype(dtype)
        else:
            bits = np.iinfo(dtype)
            data = rng.integers(max(bits.min, -100), min(bits.max, 100), size=shape, dtype=dtype)
        arrays.append(tvm.runtime.tensor(data))
    return arrays


def alternate(contestants: dict, outputs: dict, work: float, rounds: int) -> dict:
    """The side-by-side race every measuring backend runs: contestants {name: (call(), batch(n) ->
    seconds per call)}, outputs {name: its output after one call}, checked against the first's; each
    batch sized to ~50 ms by one timed call, then `rounds` rounds, each starting with the next
    contestant in turn (a fixed order favours whichever runs in the other's wake); medians."""
    names = list(contestants)
    reference = outputs[names[0]].astype(np.float64)
    checks = {name: bool(np.allclose(outputs[name].astype(np.float64), reference, rtol=1e-3, atol=1e-3))
              for name in names}
    sizes = {}
    for name, (call, _) in contestants.items():
        start = time.perf_counter()
        call()
        sizes[name] = max(1, int(0.05 / max(time.perf_counter() - start, 1e-6)))
    samples = {name: [] for name in names}
    for round_ in range(rounds):  # each round starts with the next contestant: none always runs first or after another
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            samples[name].append(contestants[name][1](sizes[name]))
    return {name: {"median_s": float(np.median(s)), "min_s": float(np.min(s)), "max_s": float(np.max(s)),
                   "rate": work / float(np.median(s)) / 1e9, "matches_default": checks[name]}
            for name, s in samples.items()}


def time_side_by_side(contestants: dict, task: Task, target, rounds: int) -> dict:
    """Compile each contestant's module, check its output against the first's, and time them
    alternately (`alternate`), each batch by TVM's time evaluator."""
    import tvm

    args = _inputs(next(iter(contestants.values())), np.random.default_rng(0))
    dev = tvm.cpu()
    timed, outputs = {}, {}
    for name, mod in contestants.items():
        exe = tvm.compile(mod, target.tvm_target()).mod
        exe["main"](*args)
        outputs[name] = args[-1].numpy().copy()

        def batch(n, exe=exe):
            return exe.time_evaluator("main", dev, number=n, repeat=1)(*args).mean

        timed[name] = (lambda exe=exe: exe["main"](*args), batch)
    return alternate(timed, outputs, task.work, rounds)


def run(target, *, budgets: list[int], rounds: int = 15, json_path: Path | None = None,
        progress: Callable[[str], None] = print) -> list[dict]:
    if not budgets or min(budgets) < 1:
        raise ValueError("--budgets must be positive trial counts, e.g. 64,256")
    budgets = sorted(set(budgets))
    rows = []
    for label, spec, bucket in cases():
        progress(f"== {label}: searching our space, then MetaSchedule's, up to {max(budgets)} trials each")
        task = make_task(spec, target, bucket)
        ours = _search_space(task, our_space(task, target), target, budgets, progress)
        task = make_task(spec, target, bucket)
        generic = _search_space(task, _metaschedule_space(task, target), target, budgets, progress)
        contestants, same_as = {"default": default_module(task, target)}, {}
        for budget in budgets:
            for name, result in (("ours", ours), ("metaschedule", generic)):
                best = result.best_at.get(budget)
                earlier = next((c for c, m in contestants.items() if m is best), None)
                if earlier is not None:
                    same_as[f"{name}@{budget}"] = earlier  # the search found nothing better: time it once
                elif best is not None:
                    contestants[f"{name}@{budget}"] = best
        progress(f"   timing {len(contestants)} schedules side by side, {rounds} rounds")
        timings = time_side_by_side(contestants, task, target, rounds)
        order = ["default", *(f"{n}@{b}" for b in budgets for n in ("ours", "metaschedule"))]
        timings = {name: timings[same_as.get(name, name)] for name in order if name in contestants or name in same_as}
        row = {"kernel": label, "unit": task.unit, "shape": task.shape, "timings": timings,
               "search": {name: {"trials": r.trials, "failures": r.failures, "error": r.error,
                                 "seconds_at": {str(b): round(s, 1) for b, s in r.seconds_at.items()}}
                          for name, r in (("ours", ours), ("metaschedule", generic))}}
        rows.append(row)
        progress(format_row(row, budgets))
    if json_path is not None:
        json_path.write_text(json.dumps({"target": target.name, "budgets": budgets, "rows": rows}, indent=1) + "\n")
        progress(f"wrote {json_path}")
    return rows


def format_row(row: dict, budgets: list[int]) -> str:
    unit, timings = row["unit"], row["timings"]
    lines = [f"{row['kernel']} ({unit}, median of rounds; search wall time)"]
    for name, t in timings.items():
        space, _, budget = name.partition("@")
        wall = row["search"].get(space, {}).get("seconds_at", {}).get(budget) if budget else None
        wall_text = f", tuned in {wall:.0f} s" if wall is not None else ""
        ok = "" if t["matches_default"] else "  OUTPUT DIFFERS FROM DEFAULT"
        lines.append(f"   {name:<18} {t['rate']:8.1f} {unit}  ({t['median_s'] * 1e3:.3f} ms{wall_text}){ok}")
    for space, s in row["search"].items():
        note = f"; search failed: {s['error']}" if s["error"] else ""
        lines.append(f"   {space} space: {s['trials']} trials measured, {s['failures']} failed{note}")
    return "\n".join(lines)

"""Tuning without a device: each candidate is "measured" by looking up the time recorded for the
same kernel variant and knob values in an earlier, real search (kernel_tuner's simulation runner).

`tune --record FILE` writes such a recording while it measures; `tune --replay FILE` searches
against it in seconds, with nothing compiled or run. The search logic (task scheduling, budgets,
progress, the database, `build` replaying the best record) is tested this way; the timings are
the recorded device's, and a knob setting the recording lacks is a failed candidate.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from compiler.tuning.tasks import tagged_name
from schedules import KNOB_PREFIX

FORMAT = "ekc-tuning-recording-1"


def candidate_knobs(mod) -> tuple[str, dict[str, int]]:
    """(task name, knob values) of a scheduled tuning candidate, read from its IR: the variant and
    its layout tag from the function's "ekc.variant" and "ekc.layout" attributes
    (tasks.tuning_module), the knobs from the block annotations schedules.decisions leaves."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    knobs: dict[str, int] = {}

    def walk(block) -> None:
        for key, value in sch.get(block).annotations.items():
            if str(key).startswith(KNOB_PREFIX):
                knobs[str(key)[len(KNOB_PREFIX):]] = int(value)
        for child in sch.get_child_blocks(block):
            walk(child)

    walk(sch.get_sblock("root"))
    attrs = mod["main"].attrs
    return tagged_name(str(attrs["ekc.variant"]), str(attrs.get("ekc.layout", ""))), knobs


def _key(knobs: dict[str, int]) -> str:
    return ",".join(f"{name}={value}" for name, value in sorted(knobs.items())) or "-"


class Recording:
    """Recorded seconds per call, by variant and knob setting: {variant: {"n_block=16,unroll=0": [s, ...]}}."""

    def __init__(self, timings: dict[str, dict[str, list[float]]] | None = None, device: str = ""):
        self.timings = timings or {}
        self.device = device

    @classmethod
    def load(cls, path: Path) -> Recording:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read the tuning recording {path}: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a tuning recording (format {FORMAT!r})")
        return cls(data["timings"], data.get("device", ""))

    def save(self, path: Path) -> None:
        staged = Path(f"{path}.tmp")
        staged.write_text(json.dumps({"format": FORMAT, "device": self.device, "timings": self.timings}, indent=1))
        os.replace(staged, path)

    def add(self, variant: str, knobs: dict[str, int], seconds: list[float]) -> None:
        self.timings.setdefault(variant, {})[_key(knobs)] = [float(s) for s in seconds]

    def lookup(self, variant: str, knobs: dict[str, int]) -> list[float] | None:
        return self.timings.get(variant, {}).get(_key(knobs))


def compile_knobs(work_dir: str):
    """compile_one for the in-process builder: nothing is compiled; the artifact is a file naming
    the candidate's variant and knob values."""

    def compile_one(build_input) -> str:
        variant, knobs = candidate_knobs(build_input.mod)
        path = os.path.join(tempfile.mkdtemp(dir=work_dir), "candidate.json")
        Path(path).write_text(json.dumps({"variant": variant, "knobs": knobs}))
        return path

    return compile_one


def runner(recording: Recording):
    """A MetaSchedule runner that answers from the recording."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    @derived_object
    class ReplayRunner(PyRunner):
        def run(self, runner_inputs):
            futures = []
            for runner_input in runner_inputs:
                candidate = json.loads(Path(runner_input.artifact_path).read_text())
                seconds = recording.lookup(candidate["variant"], candidate["knobs"])
                if seconds is None:
                    futures.append(LocalRunnerFuture(
                        error_message=f"not in the recording: {candidate['variant']} {_key(candidate['knobs'])}"))
                else:
                    futures.append(LocalRunnerFuture(res=seconds))
            return futures

    return ReplayRunner()


def recorder(recording: Recording, path: Path, task_names: list[str]):
    """A search observer (search.observer_callback) adding every successful measurement of a real
    search to `recording`, saved to `path` after each batch (an interrupted run keeps what it
    measured)."""
    import schedules

    def observe(task_id, measure_candidates, builder_results, runner_results):
        for candidate, built, ran in zip(measure_candidates, builder_results, runner_results):
            if built.error_msg is None and ran.error_msg is None and ran.run_secs:
                recording.add(task_names[task_id], schedules.knobs(candidate.sch), [float(s) for s in ran.run_secs])
        recording.save(path)

    return observe

"""What tuning buys, and what skipping it or borrowing another device's records costs (after
kernel_tuner's portability tables): for each device of a target, every kernel variant at its
tuning shape with the default schedule, with its own tuned records, and with each other device's,
run on that device: ARM cores by the cycle model (MODELLED: qemu block counts x llvm-mca), this
machine by timing (MEASURED, alternating rounds, medians: its CPU, or its Vulkan device; the
backend's `race`). The two kinds are never in one table.

A device is a tuning database folder: `model-<core>` is modelled on that core, this machine's own
folder is timed here. Also from each database: the trials each task took to reach 95% of its
final best (records are appended in the order they were measured)."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.tuning import database as tuning_db
from compiler.tuning import verdicts
from compiler.tuning.record_checks import RECORDS
from compiler.tuning.tasks import Task, default_module, layout_record, make_task, record_module, tagged_layouts


@dataclass(frozen=True)
class Device:
    name: str  # its tuning database folder under tuning_logs/<target>/
    records: Path
    core: object = None  # targets.Core: modelled on it; None: timed on this machine

    @property
    def kind(self) -> str:
        return "modelled" if self.core is not None else "measured"


def devices_for(target, root: Path, names: list[str]) -> list[Device]:
    """The named databases as devices; each must be modelled (model-<core>) or be this machine."""
    import targets

    here = tuning_db.host_device(target)
    devices = []
    for name in names:
        directory = tuning_db.device_dir(root, target.name, name)
        if name.startswith(tuning_db.MODELLED_PREFIX):
            device = Device(name, directory, targets.core(name[len(tuning_db.MODELLED_PREFIX):]))
        elif name == here:
            device = Device(name, directory)
        else:
            raise ValueError(f"{name}: neither a modelled core (model-<core>) nor this machine ({here}); "
                             "its kernels cannot be run here")
        if not (directory / RECORDS).is_file():
            raise ValueError(f"no tuning records at {directory}")
        devices.append(device)
    if len({d.kind for d in devices}) > 1:
        raise ValueError("modelled and measured devices go into separate matrices: name one kind")
    return devices


def configurations(spec, target, bucket: dict, databases: dict) -> tuple[Task, dict]:
    """(the variant's default task, {configuration: its scheduled IRModule}): "default" and, for
    each device with a record of the variant, what a build with that device's records uses: its
    tuned (layout, schedule), or the default schedule where that record lost its race with it
    (tuning.confirm), so a variant tuning bought nothing for still counts."""
    from compiler.specs import variant_symbol

    task = make_task(spec, target, bucket)
    modules = {"default": default_module(task, target)}
    for name, (database, tagged) in databases.items():
        layout, record = layout_record(database, spec, target, bucket, tagged, raced=False)
        if record is None:
            continue
        if verdicts.lost(verdicts.verdicts_of(database), variant_symbol(spec, bucket), record):
            modules[name] = modules["default"]
            continue
        modules[name] = record_module(spec, target, bucket, layout, record)
    return task, modules


def _modelled(modules: dict, target, cores) -> dict[str, dict[str, float]]:
    """{configuration: {core: modelled seconds}}, every module counted in one emulator run."""
    from compiler import backends
    from compiler.backends.candidate_inputs import random_arguments
    from compiler.backends.native.cycle_model.runner import modelled_seconds
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    with tempfile.TemporaryDirectory() as work:
        compile_one = backends.get(target).candidate_compiler(target, work)
        libraries = [Path(compile_one(_BuildInput(mod, target.tvm_target()))) for mod in modules.values()]
        arguments = [random_arguments([a.as_json() for a in ArgInfo.from_prim_func(mod["main"])])
                     for mod in modules.values()]
        results = modelled_seconds(libraries, arguments, cores, emulator=target.emulator)
    failed = [f"{name}: {r}" for name, r in zip(modules, results) if isinstance(r, str)]
    if failed:
        raise ValueError("the cycle model could not run " + "; ".join(failed))
    return dict(zip(modules, results))


@dataclass(frozen=True)
class _BuildInput:
    mod: object
    target: object


def matrix(specs, target, devices: list[Device], *, rounds: int = 9,
           progress: Callable[[str], None] = print) -> dict:
    """The portability matrix of `specs`' variants on `devices` (all modelled, or this machine)."""
    import schedules
    from compiler import backends

    databases = {}
    for device in devices:
        database = tuning_db.open_database(device.records, warn=progress)
        databases[device.name] = (database, tagged_layouts(database))
    rows = []
    for spec in specs:
        for bucket in schedules.buckets(spec, target):
            task, modules = configurations(spec, target, bucket, databases)
            progress(f"  {task.name} at {task.shape}: {', '.join(modules)}")
            if devices[0].core is not None:
                seconds = _modelled(modules, target, [d.core for d in devices])
                by_device = {d.name: {config: seconds[config][d.core.name] for config in modules} for d in devices}
            else:
                timed = backends.get(target).race(modules, task, target, rounds)
                mismatched = [name for name, t in timed.items() if not t["matches_default"]]
                if mismatched:
                    raise ValueError(f"{task.name}: {mismatched} compute other results than the default schedule")
                by_device = {devices[0].name: {config: t["median_s"] for config, t in timed.items()}}
            rows.append({"variant": task.name, "shape": task.shape, "seconds": by_device})
    return {"target": target.name, "kind": devices[0].kind, "devices": [d.name for d in devices], "rows": rows,
            "summary": summarise(rows, [d.name for d in devices]),
            "trials_to_95": {d.name: trials_to_95(d.records) for d in devices}}


def summarise(rows: list[dict], devices: list[str]) -> dict:
    """Per device, the geometric-mean speedup over the default schedule of each configuration
    (its own records, each other device's), over the variants every configuration covers."""
    summary = {}
    for device in devices:
        configs = [c for c in ["default", *devices] if any(c in r["seconds"][device] for r in rows)]
        common = [r["seconds"][device] for r in rows if all(c in r["seconds"][device] for c in configs)]
        summary[device] = {"variants": len(common), **{
            config: math.exp(np.mean([math.log(s["default"] / s[config]) for s in common])) if common else None
            for config in configs if config != "default"}}
    return summary


def trials_to_95(records_dir: Path) -> dict:
    """Over the database's tasks (workloads), the trials each took until its best-so-far came within
    95% of its final best throughput: median and maximum, and the tasks counted."""
    times: dict[int, list[float]] = {}
    for line in (records_dir / RECORDS).read_text().splitlines():
        workload, (_, run_secs, *_) = json.loads(line)
        finite = [float(t) for t in run_secs if t is not None and math.isfinite(float(t))]
        if finite:
            times.setdefault(workload, []).append(float(np.median(finite)))
    needed = []
    for sequence in times.values():
        final = min(sequence)
        best = math.inf
        for trial, secs in enumerate(sequence, 1):
            best = min(best, secs)
            if final / best >= 0.95:
                needed.append(trial)
                break
    return {"tasks": len(needed), "median": float(np.median(needed)) if needed else None,
            "max": max(needed) if needed else None}


def format_matrix(result: dict) -> str:
    kind = result["kind"].upper()
    devices = result["devices"]
    lines = [f"{kind} portability matrix, {result['target']}: speedup over the default schedule, geometric mean over "
             "the variants (rows: the device run on; columns: whose records)",
             f"{'run on':20} {'variants':>8} " + " ".join(f"{d:>20}" for d in devices)]
    for device in devices:
        s = result["summary"][device]
        cells = " ".join(f"{s[d]:19.3f}x" if s.get(d) is not None else f"{'-':>20}" for d in devices)
        lines.append(f"{device:20} {s['variants']:8d} {cells}")
    lines.append("trials to reach 95% of the final best, per task (median / max over tasks):")
    for device, t in result["trials_to_95"].items():
        lines.append(f"  {device:20} {t['median']} / {t['max']} over {t['tasks']} tasks")
    lines.append(f"per variant ({result['kind']} microseconds: default | " + " | ".join(devices) + "):")
    for row in result["rows"]:
        for device, seconds in row["seconds"].items():
            cells = " | ".join(f"{seconds[c] * 1e6:.1f}" if c in seconds else "-" for c in ["default", *devices])
            lines.append(f"  {row['variant'][:56]:56} on {device:20} {cells}")
    return "\n".join(lines)

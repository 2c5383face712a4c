"""specs + target -> one build folder: the backend's artifacts and manifest.json (the contract
with the loader).

Each spec has length variants (schedules.buckets); each variant's layout is the one its fastest
tuning record was made with (of its layout choices), else the default; its kernel is built once,
then scheduled by that record (replayed) or by the default schedule, and the target's backend
compiles them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from compiler import backends, manifest, ops
from compiler.specs import KernelSpec, variant_symbol
from compiler.tuning.database import MODELLED_PREFIX


def lower_kernel(spec: KernelSpec, target, bucket: dict | None = None, database=None, layout=None, *,
                 record=None):
    """One length variant of a spec: (its scheduled PrimFunc, the knob values it used, its tuning:
    the replayed record's measured time, else "default", its layout). Without `layout`, the variant's
    layout and record are the tuned choice of `database` (tuning.tasks.layout_record: the default
    schedule where the best record lost its race with it); with one, its `record` or else the
    database's best for that layout."""
    import tvm
    from tvm import s_tir

    import schedules
    from compiler.tuning.tasks import best_record, layout_record, median_seconds

    bucket = bucket or {}
    chosen = layout is None  # then no record means the default schedule (none, or one that lost its race)
    if chosen:
        layout, record = layout_record(database, spec, target, bucket) if database is not None else \
            (schedules.layout(spec, target, bucket), None)
    func = ops.get(spec.op).build(spec, layout)
    if record is None and database is not None and not chosen:
        record = best_record(database, spec, target, bucket, layout=layout, func=func)
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))  # traces name the function "main"
    if record is not None:
        record.trace.apply_to_schedule(sch, remove_postproc=True)
        tuning = {"run_ms": round(median_seconds(record) * 1e3, 6)}
    else:
        sch = schedules.schedule(sch, spec, target, bucket, layout)
        tuning = "default"
    scheduled = sch.mod["main"].with_attr("global_symbol", variant_symbol(spec, bucket))
    return scheduled, schedules.knobs(sch), tuning, layout


def variant_layouts(spec: KernelSpec, target, database=None) -> list[tuple[dict, object, object]]:
    """(bucket, layout, tuning record or None) of each length variant of a spec, most specific
    first: the layouts `database`'s records chose (tuning.tasks.layout_record), else the defaults."""
    import schedules
    from compiler.tuning.tasks import layout_record, tagged_layouts

    if database is None:
        return [(bucket, schedules.layout(spec, target, bucket), None) for bucket in schedules.buckets(spec, target)]
    tagged = tagged_layouts(database)
    return [(bucket, *layout_record(database, spec, target, bucket, tagged)) for bucket in schedules.buckets(spec, target)]


def manifest_entry(spec: KernelSpec, target) -> dict:
    """The manifest entry of a spec before its variants are scheduled: arguments and variants."""
    return manifest.kernel_entry(spec, [(bucket, layout) for bucket, layout, _ in variant_layouts(spec, target)])


def build(specs: list[KernelSpec], target, out_dir: Path, *, toolchain, model: dict | None = None,
          tuning_dir: Path | None = None, database=None, progress: Callable[[str], None] = print) -> Path:
    """Schedule (replaying the best tuning record from `tuning_dir` where there is one), compile and
    link every spec with the target's backend; write out_dir/manifest.json beside its artifacts.
    `database`: tuning_dir's records already open (the tuner's, under its lock). Returns the manifest path."""
    import schedules

    if not specs:
        raise ValueError("nothing to build: the selection of ops left no kernels")
    backend = backends.get(target)
    previous = prepare_output(out_dir)
    start = time.time()
    database = database if database is not None else _open_records(tuning_dir, progress)
    funcs, kernels = {}, {}
    for index, spec in enumerate(specs, 1):
        progress(f"[{index}/{len(specs)}] scheduling {spec.name}")
        chosen = variant_layouts(spec, target, database)
        kernels[spec.name] = entry = manifest.kernel_entry(spec, [(bucket, layout) for bucket, layout, _ in chosen])
        for variant, (bucket, layout, record) in zip(entry["variants"], chosen):
            symbol = variant["symbol"]
            # the record variant_layouts chose, or the default schedule (no record, or one that lost its race)
            funcs[symbol], variant["knobs"], variant["tuning"], _ = lower_kernel(spec, target, bucket, None, layout,
                                                                                 record=record)
            if variant["tuning"] == "default" and database is not None:
                progress(f"      {symbol}: default schedule (no tuning record, or none that beat it side by side)")
            elif variant["tuning"] != "default":
                variant["tuning"]["database"] = str(tuning_dir)
                # a record of a core's cycle model (tune --core) holds a modelled time, never a measured one
                modelled = tuning_dir.name.startswith(MODELLED_PREFIX)
                if modelled:
                    variant["tuning"]["modelled"] = True
                tag = schedules.layout_tag(layout, schedules.layout(spec, target, bucket))
                if tag:
                    variant["tuning"]["layout"] = tag  # a structural choice of the tuner, not the default
                progress(f"      {symbol}: tuned record ({variant['tuning']['run_ms']:.4f} ms "
                         f"{'MODELLED' if modelled else 'measured'} at its tuning shape{', layout ' + tag if tag else ''})")
    artifacts = backend.build(funcs, kernels, target, out_dir, toolchain, progress)
    path = manifest.write(out_dir, target=target, model=model, artifacts=artifacts,
                          tools=backend.describe_tools(target, toolchain), kernels=kernels)
    _remove_stale(out_dir, previous - set(artifacts))
    progress(f"built {len(specs)} kernels into {out_dir} in {time.time() - start:.1f} s")
    return path


def prepare_output(out_dir: Path) -> set[str]:
    """Make out_dir ready for a build; returns what the previous build there wrote (its manifest's
    artifacts), the only files a rebuild may delete. A build never overwrites or deletes files it did
    not write: an existing file, or a non-empty folder holding no build of ours, is refused by name."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is an existing file, not a build folder; choose another output folder (--out)")
    previous = manifest.previous_artifacts(out_dir)
    if previous is None and out_dir.is_dir() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty and holds no build of ours (no manifest.json); refusing to "
                         "write into it: choose a new or empty output folder (--out)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent is a file, no permission, ...
        raise ValueError(f"cannot create the build folder {out_dir}: {err.strerror or err}") from None
    return previous or set()


def _remove_stale(out_dir: Path, stale: set[str]) -> None:
    """Delete what the previous build wrote and this one did not rewrite (e.g. shaders of kernels
    no longer built), now that the new manifest no longer lists them."""
    for name in sorted(stale):
        path = out_dir / name
        if path.is_file() or path.is_symlink():
            path.unlink()


def _open_records(tuning_dir: Path | None, progress):
    if tuning_dir is None:
        return None
    if not tuning_dir.is_dir():
        progress(f"no tuning records at {tuning_dir}: every kernel uses its default schedule")
        return None
    from compiler.tuning.database import open_database

    database = open_database(tuning_dir, warn=progress)
    progress(f"using tuning records from {tuning_dir}")
    return database

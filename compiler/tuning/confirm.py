"""A tuned record replaces the default schedule only after beating it side by side.

The search times each candidate for a few calls, on a machine that may be busy, so a record can win
there by noise: in session 17 lavapipe candidates looked 1.5-2.5x faster than their defaults during
the search and were 1.0-1.3x side by side, and four committed records ran at 0.90-0.95x their
default. After a measured search, `race_records` times each variant's chosen record against the
default schedule in one process (the backend's `race`: alternating rounds, medians, outputs
checked) and writes the verdict beside the records (VERDICTS). `tasks.layout_record` then keeps the
default where the record lost. A later search that finds another best record makes the verdict
stale; that record is raced in turn.

Records of a core's cycle model (`tune --core`) are raced too, by the same model, but on the kernels
`build` makes: each variant's dynamic-length function at its tuning shape, built with the record and
without (`race_modelled_records`). The search models static-shape kernels, and one layout can fare
differently there: SmolLM2's 3072 x 576 Q4_1 GEMM with 8-row tiles modelled 5.22 ms at M=128 as a
static kernel and 6.01 ms as the any-length one (the default's 4-row tiles: 5.22 and 5.27 ms).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from compiler.tuning.verdicts import VERDICTS, load, record_key, write


def race_records(specs, target, directory: Path, database, *, rounds: int = 9,
                 progress: Callable[[str], None] = print) -> dict:
    """Race each variant's best record (of any layout) against its default schedule on this machine;
    store and return the verdicts. Variants whose best record was raced before are not raced again."""
    import tvm_ffi

    import schedules
    from compiler import backends
    from compiler.specs import variant_symbol
    from compiler.tuning.tasks import default_module, layout_record, make_task, record_module, tagged_layouts

    backend = backends.get(target)
    verdicts = load(directory)
    tagged = tagged_layouts(database)
    raced = 0
    for spec in specs:
        for bucket in schedules.buckets(spec, target):
            variant = variant_symbol(spec, bucket)
            layout, record = layout_record(database, spec, target, bucket, tagged, raced=False)
            if record is None:
                continue
            key, previous = record_key(record), verdicts.get(variant)
            if isinstance(previous, dict) and previous.get("record") == key:
                continue
            default = make_task(spec, target, bucket)
            modules = {"default": default_module(default, target),
                       "tuned": record_module(spec, target, bucket, layout, record)}
            verdict = {"record": key, "layout": schedules.layout_tag(layout, default.layout)}
            if tvm_ffi.structural_equal(modules["default"], modules["tuned"]):  # the best is the default itself
                verdict["kept"] = True
                progress(f"  race {variant}: its best record is the default schedule")
            else:
                timed = backend.race(modules, default, target, rounds)
                speedup = timed["default"]["median_s"] / timed["tuned"]["median_s"]
                matches = timed["tuned"]["matches_default"]
                verdict.update(default_ms=round(timed["default"]["median_s"] * 1e3, 6),
                               tuned_ms=round(timed["tuned"]["median_s"] * 1e3, 6), speedup=round(speedup, 4),
                               rounds=rounds, kept=matches and speedup >= 1.0)
                raced += 1
                outcome = ("kept" if verdict["kept"] else "the default schedule stays" if matches
                           else "its output differs from the default's: the default schedule stays")
                progress(f"  race {variant}: tuned {speedup:.3f}x the default side by side ({outcome})")
            verdicts[variant] = verdict
            write(directory, verdicts)
    progress(f"raced {raced} records against their defaults; verdicts in {directory / VERDICTS}")
    return verdicts


def race_modelled_records(specs, target, directory: Path, database, core, *,
                          progress: Callable[[str], None] = print) -> dict:
    """Model each variant's best record (of any layout) against its default schedule on `core`, as
    `build` makes them (the any-length function called at the variant's tuning shape); store and
    return the verdicts. Variants whose best record was raced before are not raced again."""
    import tempfile

    import schedules
    from compiler import backends, build, runtime
    from compiler.backends.native.cycle_model import model_kernel
    from compiler.specs import variant_symbol
    from compiler.tuning.tasks import layout_record, tagged_layouts, tuning_shape
    from compiler.verify import symbolic_dims

    verdicts = load(directory)
    tagged = tagged_layouts(database)
    raced = 0
    for spec in specs:
        pending = []
        for bucket in schedules.buckets(spec, target):
            variant = variant_symbol(spec, bucket)
            layout, record = layout_record(database, spec, target, bucket, tagged, raced=False)
            previous = verdicts.get(variant)
            if record is not None and not (isinstance(previous, dict) and previous.get("record") == record_key(record)):
                pending.append((bucket, variant, record, schedules.layout_tag(layout, schedules.layout(spec, target, bucket))))
        if not pending:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            built = {}
            for name, records in (("default", None), ("tuned", directory)):
                out = Path(tmp) / name
                build.build([spec], target, out, toolchain=backends.toolchain_for(target), tuning_dir=records,
                            database=database if records else None, progress=lambda _: None)
                built[name] = (out, runtime.read_manifest(out))
            for bucket, variant, record, tag in pending:
                dims = symbolic_dims(built["default"][1]["kernels"][spec.name])
                sizes = {d: v for d, v in tuning_shape(bucket).items() if d in dims}
                cycles = {name: model_kernel(out, manifest, spec.name, sizes, core).cycles
                          for name, (out, manifest) in built.items()}
                speedup = cycles["default"] / cycles["tuned"] if cycles["tuned"] else 1.0
                verdicts[variant] = {"record": record_key(record), "layout": tag, "modelled": core.name,
                                     "default_mcycles": round(cycles["default"] / 1e6, 6),
                                     "tuned_mcycles": round(cycles["tuned"] / 1e6, 6), "speedup": round(speedup, 4),
                                     "kept": speedup >= 1.0}  # equal: the default schedule itself
                raced += 1
                outcome = "kept" if speedup >= 1.0 else "the default schedule stays"
                progress(f"  race {variant} {sizes}: tuned {speedup:.3f}x the default as built, MODELLED on "
                         f"{core.name} ({outcome})")
                write(directory, verdicts)
    progress(f"raced {raced} modelled records against their defaults as built; verdicts in {directory / VERDICTS}")
    return verdicts

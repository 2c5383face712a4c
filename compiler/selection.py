"""What a command line selects: the model, its kernel specs (from a preset, a config or a GGUF), the
tuning database a build reads, and the tuning budget; checked here so a mistake is one clear error
before anything slow starts."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from compiler import models, ops
from compiler.tuning import database as tuning_db


def split_list(values: list[str] | None) -> list[str] | None:
    """Comma-separated names (None: none given, meaning all); a list that names nothing (",") is an
    error, not "all"."""
    if not values:
        return None
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if not names:
        raise ValueError(f"{','.join(values)!r} names nothing: give comma-separated names, or leave the option out")
    return names


def model(args):
    return models.from_config(args.config) if args.config else models.preset(args.model)


def records_dir(args, target, core: str | None = None) -> Path | None:
    """The tuning database a build reads (None with --no-tuning): --device; else for an ARM core
    (`core`, --core, or a cross target's default core) its measured records, or else its modelled
    ones (tuning.database.core_device); else the device this machine runs the target's kernels on,
    which EKC_VULKAN_DEVICE changes for Vulkan targets."""
    if args.no_tuning:
        return None
    from compiler import backends

    root = Path(args.tuning_logs)
    if args.device:
        return tuning_db.device_dir(root, target.name, args.device)
    core = core or arm_core(args, target)
    if core is None and target.default_core and backends.get(target).local_tuning_refusal(target):
        core = target.default_core  # a cross build: records for the core it is meant for, never this CPU's
    if core is not None:
        device = tuning_db.core_device(root, target.name, core)
        print(f"tuning records of {core}: {device}", file=sys.stderr)
        return tuning_db.device_dir(root, target.name, device)
    device = tuning_db.host_device(target)
    chooser = backends.get(target).device_variable
    if chooser and os.environ.get(chooser):
        print(f"tuning records of device {device} (chosen by {chooser}={os.environ[chooser]})", file=sys.stderr)
    return tuning_db.device_dir(root, target.name, device)


def tune_route(args, target):
    """(tracker, device, core) of `tune`: where candidates are measured (a compiler.tuning.rpc.Tracker,
    or None: here, or by the cycle model of `core`, a targets.Core) and the database they go to."""
    import targets
    from compiler import backends
    from compiler.tuning import rpc

    core = arm_core(args, target)
    if args.rpc_tracker or args.rpc_key:
        tracker = rpc.Tracker.parse(args.rpc_tracker or "", args.rpc_key or "")
        tracker.devices()  # fail now, clearly, if the tracker or the key's devices are missing
        # a device said to be a core files its measured records under the core's name, which builds
        # for that core then prefer to the modelled ones
        return tracker, args.device or core or re.sub(r"[^A-Za-z0-9._-]+", "-", args.rpc_key), None
    if args.replay:  # nothing is measured: the recording's device named the records
        from compiler.tuning.replay import Recording

        if core:
            raise ValueError("--replay measures nothing: it takes no --core")
        return None, args.device or f"replay-{Recording.load(Path(args.replay)).device or 'unknown'}", None
    refusal = backends.get(target).local_tuning_refusal(target)
    core = core or (target.default_core if refusal else None)
    if core is not None:
        return None, args.device or tuning_db.modelled_device(core), targets.core(core)
    if refusal:
        raise ValueError(f"tuning {target.name} needs a device of that target ({refusal}): register one "
                         "with a TVM RPC tracker and pass --rpc-tracker HOST:PORT --rpc-key KEY")
    return None, args.device or tuning_db.host_device(target), None


def arm_core(args, target) -> str | None:
    """--core (one ARM core of targets/cores.toml), checked against the target; None when absent."""
    name = getattr(args, "core", None)
    if name is None:
        return None
    import targets

    targets.core(name)  # an unknown core names the known ones
    if target.isa != "aarch64":
        raise ValueError(f"--core names an ARM core; {target.name} is {target.isa}")
    return name


def specs(args):
    wanted_ops = split_list(args.ops)
    for name in wanted_ops or ():
        ops.get(name)  # an unknown op is an error, not an empty build
    quants = tuple(split_list(args.quant) or models.QUANT_FORMS)
    bad = [q for q in quants if q not in models.QUANT_FORMS]
    if bad:
        raise ValueError(f"unknown quantized form(s) {bad}; known: {', '.join(models.QUANT_FORMS)}")
    return models.kernel_specs(model(args), ops=wanted_ops, quants=quants, kv_cache=getattr(args, "kv_cache", "f32"))


def command_specs(args, target):
    """The kernels a command works on: those `run` builds for --gguf on `target`, else the preset's
    or config's (`specs`)."""
    return gguf_specs(Path(args.gguf), split_list(args.ops), target) if args.gguf else specs(args)


def gguf_specs(path: Path, wanted_ops: list[str] | None, target=None):
    """The kernels `run` builds for a GGUF (fusions included) on `target` (its default activations;
    without a target, f32), so tuning records match them."""
    from compiler.llm import model_kernels
    from compiler.llm.gguf import GGUFModel

    activations, isa, dot = (target.model_activations, target.isa, target.int8_dot) if target is not None \
        else ("f32", "x86_64", "none")
    specs = model_kernels.kernel_specs(GGUFModel(path), activations, isa, int8_dot=dot)
    return [s for s in specs if not wanted_ops or s.op in wanted_ops]


def output_file(value: str | None, flag: str) -> Path | None:
    """The path of a file a command writes when it ends (--json, --record), checked before the work:
    not a folder, its folder made where missing (as --plot's is), so hours of results are not lost
    to a typo at the end."""
    if not value:
        return None
    path = Path(value)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot create its folder: {err.strerror or err}") from None
    return path


def tune_budget(args) -> tuple[int | None, float | None]:
    """(trials, minutes) of `tune`, refused before anything is prepared (making the tasks takes
    minutes). 0 trials is an error, not the default: the default (64) is for no budget given."""
    import math

    if args.trials is not None and args.trials < 1:
        raise ValueError(f"--trials must be a whole number of at least 1, got {args.trials}")
    if args.minutes is not None and not (math.isfinite(args.minutes) and args.minutes > 0):
        raise ValueError(f"--minutes must be a positive number of minutes, got {args.minutes:g}")
    if args.rpc_timeout < 1:
        raise ValueError(f"--rpc-timeout must be at least 1 second, got {args.rpc_timeout}")
    if args.trials is None and args.minutes is None:
        return 64, None
    return args.trials, args.minutes

"""What a command line selects: the model, its kernel specs (from a preset, a config or a GGUF), the
tuning database a build reads, and the tuning budget; checked here so a mistake is one clear error
before anything slow starts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from compiler import models, ops
from compiler.tuning import database as tuning_db


def split_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v for value in values for v in value.split(",") if v]


def model(args):
    return models.from_config(args.config) if args.config else models.preset(args.model)


def records_dir(args, target) -> Path | None:
    """The tuning database a build reads (None with --no-tuning): --device, else the device this
    machine runs the target's kernels on, which EKC_VULKAN_DEVICE changes for Vulkan targets."""
    if args.no_tuning:
        return None
    from compiler import backends

    device = args.device or tuning_db.host_device(target)
    chooser = backends.get(target).device_variable
    if not args.device and chooser and os.environ.get(chooser):
        print(f"tuning records of device {device} (chosen by {chooser}={os.environ[chooser]})", file=sys.stderr)
    return tuning_db.device_dir(Path(args.tuning_logs), target.name, device)


def specs(args):
    wanted_ops = split_list(args.ops)
    for name in wanted_ops or ():
        ops.get(name)  # an unknown op is an error, not an empty build
    quants = tuple(split_list(args.quant) or models.QUANT_FORMS)
    bad = [q for q in quants if q not in models.QUANT_FORMS]
    if bad:
        raise ValueError(f"unknown quantized form(s) {bad}; known: {', '.join(models.QUANT_FORMS)}")
    return models.kernel_specs(model(args), ops=wanted_ops, quants=quants, kv_cache=getattr(args, "kv_cache", "f32"))


def gguf_specs(path: Path, wanted_ops: list[str] | None, target=None):
    """The kernels `run` builds for a GGUF (fusions included) on `target` (its default activations;
    without a target, f32), so tuning records match them."""
    from compiler.llm import model_kernels
    from compiler.llm.gguf import GGUFModel

    activations, isa, dot = (target.model_activations, target.isa, target.int8_dot) if target is not None \
        else ("f32", "x86_64", "none")
    specs = model_kernels.kernel_specs(GGUFModel(path), activations, isa, int8_dot=dot)
    return [s for s in specs if not wanted_ops or s.op in wanted_ops]


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

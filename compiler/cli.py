"""python -m compiler build | run | tune | knobs | bench | list | verify | setup-emulator | rpc-emulator | rpc-server"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from compiler import cli_args, models, ops, runtime, selection
from compiler.tuning import database as tuning_db


def cmd_list(args) -> int:
    import targets

    print("targets:")
    for t in targets.all_targets():
        print(f"  {t.name:12} {t.description}")
    print("model presets:")
    for name, m in models.PRESETS.items():
        default = " (default)" if name == models.DEFAULT_PRESET else ""
        print(f"  {name:14} hidden {m.hidden}, heads {m.heads}/{m.kv_heads} kv, head dim {m.head_dim}, "
              f"ffn {m.ffn}{default}")
    print("ops:")
    for name in ops.names():
        print(f"  {name}")
    return 0


def cmd_build(args) -> int:
    import targets
    from compiler import backends, build

    target = targets.get(args.target)
    model = selection.model(args)
    tools = backends.toolchain_for(target, cc=args.cc, ndk=args.ndk, android_api=args.android_api)
    specs = selection.specs(args)
    out = Path(args.out) if args.out else Path("build") / target.name
    tuning = selection.records_dir(args, target)
    print(f"building {len(specs)} kernels of {model.name} for {target.name} into {out}")
    build.build(specs, target, out, toolchain=tools, model=models.describe(model), tuning_dir=tuning)
    return 0


def cmd_run(args) -> int:
    import targets
    from compiler import backends
    from compiler.llm import model_files, run
    from compiler.llm.sampling import Sampler

    conversation = run.check_flags(args.prompt, args.chat, args.interactive, args.max_tokens, args.prefill_chunk)
    target, sampler = targets.get(args.target), Sampler(args.temperature, args.top_p, args.seed)
    if target.compile_only and target.emulator is None and platform.machine() != target.isa:  # before minutes of building
        raise ValueError(f"{target.name} builds are compile-only here ({target.compile_only}); run needs a target "
                         "this machine runs or emulates")
    activations = args.activations or target.model_activations
    gguf = Path(args.gguf) if args.gguf else model_files.gguf_path(args.model)
    kv_suffix = "-kv8" if args.kv_cache == "int8" else ""
    out = Path(args.out) if args.out else Path("build") / "run" / target.name / f"{gguf.stem.lower()}-{activations}{kv_suffix}"
    tuning = selection.records_dir(args, target)
    progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 - stdout carries the text
    emit = lambda text: print(text, end="", flush=True)  # noqa: E731
    common = dict(gguf=gguf, target=target, max_tokens=args.max_tokens, sampler=sampler, out_dir=out,
                  toolchain=backends.toolchain_for(target), tuning_dir=tuning, max_context=args.max_context,
                  activations=activations, prefill_chunk=args.prefill_chunk, kv_cache=args.kv_cache, emit=emit,
                  progress=progress)
    if conversation:
        run.chat_command(read=_read_turn, **common)
    else:
        run.run_command(prompt=args.prompt, chat=args.chat, **common)
    return 0


def _read_turn() -> str | None:
    """One user turn from standard input (a prompt shown on a terminal); None at end of input."""
    try:
        return input("> " if sys.stdin.isatty() else "")
    except EOFError:
        return None


def cmd_tune(args) -> int:
    trials, minutes = selection.tune_budget(args)
    if args.device:  # a name that is no plain folder name fails now, not after the preparation
        tuning_db.device_dir(Path(args.tuning_logs), args.target, args.device)
    import targets
    from compiler.tuning import search

    from compiler.benchmarks import plots

    target = targets.get(args.target)
    record = selection.output_file(args.record, "--record")
    chart = plots.chart_path(args.plot)
    tracker, device, core = selection.tune_route(args, target)
    specs = selection.command_specs(args, target)
    run = search.tune(specs, target, device=device, logs_root=Path(args.tuning_logs), trials=trials,
                    minutes=minutes, tracker=tracker, rpc_timeout=args.rpc_timeout,
                    replay=Path(args.replay) if args.replay else None,
                    record=record,
                    core=core, race=not args.no_race, race_only=args.race_only,
                    progress=lambda line: print(line, flush=True))
    if chart:
        title = f"tuning {target.name} on {device}: {sum(t.trials for t in run.tasks)} trials, {run.seconds:.0f} s"
        print(f"tuning curves: {plots.tuning_curves(run.tasks, chart, title)}")
    return 0


def cmd_knobs(args) -> int:
    import targets
    from compiler.tuning.knob_report import knob_rows, print_rows

    target = targets.get(args.target)
    directory = selection.records_dir(args, target)
    records = None
    if directory is not None and directory.is_dir():
        records = tuning_db.open_database(directory)
        print(f"tuning records: {directory}")
    else:
        print("no tuning records: defaults only" if directory is None else f"no tuning records at {directory}")
    specs = selection.command_specs(args, target)
    print_rows(knob_rows(specs, target, records))
    return 0


def cmd_tune_compare(args) -> int:
    import targets
    from compiler.runtime.host import native_ok
    from compiler.tuning import compare

    target = targets.get(args.target)
    ok, reason = native_ok(target.to_json())
    if not ok:
        raise ValueError(f"tune-compare times kernels in this process; {target.name} does not run here ({reason})")
    try:
        budgets = [int(b) for b in selection.split_list([args.budgets])]
    except ValueError:
        raise ValueError(f"--budgets must be comma-separated trial counts, got {args.budgets!r}") from None
    compare.run(target, budgets=budgets, rounds=args.rounds,
                     json_path=selection.output_file(args.json, "--json"), progress=lambda line: print(line, flush=True))
    return 0


def cmd_tune_matrix(args) -> int:
    import targets
    from compiler import backends
    from compiler.tuning import matrix

    target = targets.get(args.target)
    root = Path(args.tuning_logs)
    if args.devices:
        names = selection.split_list([args.devices])
    elif backends.get(target).local_tuning_refusal(target) is None:
        names = [tuning_db.host_device(target)]  # a target this machine runs: its own records, timed
    else:  # a cross target: every core it has modelled records of
        names = sorted(d.name for d in (root / target.name).glob(f"{tuning_db.MODELLED_PREFIX}*") if d.is_dir())
    if not names:
        raise ValueError(f"no tuning databases for {target.name} under {root}: tune first (tune --target "
                         f"{target.name} [--core CORE])")
    devices = matrix.devices_for(target, root, names)
    json_path = selection.output_file(args.json, "--json")
    result = matrix.matrix(selection.command_specs(args, target), target, devices, rounds=args.rounds,
                           progress=lambda line: print(line, flush=True))
    print(matrix.format_matrix(result))
    if json_path:
        json_path.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def cmd_bench(args) -> int:
    import targets
    from compiler import backends
    from compiler.benchmarks import bench, plots
    from compiler.llm import model_files

    target = targets.get(args.target)
    if args.core:
        return _bench_modelled(args, target)
    if backends.get(target).bench_refusal:
        raise ValueError(f"{target.name}: {backends.get(target).bench_refusal}")
    tuning = selection.records_dir(args, target)
    gguf = Path(args.gguf) if args.gguf else None
    if gguf is None and not args.config and args.model in model_files.GGUF_PACKAGES and not args.no_model_row:
        gguf = model_files.gguf_path(args.model)  # a preset with a published GGUF gets its model row
    if gguf is not None:  # a bad file is refused before the kernel rows, not after them
        from compiler.llm.gguf import GGUFModel

        GGUFModel(gguf)
    bench.run(selection.specs(args), target, toolchain=backends.toolchain_for(target), tuning_dir=tuning, quick=args.quick,
              json_path=selection.output_file(args.json, "--json"), plot_path=plots.chart_path(args.plot),
              model=selection.model(args), gguf=gguf, progress=lambda line: print(line, flush=True))
    return 0


def _bench_modelled(args, target) -> int:
    """bench --core: the cycle model of ARM cores instead of timing in this process."""
    import targets
    from compiler import backends
    from compiler.benchmarks import modelled, plots

    from compiler.llm import model_files

    if target.isa != "aarch64":
        raise ValueError(f"--core models ARM cores; {target.name} is {target.isa} (use --target arm)")
    cores = list(targets.cores()) if args.core == "all" else selection.split_list([args.core])
    for name in cores:
        targets.core(name)  # an unknown core is an error before anything is built
    gguf = Path(args.gguf) if args.gguf else None
    if gguf is None and not args.config and args.model in model_files.GGUF_PACKAGES and not args.no_model_row:
        gguf = model_files.gguf_path(args.model)  # a preset with a published GGUF gets its model row
    specs = selection.gguf_specs(gguf, selection.split_list(args.ops), target) if args.gguf else selection.specs(args)
    tuning_dirs = {name: selection.records_dir(args, target, core=name) for name in cores}
    modelled.run(specs, target, toolchain=backends.toolchain_for(target), tuning_dirs=tuning_dirs, cores=cores,
                 quick=args.quick, json_path=selection.output_file(args.json, "--json"),
                 plot_path=plots.chart_path(args.plot), peer=not args.no_model_row, gguf=gguf,
                 progress=lambda line: print(line, flush=True))
    return 0


def cmd_verify(args) -> int:
    import numpy as np

    from compiler import verify

    if args.size < 1:
        raise ValueError(f"--size must be a length of at least 1, got {args.size}")
    lib = runtime.load(args.dir, emulate=True if args.emulate else None)
    print(f"verifying {len(lib.kernels)} kernels of {args.dir} ({lib.target['name']}, {lib.mode})")
    rng = np.random.default_rng(args.seed)
    failures = 0
    with lib:
        for name in lib.kernels:
            kernel = lib[name]
            for size in (1, args.size):
                sizes = {d: size for d in verify.symbolic_dims(kernel.spec)}
                for check in verify.check_kernel(kernel, sizes, rng):
                    print(check, flush=True)
                    failures += not check.ok
    print("all kernels match numpy" if not failures else f"{failures} check(s) failed")
    return 1 if failures else 0


def cmd_setup_emulator(args) -> int:
    from compiler.backends.native import sysroot

    sysroot.setup_sysroot(args.isa)
    return 0


def cmd_rpc_server(args) -> int:
    from compiler.tuning import rpc, rpc_server

    rpc_server.serve(rpc.Tracker.parse(args.tracker, args.key), host=args.host, port=args.port,
                     progress=lambda line: print(line, flush=True))
    return 0


def cmd_rpc_emulator(args) -> int:
    from compiler.tuning import rpc

    # SIGTERM / SIGHUP / SIGINT end the `with` block, whose exit stops the tracker and the server:
    # they run in their own sessions, so nothing else would.
    with rpc.ending_on_signals(), rpc.EmulatedDevice(args.isa) as device:
        print(f"emulated {args.isa} device registered: --rpc-tracker {device.tracker.address} --rpc-key {device.key}",
              flush=True)
        print(f"(timings under {rpc.EmulatedDevice.EMULATORS[args.isa]} are the emulator's, not a chip's; "
              "Ctrl-C or SIGTERM stops)", flush=True)
        while True:
            time.sleep(3600)


COMMANDS = {"build": cmd_build, "run": cmd_run, "tune": cmd_tune, "knobs": cmd_knobs, "tune-compare": cmd_tune_compare,
            "tune-matrix": cmd_tune_matrix,
            "bench": cmd_bench, "list": cmd_list, "verify": cmd_verify, "setup-emulator": cmd_setup_emulator,
            "rpc-server": cmd_rpc_server, "rpc-emulator": cmd_rpc_emulator}


def parser() -> argparse.ArgumentParser:
    return cli_args.parser()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from compiler.runtime.host import configure_thread_pool

    configure_thread_pool()  # before anything starts TVM's thread pool (tuning runners, bench, run)
    from compiler.backends.native.sysroot import EmulatorSetupError
    from compiler.runtime import LoaderError
    from compiler.tuning.rpc import RpcError
    from compiler.toolchain import ToolchainError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, ToolchainError, LoaderError, EmulatorSetupError, RpcError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError as err:  # numpy's names the array it could not allocate
        print(f"error: out of memory: {err} (a smaller size, e.g. --size, may fit)", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout went away (`run ... | head`): stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141

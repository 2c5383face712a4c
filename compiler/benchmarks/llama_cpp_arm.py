"""llama.cpp's aarch64 CPU backend on the cycle model's footing: ggml from the llama.cpp vendored in
the pinned llama-cpp-python sdist, cross-built with zig for the `arm` target's core (cached per
version and core), and a small program (ggml_gemv.c) that runs ggml's matrix-vector product on one
thread, the path llama.cpp's decode takes without its runtime repack (ggml_vec_dot_q4_0_q8_0 and
kin, activations quantised to Q8 blocks inside the call). One call is counted as the difference of
a run with two calls and a run with one. MODELLED, like ours."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from compiler.backends.native.cycle_model import blocks_cost
from compiler.backends.native.cycle_model.counts import program_blocks
from compiler.backends.native.cycle_model.mca import ModelError
from compiler.runtime.paths import cache_dir

PINNED = "0.3.36"  # llama-cpp-python, as pyproject's `bench` extra pins it
HARNESS = Path(__file__).with_name("ggml_gemv.c")
GGML_TYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 8}  # enum ggml_type


@dataclass(frozen=True)
class PeerModel:
    contestant: str
    n: int
    k: int
    core: str
    instructions: int
    cycles: float
    microseconds: float


def peer_type(spec) -> str | None:
    """The GGUF block type llama.cpp would multiply in place of our GEMM (None: no counterpart)."""
    if spec.op in ("qgemm_w8a8", "qgemm_w8a16"):
        return "q8_0"
    if spec.op == "qgemm_w4a8":
        return "q4_0"
    if spec.op == "qgemm_w4a16":
        return "q4_1" if spec.opt("min") else "q4_0"
    return None


def model_gemv(program: Path, text: dict[int, str], ggml_type: str, n: int, k: int, cores) -> list[PeerModel]:
    """One ggml GEMV of this block type and shape, modelled on `cores`; `text` is the program's
    instruction_text()."""
    blocks = program_blocks(program, lambda calls: [str(GGML_TYPES[ggml_type]), str(n), str(k), "1", str(calls)])
    rows = []
    for core in cores:
        instructions, cycles, _, _ = blocks_cost(text, blocks, core)
        rows.append(PeerModel(f"llama.cpp {ggml_type}", n, k, core.name, instructions, cycles, cycles / (core.ghz * 1e3)))
    return rows


def peer_program(target, progress) -> Path:
    """The ggml GEMV program for `target`'s core, built (once per llama-cpp-python version and
    core) when missing."""
    version = _version()
    mcpu = target.llvm.get("mcpu", "generic").replace("-", "_")  # zig spells cores with underscores
    folder = cache_dir() / "llama.cpp-aarch64" / f"{version}-{mcpu}"
    program = folder / "ggml_gemv"
    if program.is_file() and program.stat().st_mtime >= HARNESS.stat().st_mtime:
        return program
    folder.mkdir(parents=True, exist_ok=True)
    ggml = _ggml_source(folder, version, progress)
    compilers = _zig_wrappers(folder, target.triple)
    progress(f"cross-building llama.cpp's ggml {version} for {target.triple} ({mcpu}) with zig (a few minutes, once)")
    build = folder / "build"
    flags = f"-mcpu={mcpu}"
    _run(["cmake", "-S", str(ggml), "-B", str(build), f"-DCMAKE_C_COMPILER={compilers['cc']}",
          f"-DCMAKE_CXX_COMPILER={compilers['c++']}", "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
          "-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=", f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}",
          "-DBUILD_SHARED_LIBS=OFF", "-DGGML_OPENMP=OFF", "-DGGML_BUILD_TESTS=OFF", "-DGGML_BUILD_EXAMPLES=OFF",
          "-DCMAKE_BUILD_TYPE=Release"], "configuring ggml")
    _run(["cmake", "--build", str(build), "-j2", "--target", "ggml-cpu", "ggml-base", "ggml"], "building ggml")
    libraries = [str(build / "src" / name) for name in ("libggml.a", "libggml-cpu.a", "libggml-base.a")]
    _run([compilers["c++"], "-O2", flags, "-fno-PIE", "-no-pie", f"-I{ggml / 'include'}", "-x", "c", str(HARNESS),
          "-x", "none", *libraries, "-lpthread", "-lm", "-o", str(program)], "linking the ggml GEMV program")
    return program


def _version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return PINNED


def _ggml_source(folder: Path, version: str, progress) -> Path:
    ggml = folder / "ggml"
    if (ggml / "CMakeLists.txt").is_file():
        return ggml
    downloads = cache_dir() / "downloads" / "pypi"
    sdist = downloads / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        progress(f"downloading the llama-cpp-python {version} sdist (its vendored llama.cpp)")
        _run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-binary", ":all:",
              "--no-deps", "-d", str(downloads)], "downloading llama-cpp-python's sdist")
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/ggml/"
    with tempfile.TemporaryDirectory(dir=folder) as tmp, tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise ModelError(f"{sdist.name} has no vendored llama.cpp/ggml")
        tar.extractall(tmp, members=members, filter="data")
        staged = Path(tmp) / prefix
        (staged / "ggml.pc.in").touch()  # configure_file() wants it; the sdist leaves it out
        shutil.move(str(staged), str(ggml))
    return ggml


def _zig_wrappers(folder: Path, triple: str) -> dict[str, str]:
    """zig cc / c++ for the triple as single executables, which CMake needs for its compilers."""
    wrappers = {}
    for tool in ("cc", "c++"):
        path = folder / f"zig-{tool}"
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ziglang {tool} -target {triple} "$@"\n')
        path.chmod(0o755)
        wrappers[tool] = str(path)
    return wrappers


def _run(command: list[str], what: str) -> None:
    if shutil.which(command[0]) is None and not Path(command[0]).is_file():
        raise ModelError(f"{what} needs {command[0]} (apt-get install cmake build-essential)")
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")

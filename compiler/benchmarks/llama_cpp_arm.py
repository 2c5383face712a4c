"""llama.cpp's aarch64 CPU backend on the cycle model's footing: ggml from the llama.cpp vendored in
the pinned llama-cpp-python sdist, cross-built with zig for the `arm` target's core (cached per
version and core), and a small program (ggml_gemv.c) that runs ggml's matrix-vector product on one
thread, the path llama.cpp's decode takes without its runtime repack (ggml_vec_dot_q4_0_q8_0 and
kin, activations quantised to Q8 blocks inside the call); and llama.cpp itself (libllama on ggml,
as llama.cpp's own CMake builds them, llama_model.c) running a GGUF model for a whole-model peer
per token. One call (a GEMV, a prefill, a decoded token) is counted as the difference of a run with
two and a run with one. MODELLED, like ours."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from compiler.backends.native.cycle_model import blocks_cost
from compiler.backends.native.cycle_model.counts import program_blocks
from compiler.backends.native.cycle_model.mca import ModelError
from compiler.runtime.paths import cache_dir, cache_lock

PINNED = "0.3.36"  # llama-cpp-python, as pyproject's `bench` extra pins it
HARNESS = Path(__file__).with_name("ggml_gemv.c")
MODEL_HARNESS = Path(__file__).with_name("llama_model.c")
# What libllama's CMake build needs of the vendored llama.cpp (common/, tools/ and the rest are left out).
LLAMA_PARTS = ("CMakeLists.txt", "LICENSE", "cmake/", "ggml/", "src/", "include/", "vendor/")
LLAMA_OFF = ("TESTS", "EXAMPLES", "TOOLS", "SERVER", "COMMON", "APP")  # LLAMA_BUILD_* left out
GGML_TYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 8}  # enum ggml_type


@dataclass(frozen=True)
class PeerTokenModel:
    contestant: str  # "llama.cpp <gguf file>"
    core: str
    prompt_tokens: int
    prefill_instructions: int  # one prefill of the prompt
    prefill_cycles: float
    prefill_microseconds: float
    prefill_tokens_per_second: float
    decode_instructions: int  # one token decoded after the prompt
    decode_cycles: float
    decode_microseconds: float
    decode_tokens_per_second: float


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
        return "q4_1" if spec.opt("min", False) else "q4_0"
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


def model_tokens(program: Path, text: dict[int, str], gguf: Path, prompt_tokens: int, cores) -> list[PeerTokenModel]:
    """llama.cpp running a GGUF model (one thread), modelled per token on `cores`: one prefill of
    `prompt_tokens` tokens (2 prefills less 1) and one token decoded after it (2 decodes less 1);
    `program` is model_program()'s, `text` its instruction_text(). Only blocks in the program's own
    .text count: glibc is a shared library outside it (malloc, file reads), while zig's compiler_rt
    (memcpy, memset, expf, sinf) is linked in and counts. So this is all of llama.cpp's own work per
    token: the matrix products and attention, and also its graph building and scheduling on the host
    (little when it reuses the last token's graph), which is real per-token work."""
    if not gguf.is_file():
        raise ModelError(f"no GGUF model at {gguf}")
    prefill = program_blocks(program, lambda calls: [str(gguf), str(prompt_tokens), str(calls), "0"])
    decode = program_blocks(program, lambda calls: [str(gguf), str(prompt_tokens), "1", str(calls)])
    rows = []
    for core in cores:
        p_instructions, p_cycles, _, _ = blocks_cost(text, prefill, core)
        d_instructions, d_cycles, _, _ = blocks_cost(text, decode, core)
        p_us, d_us = p_cycles / (core.ghz * 1e3), d_cycles / (core.ghz * 1e3)
        rows.append(PeerTokenModel(f"llama.cpp {gguf.name}", core.name, prompt_tokens, p_instructions, p_cycles, p_us,
                                   prompt_tokens / (p_us * 1e-6), d_instructions, d_cycles, d_us, 1 / (d_us * 1e-6)))
    return rows


def model_program(target, progress) -> Path:
    """The llama.cpp whole-model program (llama_model.c on libllama and ggml, built as llama.cpp's
    own CMake builds them, llamafile's sgemm included) for `target`'s core, built once per
    llama-cpp-python version and core."""
    folder, version, mcpu = _peer_folder(target)
    program = folder / "llama_model"
    if _fresh(program, MODEL_HARNESS):
        return program
    with cache_lock(f"llama.cpp-aarch64-{folder.name}"):  # the folder's sources and builds, one maker at a time
        if not _fresh(program, MODEL_HARNESS):
            _build_model_program(folder, version, mcpu, target, program, progress)
    return program


def _build_model_program(folder: Path, version: str, mcpu: str, target, program: Path, progress) -> None:
    source = _llama_source(folder, version, progress)
    compilers = _zig_wrappers(folder, target.triple)
    progress(f"cross-building llama.cpp {version} (libllama) for {target.triple} ({mcpu}) with zig (minutes, once)")
    build = folder / "build-llama"
    flags = f"-mcpu={mcpu}"
    _configure(source, build, compilers, flags, [f"-DLLAMA_BUILD_{part}=OFF" for part in LLAMA_OFF] +
               ["-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF"], "configuring llama.cpp")
    _run(["cmake", "--build", str(build), "-j2", "--target", "llama"], "building llama.cpp")
    libraries = [str(build / "src" / "libllama.a"),
                 *(str(build / "ggml" / "src" / name) for name in ("libggml.a", "libggml-cpu.a", "libggml-base.a"))]
    _link(compilers, flags, [source / "include", source / "ggml" / "include"], MODEL_HARNESS, libraries, program,
          "linking the llama.cpp model program")


def peer_program(target, progress) -> Path:
    """The ggml GEMV program for `target`'s core, built (once per llama-cpp-python version and
    core) when missing."""
    folder, version, mcpu = _peer_folder(target)
    program = folder / "ggml_gemv"
    if _fresh(program, HARNESS):
        return program
    with cache_lock(f"llama.cpp-aarch64-{folder.name}"):
        if not _fresh(program, HARNESS):
            _build_peer_program(folder, version, mcpu, target, program, progress)
    return program


def _build_peer_program(folder: Path, version: str, mcpu: str, target, program: Path, progress) -> None:
    ggml = _ggml_source(folder, version, progress)
    compilers = _zig_wrappers(folder, target.triple)
    progress(f"cross-building llama.cpp's ggml {version} for {target.triple} ({mcpu}) with zig (a few minutes, once)")
    build = folder / "build"
    flags = f"-mcpu={mcpu}"
    _configure(ggml, build, compilers, flags, ["-DGGML_BUILD_TESTS=OFF", "-DGGML_BUILD_EXAMPLES=OFF"],
               "configuring ggml")
    _run(["cmake", "--build", str(build), "-j2", "--target", "ggml-cpu", "ggml-base", "ggml"], "building ggml")
    libraries = [str(build / "src" / name) for name in ("libggml.a", "libggml-cpu.a", "libggml-base.a")]
    _link(compilers, flags, [ggml / "include"], HARNESS, libraries, program, "linking the ggml GEMV program")


def _peer_folder(target) -> tuple[Path, str, str]:
    """(cache folder, llama-cpp-python version, zig's -mcpu) of `target`'s llama.cpp builds."""
    version = _version()
    mcpu = target.llvm.get("mcpu", "generic").replace("-", "_")  # zig spells cores with underscores
    folder = cache_dir() / "llama.cpp-aarch64" / f"{version}-{mcpu}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder, version, mcpu


def _fresh(program: Path, source: Path) -> bool:
    return program.is_file() and program.stat().st_mtime >= source.stat().st_mtime


def _configure(source: Path, build: Path, compilers: dict[str, str], flags: str, options: list[str], what: str) -> None:
    """CMake for the zig cross-compilers: one thread's CPU backend, static, no host tuning."""
    _run(["cmake", "-S", str(source), "-B", str(build), f"-DCMAKE_C_COMPILER={compilers['cc']}",
          f"-DCMAKE_CXX_COMPILER={compilers['c++']}", "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
          "-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=", f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}",
          "-DBUILD_SHARED_LIBS=OFF", "-DGGML_OPENMP=OFF", "-DCMAKE_BUILD_TYPE=Release", *options], what)


def _link(compilers: dict[str, str], flags: str, includes: list[Path], harness: Path, libraries: list[str],
          program: Path, what: str) -> None:
    """A C harness against the static llama.cpp libraries, as a non-PIE program (the counts map its
    addresses directly). Linked beside it and renamed, so an interrupted link leaves no program
    that looks fresh."""
    staged = program.with_suffix(".part")
    _run([compilers["c++"], "-O2", flags, "-fno-PIE", "-no-pie", *(f"-I{path}" for path in includes), "-x", "c",
          str(harness), "-x", "none", *libraries, "-lpthread", "-lm", "-o", str(staged)], what)
    staged.replace(program)


def _version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return PINNED


def _llama_source(folder: Path, version: str, progress) -> Path:
    llama = folder / "llama.cpp"
    if not (llama / "src" / "CMakeLists.txt").is_file():
        with _vendored(folder, version, LLAMA_PARTS, progress) as staged:
            shutil.move(str(staged), str(llama))
    return llama


def _ggml_source(folder: Path, version: str, progress) -> Path:
    ggml = folder / "ggml"
    if not (ggml / "CMakeLists.txt").is_file():
        with _vendored(folder, version, ("ggml/",), progress) as staged:
            shutil.move(str(staged / "ggml"), str(ggml))
    return ggml


@contextmanager
def _vendored(folder: Path, version: str, parts: tuple[str, ...], progress):
    """These parts (files, or folders ending in /) of the sdist's vendored llama.cpp, extracted
    into a temporary folder under `folder`: yields that llama.cpp root, for the caller to move."""
    sdist = _sdist(version, progress)
    root = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tempfile.TemporaryDirectory(dir=folder) as tmp, tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(root) and m.name[len(root):].startswith(parts)]
        missing = [p for p in parts if not any(m.name[len(root):].startswith(p) for m in members)]
        if missing:
            raise ModelError(f"{sdist.name} has no vendored llama.cpp/{missing[0]}")
        tar.extractall(tmp, members=members, filter="data")
        staged = Path(tmp) / root
        (staged / "ggml" / "ggml.pc.in").touch()  # configure_file() wants it; the sdist leaves it out
        yield staged


def _sdist(version: str, progress) -> Path:
    downloads = cache_dir() / "downloads" / "pypi"
    sdist = downloads / f"llama_cpp_python-{version}.tar.gz"
    with cache_lock(f"sdist-{sdist.name}"):
        if not sdist.is_file():
            _download_sdist(version, downloads, progress)
    return sdist


def _download_sdist(version: str, downloads: Path, progress) -> None:
    progress(f"downloading the llama-cpp-python {version} sdist (its vendored llama.cpp)")
    _run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-binary", ":all:",
          "--no-deps", "-d", str(downloads)], "downloading llama-cpp-python's sdist")


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

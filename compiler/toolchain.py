"""Cross linkers: turn TVM's object files into a shared library for the target.

Default: the `ziglang` PyPI package (a full clang/lld cross toolchain, so `pip install` alone can
cross-compile). Alternatives: any compiler driver (`--cc aarch64-linux-gnu-g++`, a clang with its own
flags) or an Android NDK (`--ndk PATH`, which picks the NDK's clang for the target's triple).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


class ToolchainError(RuntimeError):
    """The toolchain is missing or failed; the message says which command and why."""


@dataclass(frozen=True)
class Toolchain:
    command: tuple[str, ...]  # compiler driver plus its target flags
    kind: str  # "zig", "cc" or "ndk"

    def describe(self) -> str:
        return f"{self.kind}: {shlex.join(self.command)}"

    def version(self) -> str:
        cmd = [*self.command[:3], "version"] if self.kind == "zig" else [self.command[0], "--version"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
        except (OSError, subprocess.SubprocessError) as err:
            raise ToolchainError(f"cannot run {shlex.join(cmd)}: {err}") from None
        return out.strip().splitlines()[0] if out.strip() else "unknown"

    def _run(self, cmd: list[str], what: str) -> None:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except OSError as err:
            raise ToolchainError(f"cannot run {cmd[0]!r}: {err}") from None
        if proc.returncode != 0:
            raise ToolchainError(f"{what} failed ({shlex.join(cmd)}):\n{proc.stderr.strip()}")

    def link_shared(self, output: str, objects: list[str]) -> None:
        self._run([*self.command, "-shared", "-fPIC", "-o", output, *objects], "linking")

    def link_static_program(self, output: str, sources: list[str]) -> None:
        """A static executable from C sources and objects (the Hexagon runner)."""
        self._run([*self.command, "-O2", "-static", "-o", output, *sources], "linking the runner")

    def fcompile(self):
        """The `fcompile` callable TVM's export_library expects."""

        def link(output, objects, options=None):
            self.link_shared(output, [str(o) for o in objects])

        link.output_format = "so"
        return link


_NDK_TRIPLES = {"aarch64": "aarch64-linux-android", "x86_64": "x86_64-linux-android"}


def for_target(target, *, cc: str | None = None, ndk: str | None = None, android_api: int = 28) -> Toolchain:
    """The C toolchain that links a CPU target's library: zig by default, or --cc / --ndk."""
    if cc and ndk:
        raise ToolchainError("give either --cc or --ndk, not both")
    if cc:
        command = tuple(shlex.split(cc))
        if not command or shutil.which(command[0]) is None:
            raise ToolchainError(f"compiler {command[0] if command else cc!r} not found (from --cc)")
        return Toolchain(command, "cc")
    if ndk:
        triple = _NDK_TRIPLES.get(target.isa)
        if triple is None:
            raise ToolchainError(f"the Android NDK has no toolchain for {target.isa}")
        clang = Path(ndk) / "toolchains" / "llvm" / "prebuilt" / "linux-x86_64" / "bin" / f"{triple}{android_api}-clang"
        if not clang.is_file():
            raise ToolchainError(f"no NDK clang at {clang} (is --ndk the NDK root, and API level {android_api} in it?)")
        return Toolchain((str(clang),), "ndk")
    try:
        import ziglang  # noqa: F401
    except ImportError:
        raise ToolchainError("the default cross toolchain needs the `ziglang` package "
                             "(pip install ziglang), or pass --cc/--ndk") from None
    return Toolchain((sys.executable, "-m", "ziglang", "cc", "-target", target.triple, *target.link_flags), "zig")


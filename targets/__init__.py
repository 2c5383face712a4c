"""Targets as data: one TOML file per target in this folder, read into a frozen `Target`.

Schedules read facts from a Target (vector width, int8 dot-product kind, cache sizes), never its
name, so a new device variant is a new TOML file and no code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DIR = Path(__file__).resolve().parent

INT8_DOT_KINDS = ("sdot", "neon", "avx2_madd", "avx512_madd", "avx512_vnni", "hvx_vrmpy", "none")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    family: str  # schedule family in schedules/ (e.g. "cpu")
    isa: str  # machine this code runs on, as platform.machine() names it
    triple: str  # toolchain triple for the cross linker
    llvm: dict[str, Any]  # TVM target as a JSON dict
    vector_bits: int
    vector_registers: int  # architectural SIMD registers (register tiles are sized from it)
    int8_dot: str  # one of INT8_DOT_KINDS
    l1d_kib: int
    l2_kib: int
    cpu_features: tuple[str, ...]  # /proc/cpuinfo flags needed to run natively
    emulator: str | None = None  # qemu-user binary that runs this ISA elsewhere
    # How a host process calls the kernels where no Python runs (a DSP): "hexagon" = a static runner
    # executable built with the library (compiler/hexagon_runner.c). None: the library is dlopen-ed.
    runner: str | None = None
    compile_only: str | None = None  # why builds for this target cannot run on this kind of machine

    @property
    def float_lanes(self) -> int:
        return self.vector_bits // 32

    def tvm_target(self):
        import tvm

        return tvm.target.Target(dict(self.llvm))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "isa": self.isa,
            "triple": self.triple,
            "llvm": dict(self.llvm),
            "vector_bits": self.vector_bits,
            "vector_registers": self.vector_registers,
            "int8_dot": self.int8_dot,
            "cpu_features": list(self.cpu_features),
            "emulator": self.emulator,
            "runner": self.runner,
            **({"compile_only": self.compile_only} if self.compile_only else {}),
        }


def _load(path: Path) -> Target:
    raw = tomllib.loads(path.read_text())
    try:
        target = Target(
            name=path.stem,
            description=raw["description"],
            family=raw["family"],
            isa=raw["isa"],
            triple=raw["triple"],
            llvm=dict(raw["llvm"]),
            vector_bits=int(raw["vector_bits"]),
            vector_registers=int(raw["vector_registers"]),
            int8_dot=raw["int8_dot"],
            l1d_kib=int(raw["l1d_kib"]),
            l2_kib=int(raw["l2_kib"]),
            cpu_features=tuple(raw.get("cpu_features", ())),
            emulator=raw.get("emulator"),
            runner=raw.get("runner"),
            compile_only=raw.get("compile_only"),
        )
    except KeyError as missing:
        raise ValueError(f"target file {path} lacks the field {missing}") from None
    if target.int8_dot not in INT8_DOT_KINDS:
        raise ValueError(f"target file {path}: int8_dot must be one of {INT8_DOT_KINDS}")
    return target


def host() -> Target:
    """The widest target this machine runs natively (its ISA, and every CPU feature it needs)."""
    import platform

    from compiler.loader import native_ok

    fits = [t for t in all_targets() if native_ok(t.to_json())[0]]
    if not fits:
        raise ValueError(f"no target runs natively on this {platform.machine()} CPU")
    return max(fits, key=lambda t: (t.vector_bits, len(t.cpu_features)))


def names() -> list[str]:
    return sorted(p.stem for p in _DIR.glob("*.toml"))


def get(name: str) -> Target:
    """A target by name; "host" picks the best one for this machine."""
    if name == "host":
        return host()
    path = _DIR / f"{name}.toml"
    if not path.is_file():
        raise ValueError(f"unknown target {name!r}; known targets: {', '.join(names())}")
    return _load(path)


def all_targets() -> list[Target]:
    return [get(n) for n in names()]

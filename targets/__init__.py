"""Targets as data: one TOML file per target in this folder, read into a frozen `Target`.

Schedules read facts from a Target (vector width, int8 dot-product kind, cache sizes; for GPUs
subgroup size, workgroup and shared-memory limits, fp16), never its name, so a new device variant
is a new TOML file and no code.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_DIR = Path(__file__).resolve().parent

# How int8 dot products are done -> the width in bits of the lanes its multiplies run on: SDOT,
# VPDPBUSD and VRMPY multiply 8-bit lanes; the VPMADDWD and SMULL routes widen to 16 bits first;
# "none" multiplies in 32-bit lanes.
INT8_DOT_KINDS = {"sdot": 8, "avx512_vnni": 8, "hvx_vrmpy": 8, "neon": 16, "avx2_madd": 16, "avx512_madd": 16,
                  "none": 32}


@dataclass(frozen=True)
class GpuFacts:
    """What GPU schedules and the Vulkan codegen read (family "gpu")."""

    api: str  # "vulkan"
    api_version: str  # e.g. "1.1": SPIR-V is generated and validated for this Vulkan version
    subgroup_size: int  # threads that run in lockstep (Mali Valhall 16, Adreno wave 64/128)
    max_threads: int  # workgroup size the schedules may use
    shared_memory_bytes: int  # shared memory one workgroup may use
    fp16: bool  # fp16 arithmetic worth using (fp32 accumulation is kept)
    int8_dot: bool  # SPV_KHR_integer_dot_product is fast on the device
    vector_width: int  # elements per memory access the hardware prefers (Mali: vec4)

    def tvm_attrs(self) -> dict[str, Any]:
        return {"kind": self.api, "max_num_threads": self.max_threads, "max_threads_per_block": self.max_threads, "thread_warp_size": self.subgroup_size,
                "max_shared_memory_per_block": self.shared_memory_bytes, "supports_float16": self.fp16,
                "supports_int8": True, "supports_8bit_buffer": True, "supports_16bit_buffer": self.fp16,
                "supports_integer_dot_product": self.int8_dot}


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    family: str  # schedule family in schedules/ ("cpu", "gpu")
    backend: str  # plug-in in compiler/backends/ that builds, tunes and loads it ("native", "hexagon", "vulkan")
    isa: str  # machine this code runs on, as platform.machine() names it ("spirv" for GPU code)
    triple: str  # toolchain triple for the cross linker
    llvm: dict[str, Any]  # TVM target as a JSON dict (for a GPU: its host)
    vector_bits: int = 0
    vector_registers: int = 0  # architectural SIMD registers (register tiles are sized from it)
    int8_dot: str = "none"  # one of INT8_DOT_KINDS
    l1d_kib: int = 0
    l2_kib: int = 0
    cpu_features: tuple[str, ...] = ()  # /proc/cpuinfo flags needed to run natively
    emulator: str | None = None  # qemu-user binary that runs this ISA elsewhere
    link_flags: tuple[str, ...] = ()  # extra flags for the default (zig) cross linker
    # CPU attention: dot products of several keys reduced together, keys in SIMD lanes (see
    # ops/attention_tiles.py), where that was shown faster on the target; else a horizontal sum per key
    attention_keys_in_lanes: bool = False
    # int32 -> float32 on SIMD lanes is dear on this target's cores (SCVTF on 4 lanes: two uops on one
    # of the two NEON pipes of Neoverse N1/N2-class cores, e.g. the A76 and A710): the q8 GEMMs make
    # each group's float sum by one subtraction instead (Layout.biased_sums)
    slow_int_to_float: bool = False
    # SIMD vectors of the q8 GEMMs' fused activation (SiLU) interleaved per loop step, where the core
    # issues in order and would wait out each vector's chain of dependent ops (1: LLVM's vectoriser)
    activation_vectors: int = 1
    # SIMD arithmetic on float16 lanes (ARMv8.2's FP16: FMLA on 8 half lanes, twice float32's rate):
    # the W4A16 GEMMs multiply and sum each k chunk in float16, float32 across chunks (Layout.float_math)
    float16_arith: bool = False
    # the core (targets/cores.toml) a cross build's tuning records are for when none is named: its
    # measured records (tune over RPC with --core) or else its modelled ones (tune --core)
    default_core: str | None = None
    compile_only: str | None = None  # why builds for this target cannot run on this kind of machine
    # how `run` multiplies a GGUF model by default: "f32" activations or llama.cpp's "q8" blocks,
    # whichever is faster on this target (measured, or on ARM by the cycle model)
    model_activations: str = "f32"
    gpu: GpuFacts | None = None

    @property
    def float_lanes(self) -> int:
        return self.vector_bits // 32

    def tvm_target(self):
        import tvm

        if self.gpu is not None:
            return tvm.target.Target(self.gpu.tvm_attrs(), host=dict(self.llvm))
        return tvm.target.Target(dict(self.llvm))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "backend": self.backend,
            "isa": self.isa,
            "triple": self.triple,
            "llvm": dict(self.llvm),
            "vector_bits": self.vector_bits,
            "vector_registers": self.vector_registers,
            "int8_dot": self.int8_dot,
            "cpu_features": list(self.cpu_features),
            "emulator": self.emulator,
            **({"compile_only": self.compile_only} if self.compile_only else {}),
            **({"gpu": asdict(self.gpu)} if self.gpu else {}),
        }


def _load(path: Path) -> Target:
    raw = tomllib.loads(path.read_text())
    try:
        common = {"name": path.stem, "description": raw["description"], "family": raw["family"],
                  "backend": raw["backend"], "isa": raw["isa"], "triple": raw["triple"], "llvm": dict(raw["llvm"]),
                  "emulator": raw.get("emulator"), "link_flags": tuple(raw.get("link_flags", ())),
                  "compile_only": raw.get("compile_only"), "model_activations": raw.get("model_activations", "f32")}
        if common["model_activations"] not in ("f32", "q8"):
            raise ValueError(f"model_activations must be f32 or q8, got {common['model_activations']!r}")
        if raw["family"] == "gpu":
            gpu = raw["gpu"]
            target = Target(**common, gpu=GpuFacts(
                api=gpu["api"], api_version=str(gpu["api_version"]), subgroup_size=int(gpu["subgroup_size"]),
                max_threads=int(gpu["max_threads"]), shared_memory_bytes=int(gpu["shared_memory_kib"]) * 1024,
                fp16=bool(gpu["fp16"]), int8_dot=bool(gpu["int8_dot"]), vector_width=int(gpu["vector_width"])))
        else:
            target = Target(
                **common,
                vector_bits=int(raw["vector_bits"]),
                vector_registers=int(raw["vector_registers"]),
                int8_dot=raw["int8_dot"],
                l1d_kib=int(raw["l1d_kib"]),
                l2_kib=int(raw["l2_kib"]),
                cpu_features=tuple(raw.get("cpu_features", ())),
                attention_keys_in_lanes=bool(raw.get("attention_keys_in_lanes", False)),
                slow_int_to_float=bool(raw.get("slow_int_to_float", False)),
                activation_vectors=int(raw.get("activation_vectors", 1)),
                float16_arith=bool(raw.get("float16_arith", False)),
                default_core=raw.get("default_core"),
            )
    except KeyError as missing:
        raise ValueError(f"target file {path} lacks the field {missing}") from None
    if target.default_core is not None and target.default_core not in cores():
        raise ValueError(f"target file {path}: default_core {target.default_core!r} is not in {_CORES.name}")
    if target.activation_vectors < 1:
        raise ValueError(f"target file {path}: activation_vectors must be 1 or more, got {target.activation_vectors}")
    if target.int8_dot not in INT8_DOT_KINDS:
        raise ValueError(f"target file {path}: int8_dot must be one of {', '.join(INT8_DOT_KINDS)}")
    return target


def host() -> Target:
    """The widest target this machine runs natively (its ISA, and every CPU feature it needs)."""
    import platform

    from compiler.runtime.host import native_ok

    fits = [t for t in all_targets() if t.family == "cpu" and native_ok(t.to_json())[0]]
    if not fits:
        raise ValueError(f"no target runs natively on this {platform.machine()} CPU")
    return max(fits, key=lambda t: (t.vector_bits, len(t.cpu_features)))


_CORES = _DIR / "cores.toml"  # not a target: the cores the ARM cycle model can stand for


def names() -> list[str]:
    return sorted(p.stem for p in _DIR.glob("*.toml") if p != _CORES)


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


def emulator_for(isa: str) -> str | None:
    """The emulator the targets of an ISA name (qemu-aarch64 for aarch64), None if none does."""
    emulators = {t.emulator for t in all_targets() if t.isa == isa and t.emulator}
    if len(emulators) > 1:
        raise ValueError(f"targets of {isa} name different emulators: {sorted(emulators)}")
    return next(iter(emulators), None)


@dataclass(frozen=True)
class Core:
    """An ARM core the cycle model can stand for (targets/cores.toml)."""

    name: str
    description: str
    mca_cpu: str  # llvm-mca -mcpu
    ghz: float
    int8_macs_per_cycle: int
    fp32_macs_per_cycle: int
    decode_width: int
    dram_gbs: float


def cores() -> dict[str, Core]:
    raw = tomllib.loads(_CORES.read_text())
    return {name: Core(name=name, **facts) for name, facts in raw.items()}


def core(name: str) -> Core:
    known = cores()
    if name not in known:
        raise ValueError(f"unknown core {name!r}; known cores: {', '.join(known)}")
    return known[name]

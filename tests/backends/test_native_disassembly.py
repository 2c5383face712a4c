"""Native builds checked in their machine code, whether or not this machine can run them: the int8
GEMMs run on the target's dot-product instruction (SDOT, or SMULL on ARMv8.0; VPDPBUSD with VNNI,
VPMADDWD without) and the AVX-512 builds' kernels compute on 512-bit registers, inside loops."""

from __future__ import annotations

import shutil

import pytest
from conftest import coverage_specs
from disassembly import functions, in_loop, innermost_loops_with

import schedules
import targets
from schedules.cpu import has_high_bit_dot
from schedules.gemm_facts import GEMM_OPS, float_weights, gemm_n, int4_weights, int_weight_bits

pytestmark = pytest.mark.compile

OBJDUMP = next((t for t in ("aarch64-linux-gnu-objdump", "llvm-objdump") if shutil.which(t)), None)
X86_OBJDUMP = shutil.which("objdump")


def int8_kernels(target: str | None = None):
    """The coverage list's int8-activation GEMMs; for a target, those its dot-product instruction
    runs (5- and 6-bit weights take a portable loop where it has no intrinsic for them)."""
    int8_dot = targets.get(target).int8_dot if target else None
    return [s for s in coverage_specs() if s.op in GEMM_OPS and not float_weights(s)
            and (int8_dot is None or int_weight_bits(s) not in (5, 6) or has_high_bit_dot(int8_dot))]


@pytest.mark.skipif(OBJDUMP is None, reason="needs aarch64-linux-gnu-objdump (binutils-aarch64-linux-gnu)")
@pytest.mark.parametrize("target, instruction", [("arm", "sdot"), ("arm-a55", "sdot"), ("arm-i8mm", "sdot"),
                                                 ("arm-a53", "smull")])
def test_int8_kernels_use_dot_instructions_in_loops(build_library, target, instruction):
    funcs = functions(OBJDUMP, build_library(target, coverage_specs()) / "kernels.so")
    for spec in int8_kernels(target):
        for symbol in (spec.name, f"{spec.name}__m1"):  # the any-length GEMM and the decode GEMV
            body = funcs[f"{symbol}_compute_"]
            wanted = "smmla" if _on_smmla(spec, target, symbol) else instruction
            # a tiny GEMV may be unrolled whole by LLVM: then every one of its dot products is there
            macs = gemm_n(spec) * spec.dim("k")
            unrolled = symbol.endswith("__m1") and sum(m == wanted for _, m, _ in body) * 16 >= macs
            assert in_loop(body, "aarch64", lambda m, _: m == wanted) or unrolled, \
                f"{symbol} on {target}: no {wanted} inside a loop"


def _on_smmla(spec, target: str, symbol: str) -> bool:
    """Whether this variant's layout runs its tiles on SMMLA (the any-length q8 GEMMs with i8mm)."""
    layout = schedules.layout(spec, targets.get(target), {"M": 1} if symbol.endswith("__m1") else {})
    return layout.weights_unpacked and layout.unpacked_form == "smmla"


@pytest.mark.skipif(OBJDUMP is None, reason="needs aarch64-linux-gnu-objdump (binutils-aarch64-linux-gnu)")
def test_i8mm_prefill_gemms_run_smmla_and_gemvs_sdot(build_library):
    """arm-i8mm: the q8 path's int4 GEMMs of several rows multiply on SMMLA (32 products where SDOT
    does 16) inside loops, their one-token GEMVs on SDOT with no SMMLA; a build for a core without
    i8mm (arm) has no SMMLA at all (an illegal instruction there)."""
    funcs = functions(OBJDUMP, build_library("arm-i8mm", coverage_specs()) / "kernels.so")
    prefill = [s for s in int8_kernels("arm-i8mm") if _on_smmla(s, "arm-i8mm", s.name)]
    assert len(prefill) >= 4  # W4A8 q8_0 / q8_1, Q4_K, the fused QKV
    for spec in prefill:
        assert in_loop(funcs[f"{spec.name}_compute_"], "aarch64", lambda m, _: m == "smmla"), spec.name
        gemv = funcs[f"{spec.name}__m1_compute_"]
        assert not any(m == "smmla" for _, m, _ in gemv) and any(m == "sdot" for _, m, _ in gemv), spec.name
    arm = functions(OBJDUMP, build_library("arm", coverage_specs()) / "kernels.so")
    assert not any(m == "smmla" for body in arm.values() for _, m, _ in body)


@pytest.mark.skipif(OBJDUMP is None, reason="needs aarch64-linux-gnu-objdump (binutils-aarch64-linux-gnu)")
def test_q8_gemms_make_float_sums_by_subtraction_where_conversion_is_dear(build_library):
    """arm (Layout.biased_sums): the q8 path's GEMMs of several rows turn their int32 group sums into
    floats in their dot-product loops with no vector SCVTF (two uops on one NEON pipe of the A76), by
    an FSUB; arm-a55 converts with SCVTF there. (K-quants' sub-block scales convert with a fixed
    point, "#24"; the one-token GEMVs of these small shapes are unrolled whole.)"""
    q8 = [s for s in int8_kernels("arm") if s.opt("act", "int8") != "int8"]
    assert len(q8) >= 5
    for target, converts in (("arm", False), ("arm-a55", True)):
        funcs = functions(OBJDUMP, build_library(target, coverage_specs()) / "kernels.so")
        for spec in q8:
            hot = innermost_loops_with(funcs[f"{spec.name}_compute_"], "aarch64", lambda m, _: m == "sdot")
            assert hot, (target, spec.name)
            sums = [ops for loop in hot for _, m, ops in loop if m == "scvtf" and ".4s" in ops and "#" not in ops]
            assert bool(sums) == converts, (target, spec.name, sums)


@pytest.mark.skipif(OBJDUMP is None, reason="needs aarch64-linux-gnu-objdump (binutils-aarch64-linux-gnu)")
def test_w4a16_gemms_multiply_on_half_lanes_where_the_core_has_fp16(build_library):
    """Targets with ARMv8.2 FP16 (Target.float16_arith) run W4A16's products on FMLA over 8 half lanes
    inside loops, both length variants, with no int-to-half conversion or arithmetic there (UCVTF on
    8 half lanes: 4 uops on one pipe of the A76 model; the weights' halves are looked up by TBL). An ARMv8.0
    build (arm-a53) has no half-precision arithmetic at all: an illegal instruction there."""
    w4a16 = [s for s in coverage_specs() if s.op == "qgemm_w4a16"]
    assert len(w4a16) >= 4
    for target in ("arm", "arm-a55"):
        funcs = functions(OBJDUMP, build_library(target, coverage_specs()) / "kernels.so")
        for spec in w4a16:
            for symbol in (spec.name, f"{spec.name}__m1"):
                hot = innermost_loops_with(funcs[f"{symbol}_compute_"], "aarch64",
                                           lambda m, ops: m == "fmla" and ".8h" in ops)
                assert hot, (target, symbol)
                converts = [m for loop in hot for _, m, ops in loop
                            if m in ("ucvtf", "scvtf", "fsub", "fadd") and ".8h" in ops]
                assert not converts, (target, symbol, converts)
                assert any(m == "tbl" for loop in hot for _, m, _ in loop), (target, symbol)
    a53 = functions(OBJDUMP, build_library("arm-a53", coverage_specs()) / "kernels.so")
    assert not any(".8h" in ops and m.startswith("f") for body in a53.values() for _, m, ops in body
                   if not m.startswith("fcvt"))


@pytest.mark.skipif(OBJDUMP is None, reason="needs aarch64-linux-gnu-objdump (binutils-aarch64-linux-gnu)")
def test_armv8_0_build_has_no_sdot(build_library):
    """A Cortex-A53 build must not contain SDOT: it would be an illegal instruction there."""
    funcs = functions(OBJDUMP, build_library("arm-a53", coverage_specs()) / "kernels.so")
    assert not any(m == "sdot" for body in funcs.values() for _, m, _ in body)


@pytest.mark.skipif(X86_OBJDUMP is None, reason="needs objdump (binutils)")
@pytest.mark.parametrize("target, int8_instruction", [("x86-avx512", "vpdpbusd"), ("x86-avx512-skx", "vpmaddwd")])
def test_avx512_kernels_compute_on_512_bit_registers_in_loops(build_library, target, int8_instruction):
    """The numeric tests of these builds skip on a CPU without AVX-512; their code is checked here:
    int8 GEMMs multiply with the target's instruction on zmm registers, every float kernel (GEMMs,
    fused QKV, attention) runs zmm FMAs, each inside a loop of both length variants."""
    funcs = functions(X86_OBJDUMP, build_library(target, coverage_specs()) / "kernels.so")
    int8 = {s.name for s in int8_kernels()}
    checked = 0
    for spec in coverage_specs():
        if spec.op == "quantize_per_token":
            continue  # not vectorised to 512 bits (checked numerically on AVX2 and under qemu)
        want = int8_instruction if spec.name in int8 else "vfmadd"
        variants = [s for s in funcs if s.endswith("_compute_") and
                    (s == f"{spec.name}_compute_" or s.startswith(f"{spec.name}__"))]
        for symbol in variants:
            assert in_loop(funcs[symbol], "x86_64", lambda m, ops: m.startswith(want) and "zmm" in ops), \
                f"{symbol} on {target}: no {want} on zmm registers inside a loop"
            checked += 1
    assert checked >= 2 * (len(coverage_specs()) - 2)


@pytest.mark.skipif(X86_OBJDUMP is None, reason="needs objdump (binutils)")
@pytest.mark.parametrize("target, register", [("x86", "ymm"), ("x86-avx512-skx", "zmm")])
def test_q8_path_multiplies_bytes_on_x86(build_library, target, register):
    """The q8 model path's int GEMMs use byte products (VPMADDUBSW, 32 or 64 per instruction) rather
    than VPMADDWD on sign-extended bytes, inside loops of both length variants."""
    funcs = functions(X86_OBJDUMP, build_library(target, coverage_specs()) / "kernels.so")
    q8 = [s for s in int8_kernels() if s.opt("act") != "int8"
          and (register == "ymm" or int4_weights(s))]  # AVX-512 has no VPSIGNB: its int8 weights keep VPMADDWD
    assert q8
    for spec in q8:
        for symbol in (spec.name, f"{spec.name}__m1"):
            assert in_loop(funcs[f"{symbol}_compute_"], "x86_64", lambda m, ops: m == "vpmaddubsw" and register in ops), \
                f"{symbol} on {target}: no vpmaddubsw on {register} inside a loop"

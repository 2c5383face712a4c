"""The same kernels built for ARM targets and run under qemu-aarch64 through the loader's emulated
worker: the instructions that run are the AArch64 ones (SDOT, SMULL, NEON), checked against numpy."""

from __future__ import annotations

import pytest
from conftest import assert_matches, coverage_specs, require_emulator
from kernel_cases import cases

from compiler import runtime
from compiler.specs import make_spec

pytestmark = pytest.mark.emulated


LENGTHS = {"M": (1, 7, 33), "S": (1, 7, 130, 300, 2048), "L": (1, 33, 2049), "prefix": ((1, 33), (7, 130))}


def affordable(spec, sizes) -> bool:
    """Under emulation S=2048 is checked with D=64 only (D=128 at 2048 costs ~20 s and adds nothing)."""
    return not (sizes.get("S") == 2048 and spec.dim("d") == 128)
VARIANT_LENGTHS = {"M": (1, 5), "S": (1, 37), "L": (1, 300)}


def _open(build_library, target):
    require_emulator("aarch64")
    library = runtime.load(build_library(target, coverage_specs()))
    assert library.mode == "emulated"
    return library


@pytest.fixture(scope="module")
def arm(build_library):
    library = _open(build_library, "arm")
    yield library
    library.close()


@pytest.fixture(scope="module", params=["arm-a53", "arm-a55", "arm-i8mm"])
def arm_variant(request, build_library):
    library = _open(build_library, request.param)
    yield library
    library.close()


@pytest.mark.parametrize("spec, sizes", cases(coverage_specs(), LENGTHS, keep=affordable))
def test_arm_kernel_matches_numpy(arm, spec, sizes):
    assert_matches(arm[spec.name], sizes, seed=sum(sizes.values()))


@pytest.mark.parametrize("spec, sizes", cases(coverage_specs(), VARIANT_LENGTHS))
def test_arm_variant_kernel_matches_numpy(arm_variant, spec, sizes):
    assert_matches(arm_variant[spec.name], sizes, seed=sum(sizes.values()))


def test_sdot_gemm_too_narrow_to_interleave_keeps_four_column_tiles(build_library):
    """N=36 is no multiple of the 16-column interleaved SDOT tile: the 4-column tile, still SDOT
    (x86 falls back to portable code at this N, so it is not in the shared coverage list)."""
    require_emulator("aarch64")
    spec = make_spec("qgemm_w4a8", n=36, k=64, group=32, act="q8_0")
    with runtime.load(build_library("arm", [spec])) as library:
        kernel = library[spec.name]
        assert {v["layout"]["n_tile"] for v in kernel.spec["variants"]} == {4}
        for m in (1, 5):
            assert_matches(kernel, {"M": m}, seed=m)


HIGH_BIT_SPECS = [  # GGUF's 5- and 6-bit types on int8 activations: SDOT with the bits above the nibbles
    # ORed in (not in the shared coverage list: Hexagon, Vulkan and ARMv8.0 have no such form)
    make_spec("qgemm_gguf", n=64, k=128, type="Q5_0", act="q8_0", q8_recip="1/d"),
    make_spec("qgemm_gguf", n=32, k=96, type="Q5_1", act="q8_1", q8_recip="1/d", residual=True),
    make_spec("qgemm_gguf", n=48, k=256, type="Q5_K", act="q8_1", q8_recip="1/d", norm=1e-5, bias=True),
    # Q6_K: 16 columns per weight tile (N=48) and 4 (N=36), groups of 16 within Q8_0's blocks of 32
    make_spec("qgemm_gguf", n=48, k=512, type="Q6_K", act="q8_0", q8_recip="1/d", norm=1e-5, residual=True),
    make_spec("qgemm_gguf", n=36, k=256, type="Q6_K", act="q8_0", q8_recip="1/d", bias=True),
    make_spec("qkv_proj", hq=2, hkv=1, d=32, k=64, quant="gguf", type="Q5_0", act="q8_0", q8_recip="1/d",
              group=32, norm=1e-5, v=False),
]


@pytest.mark.parametrize("target", ["arm", "arm-i8mm"])
def test_5_and_6_bit_weights_on_int8_activations_match_numpy(build_library, target):
    """The int8 forms of Q5_0 / Q5_1 / Q5_K / Q6_K: SDOT with the bits above the nibbles ORed in
    (x86's byte products in tests/ops/test_kernels_x86.py; ARMv8.0's portable loop, over values made
    signed in registers from a plain plane of high bits, runs the coverage list's Q6_K and Q5_1)."""
    require_emulator("aarch64")
    with runtime.load(build_library(target, HIGH_BIT_SPECS)) as library:
        for spec in HIGH_BIT_SPECS:
            for m in (1, 7, 33):
                assert_matches(library[spec.name], {"M": m}, seed=m)

"""Every op, built for the x86 host, against its numpy reference (int paths exact up to the fp32
scaling, float paths within the op's stated tolerance)."""

from __future__ import annotations

import pytest
from conftest import assert_matches, coverage_specs
from kernel_cases import cases

from compiler import runtime
from compiler.runtime import host
from compiler.specs import make_spec

LENGTHS = {"M": (1, 7, 33), "S": (1, 7, 130, 1024, 2048), "L": (1, 33, 300, 2049), "prefix": ((1, 33), (7, 300), (130, 1024))}


@pytest.fixture(scope="module", params=["x86", "x86-avx512", "x86-avx512-skx"])
def lib(request, build_library):
    directory = build_library(request.param, coverage_specs())
    ok, reason = host.native_ok(runtime.read_manifest(directory)["target"])
    if not ok:  # the build itself succeeded (compile-only here); its code is checked by
        # tests/backends/test_native_disassembly.py
        pytest.skip(f"{request.param} is compile-only on this machine: {reason}")
    library = runtime.load(directory)
    assert library.mode == "native"
    yield library
    library.close()


def affordable(spec, sizes) -> bool:
    """S=2048 with D=64 only: the float64 reference's S x S scores for 8 heads of D=128 add nothing."""
    return not (sizes.get("S") == 2048 and spec.dim("d") == 128)


@pytest.mark.native
@pytest.mark.parametrize("spec, sizes", cases(coverage_specs(), LENGTHS, keep=affordable))
def test_kernel_matches_numpy(lib, spec, sizes):
    assert_matches(lib[spec.name], sizes, seed=sum(sizes.values()))


HIGH_BIT_SPECS = [  # GGUF's 5- and 6-bit types on int8 activations: x86's byte products with the bits
    # above the nibbles ORed in
    make_spec("qgemm_gguf", n=64, k=128, type="Q5_0", act="q8_0"),
    make_spec("qgemm_gguf", n=32, k=96, type="Q5_1", act="q8_1", residual=True),
    make_spec("qgemm_gguf", n=48, k=256, type="Q5_K", act="q8_1", norm=1e-5, bias=True),
    make_spec("qgemm_gguf", n=48, k=512, type="Q6_K", act="q8_0", norm=1e-5, residual=True),
    make_spec("qgemm_gguf", n=36, k=256, type="Q6_K", act="q8_0", bias=True),  # no tile fits: the portable loop
    make_spec("qkv_proj", hq=2, hkv=1, d=32, k=64, quant="gguf", type="Q5_0", act="q8_0", group=32, norm=1e-5,
              v=False),
    make_spec("qkv_proj", hq=2, hkv=1, d=32, k=256, quant="gguf", type="Q6_K", act="q8_0", norm=1e-5),
]


@pytest.mark.native
@pytest.mark.parametrize("target", ["x86", "x86-avx512", "x86-avx512-skx"])
def test_5_and_6_bit_weights_on_byte_products_match_numpy(build_library, target):
    """VPMADDUBSW (AVX2, AVX-512) and VPDPBUSD (VNNI) on Q5_0 / Q5_1 / Q5_K / Q6_K (not in the shared
    coverage list: Hexagon, Vulkan and ARMv8.0 have no form for values above a nibble)."""
    directory = build_library(target, HIGH_BIT_SPECS)
    ok, reason = host.native_ok(runtime.read_manifest(directory)["target"])
    if not ok:
        pytest.skip(f"{target} is compile-only on this machine: {reason}")
    with runtime.load(directory) as library:
        for spec in HIGH_BIT_SPECS:
            for m in (1, 7, 33):
                assert_matches(library[spec.name], {"M": m}, seed=m)

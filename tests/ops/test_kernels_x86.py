"""Every op, built for the x86 host, against its numpy reference (int paths exact up to the fp32
scaling, float paths within the op's stated tolerance)."""

from __future__ import annotations

import pytest
from conftest import assert_matches, coverage_specs
from kernel_cases import cases

from compiler import runtime
from compiler.runtime import host

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

"""The smallest and oddest shapes the ops accept: unit K, 2-wide heads, a head dim that is not a
multiple of the SIMD width, one output tile, GEMMs with a single group."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_emulator

from compiler import runtime, verify
from compiler.specs import make_spec


def edge_specs() -> list:
    return [
        make_spec("qgemm_w8a8", n=4, k=4),
        make_spec("qgemm_w8a8", n=12, k=8, bias=True),
        make_spec("qgemm_w4a8", n=4, k=32, group=32),
        make_spec("qgemm_w4a16", n=2, k=32, group=32),
        make_spec("qgemm_w4a16", n=6, k=64, group=32, zero=True),
        make_spec("quantize_per_token", k=1),
        make_spec("quantize_per_token", k=3),
        make_spec("attention_prefill", hq=1, hkv=1, d=2),
        make_spec("attention_prefill", hq=3, hkv=1, d=40),
        make_spec("attention_decode", hq=2, hkv=1, d=40),
        make_spec("attention_decode", hq=5, hkv=5, d=6),
        make_spec("qkv_proj", hq=1, hkv=1, d=4, k=4, quant="w8a8"),
        make_spec("qkv_proj", hq=3, hkv=1, d=6, k=32, quant="w4a16", group=32),
        make_spec("qkv_proj", hq=2, hkv=2, d=2, k=32, quant="w4a8", group=32),
    ]


@pytest.mark.parametrize("target", [pytest.param("x86", marks=pytest.mark.native),
                                    pytest.param("arm", marks=pytest.mark.emulated)])
def test_edge_shapes_match_numpy(build_library, target):
    directory = build_library(target, edge_specs())
    if target == "arm":
        require_emulator("aarch64")
    rng = np.random.default_rng(7)
    failures = []
    with runtime.load(directory) as lib:
        for spec in edge_specs():
            for length in (1, 2, 5, 257):
                sizes = {d: length for d in verify.symbolic_dims(lib[spec.name].spec)}
                failures += [str(c) for c in verify.check_kernel(lib[spec.name], sizes, rng) if not c.ok]
    assert not failures, "\n".join(failures)

"""Random static shapes and random runtime lengths, on x86 natively and on ARM under qemu.
EKC_TEST_SEED picks another draw (the default keeps CI reproducible)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import assert_matches, require_emulator
from kernel_cases import runtime_dim

from compiler import runtime
from compiler.specs import make_spec

SEED = int(os.environ.get("EKC_TEST_SEED", "2026"))


def random_specs(rng: np.random.Generator) -> list:
    def pick(values):
        return values[int(rng.integers(len(values)))]

    g = pick((32, 64, 128))
    hkv = int(rng.integers(1, 4))
    specs = [
        make_spec("qgemm_w8a8", n=4 * int(rng.integers(1, 49)), k=4 * int(rng.integers(1, 97)),
                  bias=bool(rng.integers(2))),
        make_spec("qgemm_w4a8", n=4 * int(rng.integers(1, 33)), k=g * int(rng.integers(1, 4)), group=g),
        make_spec("qgemm_w4a16", n=2 * int(rng.integers(1, 65)), k=g * int(rng.integers(1, 4)), group=g,
                  zero=bool(rng.integers(2)), bias=bool(rng.integers(2))),
        make_spec("quantize_per_token", k=int(rng.integers(1, 300))),
        make_spec("qkv_proj", hq=hkv * pick((1, 2, 4)), hkv=hkv, d=pick((64, 128)), k=g * int(rng.integers(1, 3)),
                  quant=pick(("w8a8", "w4a8", "w4a16")), group=g, bias=bool(rng.integers(2)),
                  rope=bool(rng.integers(2)), rope_theta=float(pick((10000.0, 500000.0)))),
        make_spec("attention_prefill", hq=hkv * pick((1, 4)), hkv=hkv, d=pick((64, 128))),
        make_spec("attention_decode", hq=hkv * pick((1, 4)), hkv=hkv, d=pick((64, 128))),
    ]
    return specs


def random_sizes(spec, rng) -> dict[str, int]:
    dim = runtime_dim(spec)
    high = {"M": 40, "S": 300, "L": 2100}[dim]
    sizes = {dim: int(rng.integers(1, high + 1))}
    if spec.op == "attention_prefill":  # after a cached prefix of 0..300 keys
        sizes["L"] = sizes["S"] + int(rng.integers(0, 301))
    return sizes


@pytest.mark.parametrize("target", [pytest.param("x86", marks=pytest.mark.native),
                                    pytest.param("arm", marks=pytest.mark.emulated)])
def test_random_shapes_match_numpy(build_library, target):
    rng = np.random.default_rng(SEED)
    specs = random_specs(rng)
    directory = build_library(target, specs)
    if target == "arm":
        require_emulator("aarch64")
    with runtime.load(directory) as lib:
        for spec in specs:
            for _ in range(2):
                sizes = random_sizes(spec, rng)
                assert_matches(lib[spec.name], sizes, seed=int(rng.integers(1 << 30)))

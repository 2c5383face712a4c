"""The smallest and oddest shapes the ops accept: unit K, 2-wide heads, a head dim that is not a
multiple of the SIMD width, one output tile, GEMMs with a single group."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_emulator

from compiler import ops, runtime, verify
from compiler.specs import make_spec
from schedules import layouts


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


@pytest.mark.emulated
def test_w4a16_on_float16_lanes_takes_rows_of_any_size(build_library):
    """The float16 form (`arm`: ops/qgemm_w4a16._acc_fp16_lanes) divides each row by its max|x|:
    rows of tiny values (1 / max|x| would overflow float32), zeros, huge and ordinary values each
    match numpy to the form's tolerance, relative to their own row's largest output."""
    spec = make_spec("qgemm_w4a16", n=32, k=64, group=32)
    directory = build_library("arm", [spec])
    require_emulator("aarch64")
    rng = np.random.default_rng(3)
    with runtime.load(directory) as lib:
        kernel = lib[spec.name]
        layout = layouts.from_json(kernel.variant_for({"M": 5})["layout"])
        assert layout.float_math == "float16"
        logical = ops.get(spec.op).random_inputs(spec, {"M": 5}, rng)
        logical["x"] = logical["x"] * np.array([1.0, 1e-39, 0.0, 1e30, 4e-39], np.float32)[:, None]
        reference = ops.get(spec.op).layout_reference(spec, layout, **logical)["y"]
        y = kernel(x=logical["x"], **kernel.pack(**{n: logical[n] for n in kernel.logical_weights}))
    atol, _ = ops.get(spec.op).tolerances(spec, layout).get("y", ops.get(spec.op).default_tolerance(layout))
    assert np.isfinite(y).all(), y
    for row, (got, want) in enumerate(zip(y.astype(np.float64), reference)):
        assert np.abs(got - want).max() <= atol * np.abs(want).max(), (row, got[:4], want[:4])

"""NaN and +-Inf in a CPU kernel's inputs come out where the op's numpy reference puts them: a
kernel must not turn a poisoned row into plausible finite numbers (the Vulkan kernels already
propagate NaN; the CPU ones dropped it)."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import ops, runtime
from compiler.ops import attention
from compiler.runtime import host
from compiler.specs import make_spec
from schedules import layouts

pytestmark = pytest.mark.native

QUANTIZE = [make_spec("quantize_per_token", k=100), make_spec("quantize_per_token", k=37)]
ATTENTION = [make_spec("attention_prefill", hq=4, hkv=4, d=64), make_spec("attention_decode", hq=8, hkv=2, d=64)]
Q8_GEMM = make_spec("qgemm_w4a8", n=32, k=96, group=32, act="q8_0")  # activations rounded in the kernel
NAN, INF = np.float32(np.nan), np.float32(np.inf)


@pytest.fixture(scope="module")
def lib(build_library):
    with runtime.load(build_library("x86", QUANTIZE + ATTENTION + [Q8_GEMM])) as library:
        yield library


def poisoned_rows(k: int) -> np.ndarray:
    """One row per case: clean, zero, NaN first/middle/last, +Inf, -Inf, NaN with +-Inf, all NaN,
    +Inf with -Inf, and a huge finite value (not poisoned)."""
    rng = np.random.default_rng(k)
    x = (rng.standard_normal((12, k)) * 3).astype(np.float32)
    x[1] = 0.0
    x[2, 0] = NAN
    x[3, k // 2] = NAN
    x[4, -1] = NAN
    x[5, k // 3] = INF
    x[6, k // 3] = -INF
    x[7, 1], x[7, -2] = INF, NAN
    x[8] = NAN
    x[9, 0], x[9, -1] = INF, -INF
    x[10, 3] = np.finfo(np.float32).max
    x[11, -1] = -INF  # -Inf last: the reduction's final step
    return x


def test_the_reference_says_what_a_poisoned_row_gives():
    """NaN anywhere in a row: scale NaN; +-Inf (and no NaN): scale +Inf; either way q is all 0 (no
    NaN is cast to int8), so the scale alone carries the poison into the GEMM (q * scale: NaN)."""
    x = poisoned_rows(16)
    with np.errstate(all="raise"):  # the reference itself must not divide inf by inf or cast NaN
        ref = ops.get("quantize_per_token").reference(QUANTIZE[0], x)
    scale, q = ref["scale"], ref["q"]
    assert np.isnan(scale[[2, 3, 4, 7, 8]]).all()
    assert (scale[[5, 6, 9, 11]] == INF).all()
    assert np.isfinite(scale[[0, 1, 10]]).all()
    assert not q[[1, 2, 3, 4, 5, 6, 7, 8, 9, 11]].any()
    assert q[10, 3] == 127


@pytest.mark.parametrize("spec", QUANTIZE, ids=lambda s: s.name)
def test_quantize_matches_the_reference_on_nan_and_inf(lib, spec):
    x = poisoned_rows(spec.dim("k"))
    ref = ops.get("quantize_per_token").reference(spec, x)
    q, scale = lib[spec.name](x=x)
    np.testing.assert_array_equal(scale, ref["scale"])  # NaN where the reference has NaN, Inf where Inf
    np.testing.assert_array_equal(q, ref["q"])


@pytest.mark.parametrize("spec", QUANTIZE, ids=lambda s: s.name)
def test_quantize_of_one_poisoned_row_at_a_time(lib, spec):
    """Each single row alone (M=1: the decode case) and the poison in every position of a row."""
    k = spec.dim("k")
    for row in poisoned_rows(k):
        q, scale = lib[spec.name](x=row[None])
        ref = ops.get("quantize_per_token").reference(spec, row[None])
        np.testing.assert_array_equal(scale, ref["scale"])
        np.testing.assert_array_equal(q, ref["q"])
    for value in (NAN, INF, -INF):
        x = np.tile(np.linspace(-2, 2, k, dtype=np.float32), (k, 1))
        x[np.arange(k), np.arange(k)] = value
        q, scale = lib[spec.name](x=x)
        assert (np.isnan(scale) if np.isnan(value) else scale == INF).all(), value
        assert not q.any()


# Both length variants: the short bucket (S <= 256, L <= 512) and the any-length one.
ATTENTION_CASES = [(spec, length) for spec in ATTENTION for length in (9, 600)]
POISON = ["nan_in_a_key", "inf_key", "minus_inf_key", "nan_in_a_query"]
def attention_case(spec, length: int, poison: str):
    return pytest.param(spec, length, poison, id=f"{spec.name}-{length}-{poison}")


def poisoned_attention(spec, length: int, poison: str) -> dict[str, np.ndarray]:
    op = ops.get(spec.op)
    sizes = {"S" if spec.op == "attention_prefill" else "L": length}
    inputs = op.random_inputs(spec, sizes, np.random.default_rng(length))
    k = inputs["k_cache"]
    if poison == "nan_in_a_key":
        k[0, 2, 5] = NAN
    elif poison == "inf_key":
        k[0, 4, :] = INF
    elif poison == "minus_inf_key":
        k[-1, 3, :] = -INF
    else:
        inputs["q"][(1, 6, 0) if spec.op == "attention_prefill" else (1, 0)] = NAN
    return inputs


@pytest.mark.parametrize("spec, length, poison", [attention_case(spec, length, poison)
                                                   for spec, length in ATTENTION_CASES for poison in POISON])
def test_attention_matches_the_reference_on_nan_and_inf(lib, spec, length, poison):
    inputs = poisoned_attention(spec, length, poison)
    with np.errstate(invalid="ignore"):
        ref = ops.get(spec.op).reference(spec, **inputs)["o"]
    out = lib[spec.name](**inputs)
    assert np.isnan(ref).any()  # every case poisons some output rows
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(out[finite], ref[finite], atol=2e-5, rtol=2e-5)


def test_a_poisoned_row_poisons_its_q8_gemm_output_row(lib):
    """A block holding NaN gets scale NaN (Inf: scale Inf) and q 0: the row's every output is NaN
    (non-finite), the clean rows stay finite and as the reference says. A finite block past fp16's
    range (amax / 127 > 65504: row 10 holds FLT_MAX) gets scale Inf as in ggml, whose scales are fp16."""
    kernel = lib[Q8_GEMM.name]
    inputs = ops.get(Q8_GEMM.op).random_inputs(Q8_GEMM, {"M": 12}, np.random.default_rng(0))
    x = poisoned_rows(96)
    y = kernel(x=x, **kernel.pack(w=inputs["w"], w_scale=inputs["w_scale"]))
    assert np.isfinite(y[[0, 1]]).all()
    assert np.isnan(y[[2, 3, 4, 7, 8]]).all()
    assert not np.isfinite(y[[5, 6, 9, 10, 11]]).any()
    clean = ops.get(Q8_GEMM.op).reference(Q8_GEMM, x=x[[0, 1]], w=inputs["w"], w_scale=inputs["w_scale"])["y"]
    np.testing.assert_allclose(y[[0, 1]], clean, rtol=1e-5, atol=1e-5 * np.abs(clean).max())


INT8_CACHE_ATTENTION = [make_spec("attention_prefill", hq=4, hkv=2, d=64, kv="int8"),
                        make_spec("attention_decode", hq=8, hkv=2, d=64, kv="int8")]


@pytest.mark.parametrize("spec", INT8_CACHE_ATTENTION, ids=lambda spec: spec.name)
def test_a_nan_query_poisons_only_its_outputs_on_an_int8_cache(build_library, spec):
    """With VNNI the scores of an int8 cache are integer dot products of the query rounded by its
    absolute maximum: a NaN in a query must still make exactly that query's outputs NaN."""
    directory = build_library("x86-avx512", INT8_CACHE_ATTENTION)
    ok, reason = host.native_ok(runtime.read_manifest(directory)["target"])
    if not ok:
        pytest.skip(f"x86-avx512 is compile-only on this machine: {reason}")
    op = ops.get(spec.op)
    sizes = {"S": 9} if spec.op == "attention_prefill" else {"L": 600}
    inputs = op.random_inputs(spec, sizes, np.random.default_rng(3))
    inputs["q"][(1, 6, 0) if spec.op == "attention_prefill" else (1, 0)] = NAN
    with runtime.load(directory) as library:
        kernel = library[spec.name]
        layout = layouts.from_json(kernel.variant_for(sizes)["layout"])
        assert attention.query_dot(spec, layout) == "avx512_vnni"
        out = kernel(**inputs)
    with np.errstate(invalid="ignore"):
        ref = op.layout_reference(spec, layout, **inputs)["o"]
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert np.isnan(ref).any() and not np.isnan(ref).all()
    finite = np.isfinite(ref)
    np.testing.assert_allclose(out[finite], ref[finite], atol=2e-5, rtol=2e-5)

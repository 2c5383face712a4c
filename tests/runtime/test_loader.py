"""The loader's contract: arguments checked against the manifest (ValueError naming the argument),
artifacts checked against their sha256, and no dependency on the compiler."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import coverage_specs

from compiler import runtime

GEMM = "qgemm_w8a8_n64_k128"


@pytest.fixture(scope="module")
def build_dir(build_library):
    return build_library("x86", coverage_specs())


@pytest.fixture(scope="module")
def lib(build_dir):
    with runtime.load(build_dir) as library:
        yield library


@pytest.fixture
def gemm_inputs(lib):
    rng = np.random.default_rng(1)
    weights = lib[GEMM].pack(w=rng.integers(-127, 128, (64, 128), dtype=np.int8),
                             w_scale=np.full(64, 0.01, np.float32))
    x = rng.integers(-127, 128, (3, 128), dtype=np.int8)
    return {"x": x, "x_scale": np.full(3, 0.02, np.float32), **weights}


@pytest.mark.native
def test_lists_and_indexes_kernels(lib):
    assert set(lib.kernels) == {s.name for s in coverage_specs()}
    assert lib[GEMM] is getattr(lib, GEMM)
    assert lib[GEMM].spec["op"] == "qgemm_w8a8"
    with pytest.raises(KeyError, match="no kernel 'nope'"):
        lib["nope"]
    with pytest.raises(AttributeError):
        lib.nope


@pytest.mark.native
@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.pop("x_scale"), "missing argument.*'x_scale'"),
    (lambda a: a.update(bias=np.zeros(64, np.float32)), "unexpected argument.*'bias'"),
    (lambda a: a.update(x=a["x"].astype(np.int16)), "'x' must have dtype int8"),
    (lambda a: a.update(x=a["x"][:, :64].copy()), "'x' must have shape"),
    (lambda a: a.update(x_scale=np.ones(4, np.float32)), "'x_scale' axis 0 has M=4"),
    (lambda a: a.update(x=np.asfortranarray(a["x"])), "'x' is not C-contiguous"),
    (lambda a: a.update(x=a["x"].tolist()), "'x' must be a numpy array or a DLPack tensor"),
    (lambda a: a.update(x=a["x"][None]), "'x' must have 2 dims"),
    (lambda a: a.update(x=np.zeros((0, 128), np.int8), x_scale=np.zeros(0, np.float32)), "M must be at least 1"),
])
def test_bad_arguments_are_value_errors_naming_the_argument(lib, gemm_inputs, mutate, message):
    mutate(gemm_inputs)
    with pytest.raises(ValueError, match=message):
        lib[GEMM](**gemm_inputs)


@pytest.mark.native
def test_pack_checks_logical_weights(lib):
    kernel = lib["qgemm_w4a8_g32_n64_k256"]
    scale = np.ones((64, 8), np.float32)
    with pytest.raises(ValueError, match=r"'w' has values outside \[-8, 7\]"):
        kernel.pack(w=np.full((64, 256), 8, np.int8), w_scale=scale)
    with pytest.raises(ValueError, match="'w' must have shape"):
        kernel.pack(w=np.zeros((64, 128), np.int8), w_scale=scale)
    with pytest.raises(ValueError, match="missing argument.*'w_scale'"):
        kernel.pack(w=np.zeros((64, 256), np.int8))


@pytest.mark.native
def test_gguf_block_scales_are_stored_as_float16(lib):
    """The q8 forms keep GGUF's fp16 scales (and Q4_1's minimum m = w_min - 8 w_scale) in float16,
    and refuse a value float16 would round rather than change the model."""
    kernel = lib["qgemm_w4a8_g32_min_q8_1_rmsnorm1em05_n64_k128"]
    w, norm_w = np.zeros((64, 128), np.int8), np.ones(128, np.float32)
    scale, m = np.full((64, 4), 0.0123, np.float16), np.full((64, 4), -0.0456, np.float16)
    w_scale = scale.astype(np.float32)
    packed = kernel.pack(w=w, w_scale=w_scale, w_min=m.astype(np.float32) + 8 * w_scale, norm_w=norm_w)
    assert packed["w_scale"].dtype == np.float16 and packed["w_min"].dtype == np.float16
    np.testing.assert_array_equal(packed["w_scale"], scale.T)
    np.testing.assert_array_equal(packed["w_min"], m.T)
    with pytest.raises(ValueError, match="'w_scale' is stored as float16.*not float16 numbers"):
        kernel.pack(w=w, w_scale=np.full((64, 4), 0.01, np.float32), w_min=np.zeros((64, 4), np.float32),
                    norm_w=norm_w)


@pytest.mark.native
def test_misaligned_and_dlpack_inputs_give_the_same_result(lib, gemm_inputs):
    expected = lib[GEMM](**gemm_inputs)
    raw = np.empty(gemm_inputs["x"].nbytes + 64, np.uint8)
    offset = 1 + (-raw.ctypes.data) % 64  # deliberately not 64-byte aligned
    misaligned = raw[offset:offset + gemm_inputs["x"].nbytes].view(np.int8).reshape(gemm_inputs["x"].shape)
    misaligned[...] = gemm_inputs["x"]

    class DLPackOnly:  # any producer of the DLPack protocol, not a numpy array
        def __init__(self, array):
            self._array = array

        def __dlpack__(self, **kwargs):
            return self._array.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self._array.__dlpack_device__()

    inputs = {**gemm_inputs, "x": misaligned, "x_scale": DLPackOnly(gemm_inputs["x_scale"])}
    np.testing.assert_array_equal(lib[GEMM](**inputs), expected)


@pytest.mark.native
def test_refuses_an_artifact_whose_hash_differs(build_dir, tmp_path):
    copy = tmp_path / "lib"
    shutil.copytree(build_dir, copy)
    with open(copy / "kernels.so", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(runtime.LoaderError, match="does not match the sha256"):
        runtime.load(copy)


@pytest.mark.native
def test_refuses_unknown_schema_version(build_dir, tmp_path):
    copy = tmp_path / "lib"
    shutil.copytree(build_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(runtime.LoaderError, match="schema version 99"):
        runtime.load(copy)


@pytest.mark.unit
def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(runtime.LoaderError, match="no manifest.json"):
        runtime.load(tmp_path)


@pytest.mark.native
def test_foreign_isa_is_refused_when_emulation_is_off(build_library):
    with pytest.raises(runtime.LoaderError, match="cannot run arm natively"):
        runtime.load(build_library("arm", coverage_specs()), emulate=False)


@pytest.mark.native
def test_loader_needs_only_numpy_and_the_runtime(build_dir):
    """Loading and calling a kernel must not import TVM's compiler or our compiler modules, nor any
    third-party package but numpy and tvm_ffi (and what those two import themselves)."""
    script = f"""
import sys, numpy as np, tvm_ffi
tvm_ffi.from_dlpack(np.zeros(1))  # what numpy and tvm_ffi import themselves (tvm_ffi may pull in torch)
before = set(sys.modules)
from compiler import runtime
lib = runtime.load({str(build_dir)!r})
k = lib["quantize_per_token_k100"]
q, s = k(x=np.ones((2, 100), np.float32))
assert q.dtype == np.int8 and s.shape == (2,)
ours = ("compiler", "compiler.runtime")
bad = sorted(m for m in set(sys.modules) - before
             if not (m in ours or m.startswith("compiler.runtime.") or m.split(".")[0] in sys.stdlib_module_names))
print(bad)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


@pytest.mark.native
def test_length_buckets_pick_the_decode_variant(lib):
    kernel = lib[GEMM]
    assert [v["bucket"] for v in kernel.spec["variants"]] == [{"M": 1}, {}]
    assert kernel.variant_for({"M": 1})["symbol"] == f"{GEMM}__m1"
    assert kernel.variant_for({"M": 2})["symbol"] == GEMM
    decode = lib["attention_decode_hq4_hkv4_d128"]
    assert decode.variant_for({"L": 1})["symbol"].endswith("__l1to512")
    assert decode.variant_for({"L": 512})["symbol"].endswith("__l1to512")
    assert decode.variant_for({"L": 513})["bucket"] == {}


@pytest.mark.native
def test_each_variant_records_its_own_layout(lib):
    """The decode variant of short caches splits the keys finer than the any-length one, and the
    one-token GEMV computes one row where the GEMM tiles rows: each variant's manifest entry says
    what it uses; the kernel's layout keeps only what its variants share."""
    decode = lib["attention_decode_hq4_hkv4_d128"]
    short, long = (v["layout"]["split_len"] for v in decode.spec["variants"])
    assert short < long and "split_len" not in decode.spec["layout"]
    gemv, gemm = (v["layout"]["m_tile"] for v in lib[GEMM].spec["variants"])
    assert gemv == 1 < gemm and "m_tile" not in lib[GEMM].spec["layout"]


@pytest.mark.native
def test_bound_kernels_match_plain_calls_and_check_their_inputs(lib, gemm_inputs):
    kernel = lib[GEMM]
    weights = {name: gemm_inputs[name] for name in ("w", "w_scale")}
    bound = kernel.bind(**weights)
    activations = {"x": gemm_inputs["x"], "x_scale": gemm_inputs["x_scale"]}
    np.testing.assert_array_equal(bound(**activations), kernel(**gemm_inputs))
    np.testing.assert_array_equal(bound(x=activations["x"][:1], x_scale=activations["x_scale"][:1]),
                                  kernel(**{**gemm_inputs, "x": gemm_inputs["x"][:1], "x_scale": gemm_inputs["x_scale"][:1]}))
    assert bound.nbytes == sum(w.nbytes for w in weights.values())
    with pytest.raises(ValueError, match="'x' must have dtype int8"):
        bound(x=activations["x"].astype(np.int16), x_scale=activations["x_scale"])
    with pytest.raises(ValueError, match="x_scale"):
        bound(x=activations["x"])
    with pytest.raises(ValueError, match="w_scale"):
        kernel.bind(w=weights["w"])
    with pytest.raises(ValueError, match="'x_scale' axis 0 has M=3, but another argument has M=2"):
        bound(x=activations["x"][:2], x_scale=activations["x_scale"])


@pytest.mark.native
def test_prepared_calls_rerun_on_their_arrays(lib, gemm_inputs):
    """A prepared call reads its inputs' current contents and writes the same output array; what it
    cannot hand to the kernel as is (misaligned memory, a wrong output) is refused when prepared."""
    bound = lib[GEMM].bind(w=gemm_inputs["w"], w_scale=gemm_inputs["w_scale"])
    x, x_scale = runtime.empty((3, 128), np.int8), runtime.empty((3,), np.float32)
    x[...], x_scale[...] = gemm_inputs["x"], gemm_inputs["x_scale"]
    call = bound.prepare(x=x, x_scale=x_scale)
    (y,) = call.outputs
    call()
    np.testing.assert_array_equal(y, bound(x=x, x_scale=x_scale))
    x[...] = np.flip(gemm_inputs["x"], 0)
    call()
    np.testing.assert_array_equal(y, bound(x=x, x_scale=x_scale))
    out = runtime.empty((3, 64), np.float32)
    bound.prepare(out, x=x, x_scale=x_scale)()
    np.testing.assert_array_equal(out, y)
    with pytest.raises(ValueError, match="output 'y' must be float32 \\(3, 64\\).*got float32 \\(2, 64\\)"):
        bound.prepare(runtime.empty((2, 64), np.float32), x=x, x_scale=x_scale)
    with pytest.raises(ValueError, match="'y' is not 64-byte aligned"):
        bound.prepare(runtime.empty((3 * 64 + 1,), np.float32)[1:].reshape(3, 64), x=x, x_scale=x_scale)
    with pytest.raises(ValueError, match="'x' is not 64-byte aligned"):
        bound.prepare(x=runtime.empty((3 * 128 + 1,), np.int8)[1:].reshape(3, 128), x_scale=x_scale)
    with pytest.raises(ValueError, match="missing argument.*'x_scale'"):
        bound.prepare(x=x)
    with pytest.raises(ValueError, match="output 'y' overlaps an input"):
        shared = runtime.empty((3 * 64,), np.float32)
        bound.prepare(shared.reshape(3, 64), x=x, x_scale=shared[:3])


@pytest.mark.native
def test_only_strided_arguments_take_views(lib):
    name = next(k for k in lib.kernels if k.startswith("attention_decode"))
    kernel = lib[name]
    hq, d = kernel.spec["args"][0]["shape"]
    hkv = kernel.spec["args"][1]["shape"][0]
    rng = np.random.default_rng(0)
    cache = rng.standard_normal((2, hkv, 64, d)).astype(np.float32)
    q = rng.standard_normal((hq, d)).astype(np.float32)
    view = kernel(q=q, k_cache=cache[0, :, :40], v_cache=cache[1, :, :40])
    copy = kernel(q=q, k_cache=np.ascontiguousarray(cache[0, :, :40]), v_cache=np.ascontiguousarray(cache[1, :, :40]))
    np.testing.assert_array_equal(view, copy)
    keys_transposed = np.ascontiguousarray(cache[0, :, :40].transpose(0, 2, 1)).transpose(0, 2, 1)  # inner axes swapped
    with pytest.raises(ValueError, match="only its outer axis may be strided"):
        kernel(q=q, k_cache=keys_transposed, v_cache=cache[1, :, :40])
    with pytest.raises(ValueError, match="'q' is not C-contiguous"):
        kernel(q=np.asfortranarray(np.stack([q, q], 2)[:, :, 0]), k_cache=cache[0, :, :40], v_cache=cache[1, :, :40])


@pytest.mark.native
def test_prefill_over_a_cached_prefix_takes_views_and_needs_its_rows_in_the_cache(lib):
    """attention_prefill's S new rows sit at the end of the L cached keys (a view of a longer
    cache); a cache shorter than the new rows is refused by name, before the kernel runs."""
    name = next(k for k in lib.kernels if k.startswith("attention_prefill"))
    kernel = lib[name]
    hq, _, d = kernel.spec["args"][0]["shape"]
    hkv = kernel.spec["args"][1]["shape"][0]
    rng = np.random.default_rng(0)
    cache = rng.standard_normal((2, hkv, 64, d)).astype(np.float32)
    q = rng.standard_normal((hq, 5, d)).astype(np.float32)
    view = kernel(q=q, k_cache=cache[0, :, :40], v_cache=cache[1, :, :40])
    copy = kernel(q=q, k_cache=np.ascontiguousarray(cache[0, :, :40]), v_cache=np.ascontiguousarray(cache[1, :, :40]))
    np.testing.assert_array_equal(view, copy)
    with pytest.raises(ValueError, match="L=4 must be at least S=5"):
        kernel(q=q, k_cache=cache[0, :, :4], v_cache=cache[1, :, :4])

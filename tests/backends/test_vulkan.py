"""Vulkan builds: every kernel of every Vulkan target runs on a real Vulkan driver (here Mesa's
lavapipe) through the loader's dispatcher and matches numpy; every shader passes spirv-val; a kernel
needing what the device lacks is refused by name."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import assert_matches, coverage_specs, require_emulator, require_spirv_tools
from kernel_cases import cases

from compiler import runtime
from compiler.runtime.drivers.vulkan_device import Device
from compiler.ops.attention import attention_reference
from schedules.gemm_facts import float_weights, int4_float_weights

VULKAN_TARGETS = ("vulkan", "vulkan-mali", "vulkan-adreno", "vulkan-int8dot")
LENGTHS = {"M": (1, 5, 33), "S": (1, 37, 300), "L": (1, 33, 2048), "prefix": ((1, 33), (37, 300))}


@pytest.fixture(scope="module", params=VULKAN_TARGETS)
def vulkan_build(request, build_library):
    require_spirv_tools()
    return request.param, build_library(request.param, coverage_specs())


@pytest.fixture(scope="module")
def vulkan_run_build(vulkan_build):
    """A build that the tests then run: on this machine's Vulkan device (lavapipe)."""
    require_emulator("spirv")
    return vulkan_build


@pytest.fixture(scope="module")
def vulkan_library(vulkan_run_build):
    library = runtime.load(vulkan_run_build[1])
    yield library
    library.close()


@pytest.mark.emulated
@pytest.mark.parametrize("spec, sizes", cases(coverage_specs(), LENGTHS))
def test_vulkan_kernel_matches_numpy(vulkan_library, spec, sizes):
    assert_matches(vulkan_library[spec.name], sizes, seed=sum(sizes.values()))


@pytest.mark.compile
def test_every_shader_passes_spirv_val(vulkan_build):
    name, directory = vulkan_build
    manifest = json.loads((directory / "manifest.json").read_text())
    version = manifest["target"]["gpu"]["api_version"]
    shaders = sorted((directory / "shaders").glob("*.spv"))
    launched = {launch["shader"] for entry in manifest["kernels"].values() for variant in entry["variants"]
                for launch in variant["vulkan"]["launches"]}
    assert {s.stem for s in shaders} == launched
    for shader in shaders:
        result = subprocess.run(["spirv-val", "--target-env", f"vulkan{version}", str(shader)],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{shader.name}: {result.stdout}{result.stderr}"


@pytest.mark.emulated
def test_decode_reads_a_view_of_a_longer_cache(vulkan_library):
    spec = next(s for s in coverage_specs() if s.op == "attention_decode")
    hq, hkv, d = spec.dim("hq"), spec.dim("hkv"), spec.dim("d")
    rng = np.random.default_rng(3)
    k_cache = rng.standard_normal((hkv, 512, d)).astype(np.float32)
    v_cache = rng.standard_normal((hkv, 512, d)).astype(np.float32)
    q = rng.standard_normal((hq, d)).astype(np.float32)
    out = vulkan_library[spec.name](q=q, k_cache=k_cache[:, :77], v_cache=v_cache[:, :77])
    ref = attention_reference(q[:, None], k_cache[:, :77], v_cache[:, :77], causal_offset=76)[:, 0]
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=2e-5)


@pytest.mark.emulated
def test_decode_reads_a_device_array_in_place(vulkan_run_build):
    """A KV cache made with lib.device_array lives in device memory: attention decode reads views
    of it (here of the second layer, at a descriptor offset) without copying it, and matches numpy."""
    spec = next(s for s in coverage_specs() if s.op == "attention_decode")
    hq, hkv, d = spec.dim("hq"), spec.dim("hkv"), spec.dim("d")
    rng = np.random.default_rng(4)
    values = rng.standard_normal((2, 2, hkv, 512, d)).astype(np.float32)  # [k/v, layer, ...]
    q = rng.standard_normal((hq, d)).astype(np.float32)
    library = runtime.load(vulkan_run_build[1])
    with library:
        k_cache, v_cache = (library.device_array(values.shape[1:], np.float32) for _ in range(2))
        k_cache[...] = values[0]
        v_cache[:, :, :100] = values[1, :, :, :100]  # written as a decoder does: a few rows at a time
        v_cache[:, :, 100:] = values[1, :, :, 100:]
        before = library._driver.uploaded_bytes
        out = library[spec.name](q=q, k_cache=k_cache[1, :, :77], v_cache=v_cache[1, :, :77])
        assert library._driver.uploaded_bytes - before == q.nbytes  # the cache stayed on the device
        np.testing.assert_array_equal(v_cache.numpy(), values[1])
    ref = attention_reference(q[:, None], values[0, 1, :, :77], values[1, 1, :, :77], causal_offset=76)[:, 0]
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=2e-5)
    with pytest.raises(runtime.LoaderError, match="closed"):
        k_cache[0, 0, 0] = 1.0


@pytest.mark.emulated
def test_kernel_needing_a_missing_feature_is_refused(vulkan_run_build, monkeypatch):
    """A device without 8-bit storage (as some older GPUs are) must refuse int8 kernels by name."""
    real = Device._query_features
    monkeypatch.setattr(Device, "_query_features",
                        lambda self: real(self) - {"storageBuffer8BitAccess", "shaderInt8"})
    library = runtime.load(vulkan_run_build[1])
    try:
        spec = next(s for s in coverage_specs() if s.op == "qgemm_w8a8")
        kernel = library[spec.name]
        weights = {"w": np.ones((spec.dim("n"), spec.dim("k")), np.int8),
                   "w_scale": np.ones(spec.dim("n"), np.float32)}
        with pytest.raises(runtime.LoaderError, match="storageBuffer8BitAccess"):
            kernel(x=np.ones((1, spec.dim("k")), np.int8), x_scale=np.ones(1, np.float32), **kernel.pack(**weights))
    finally:
        library.close()


@pytest.mark.emulated
def test_shared_memory_beyond_the_device_limit_is_refused(vulkan_run_build, tmp_path):
    directory = tmp_path / "build"
    shutil.copytree(vulkan_run_build[1], directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    spec = next(s for s in coverage_specs() if s.op == "attention_prefill")
    for variant in manifest["kernels"][spec.name]["variants"]:
        variant["vulkan"]["launches"][0]["shared_bytes"] = 1 << 30
    (directory / "manifest.json").write_text(json.dumps(manifest))
    library = runtime.load(directory)
    try:
        d = spec.dim("d")
        q = np.zeros((spec.dim("hq"), 4, d), np.float32)
        kv = np.zeros((spec.dim("hkv"), 4, d), np.float32)
        with pytest.raises(runtime.LoaderError, match="shared memory"):
            library[spec.name](q=q, k_cache=kv, v_cache=kv)
    finally:
        library.close()


@pytest.mark.emulated
def test_grid_wider_than_the_device_limit_folds_into_rows(build_library):
    """A prefill-sized fused QKV launches more than 65535 workgroups along x in one of its kernels:
    the shader folds them into rows and the result is still exact."""
    require_emulator("spirv")
    spec = next(s for s in coverage_specs() if s.op == "qkv_proj" and s.opt("quant") == "w4a8")
    library = runtime.load(build_library("vulkan-mali", coverage_specs()))
    try:
        manifest = library.manifest["kernels"][spec.name]
        assert any(launch["fold_x"] for variant in manifest["variants"] for launch in variant["vulkan"]["launches"])
        assert_matches(library[spec.name], {"M": 2048}, seed=7)
    finally:
        library.close()


@pytest.mark.emulated
def test_a_llama_gguf_runs_on_the_vulkan_build(tmp_path):
    """SmolLM2's first two layers (Q4_1, Q8_0 head) decoded with every GEMM and attention as a SPIR-V
    kernel on lavapipe: the greedy tokens of the x86 build, and its logits within fp16's error (Mali
    multiplies the float-activation GEMMs' products in fp16)."""
    require_emulator("spirv")
    from gguf_variants import two_layer_greedy

    from compiler.ops.base import OpDef

    results = two_layer_greedy(tmp_path, ("x86", "vulkan-mali"))
    assert results["vulkan-mali"][0] == results["x86"][0]
    reference = results["x86"][1]
    atol = OpDef.fp16_tolerance[0] * np.abs(reference).max()
    np.testing.assert_allclose(results["vulkan-mali"][1], reference, atol=atol, rtol=0)


@pytest.mark.emulated
def test_tuning_measures_through_the_dispatcher_and_builds_replay_it(tmp_path):
    """MetaSchedule tunes the GEMV's and the GEMM's knobs with candidates compiled to SPIR-V and timed
    on the Vulkan device; the build replays the best records and still matches numpy; tune-matrix
    races the default schedule against them on the device."""
    require_emulator("spirv")
    import targets
    from compiler import build
    from compiler.tuning import database, matrix, search
    from compiler.specs import make_spec

    target = targets.get("vulkan-mali")
    spec = make_spec("qgemm_w4a16", n=64, k=256, group=64)
    device = database.host_device(target)
    run = search.tune([spec], target, device=device, logs_root=tmp_path / "logs", trials=8, race=False,
                      progress=lambda _: None)  # builds replay the records (no race with the defaults)
    assert sorted(str(task.bucket) for task in run.tasks) == ["{'M': 1}", "{}"]  # the GEMV and the GEMM
    assert all(task.trials > task.failures and task.best_secs > 0 for task in run.tasks)
    out = tmp_path / "lib"
    build.build([spec], target, out, toolchain=None, tuning_dir=run.directory, progress=lambda _: None)
    manifest = json.loads((out / "manifest.json").read_text())
    gemv, gemm = manifest["kernels"][spec.name]["variants"]
    assert gemv["tuning"] != "default" and gemm["tuning"] != "default"
    assert gemv["knobs"]["gemv_cols"] * gemv["knobs"]["gemv_threads"] <= target.gpu.max_threads
    assert {"gemm_tx", "gemm_ty", "gemm_rows", "gemm_cols"} <= gemm["knobs"].keys()
    with runtime.load(out) as library:
        for m in (1, 7):
            assert_matches(library[spec.name], {"M": m}, seed=m)
    # (matrix() itself refuses a tuned schedule whose output differs from the default's)
    result = matrix.matrix([spec], target, matrix.devices_for(target, tmp_path / "logs", [device]), rounds=2,
                           progress=lambda _: None)
    assert result["kind"] == "measured" and len(result["rows"]) == 2
    assert all(set(row["seconds"][device]) == {"default", device} for row in result["rows"])
    assert result["summary"][device]["variants"] == 2 and result["summary"][device][device] > 0


@pytest.mark.compile
def test_int8_dot_product_target_emits_opsdot(build_library):
    """vulkan-int8dot's int8 GEMMs (int4 weights unpacked in registers first) run OpSDotKHR on packed
    int8x4 (checked in the SPIR-V), and a device without the feature refuses them by name."""
    require_spirv_tools()
    directory = build_library("vulkan-int8dot", coverage_specs())
    manifest = json.loads((directory / "manifest.json").read_text())
    for spec in coverage_specs():
        if spec.op not in ("qgemm_w8a8", "qgemm_w4a8"):
            continue
        for variant in manifest["kernels"][spec.name]["variants"]:
            assert "shaderIntegerDotProduct" in variant["vulkan"]["features"]
            text = spirv_text(directory, variant)
            assert "OpSDot" in text and "PackedVectorFormat4x8Bit" in text, variant["symbol"]


def spirv_text(directory, variant) -> str:
    return "".join(subprocess.run(["spirv-dis", str(directory / "shaders" / f"{launch['shader']}.spv")],
                                  capture_output=True, text=True, check=True).stdout
                   for launch in variant["vulkan"]["launches"])


@pytest.mark.compile
def test_decode_gemvs_load_weight_bytes_as_vectors(build_library):
    """The GEMVs for float activations (W4A16, W8A16) give each thread 4 adjacent columns and read
    their weight bytes with one vector load through a vector view of the weight's binding (Mali's
    vec4 access)."""
    require_spirv_tools()
    directory = build_library("vulkan-mali", coverage_specs())
    manifest = json.loads((directory / "manifest.json").read_text())
    checked = 0
    for spec in coverage_specs():
        quant = spec.opt("quant") if spec.op == "qkv_proj" else spec.op
        if quant not in ("qgemm_w4a16", "w4a16", "qgemm_w8a16", "w8a16"):
            continue
        gemv = next(v for v in manifest["kernels"][spec.name]["variants"] if v["bucket"] == {"M": 1})
        text = spirv_text(directory, gemv)
        assert "OpTypeRuntimeArray %v4char" in text and re.search(r"= OpLoad %v4char", text), gemv["symbol"]
        checked += 1
    assert checked >= 7


@pytest.mark.compile
@pytest.mark.parametrize("name, fp16", [("vulkan-mali", True), ("vulkan", False)])
def test_float_gemms_multiply_in_fp16_where_the_target_has_it(build_library, name, fp16):
    """Targets with fast fp16 (Mali, Adreno) multiply the W4A16 GEMMs' products in fp16 and
    accumulate in fp32 (checked in the SPIR-V: half-precision multiplies, and the device feature
    they need); W8A16 (whose products would overflow fp16) and the portable target keep fp32."""
    require_spirv_tools()
    directory = build_library(name, coverage_specs())
    manifest = json.loads((directory / "manifest.json").read_text())
    for spec in coverage_specs():
        if not float_weights(spec):
            continue
        in_fp16 = fp16 and int4_float_weights(spec)
        for variant in manifest["kernels"][spec.name]["variants"]:
            text = spirv_text(directory, variant)
            half = re.findall(r"^\s*(%\w+) = OpTypeFloat 16$", text, re.M)
            half_products = [t for t in half if re.search(rf"= OpFMul {t} ", text)]
            assert bool(half_products) == in_fp16, variant["symbol"]
            assert not in_fp16 or "shaderFloat16" in variant["vulkan"]["features"], variant["symbol"]


@pytest.mark.emulated
def test_a_device_without_integer_dot_products_refuses_the_int8dot_build(build_library, monkeypatch):
    require_emulator("spirv")
    real = Device._query_features
    monkeypatch.setattr(Device, "_query_features", lambda self: real(self) - {"shaderIntegerDotProduct"})
    spec = next(s for s in coverage_specs() if s.op == "qgemm_w8a8")
    with runtime.load(build_library("vulkan-int8dot", coverage_specs())) as library:
        kernel = library[spec.name]
        weights = kernel.pack(w=np.ones((spec.dim("n"), spec.dim("k")), np.int8), w_scale=np.ones(spec.dim("n"), np.float32))
        with pytest.raises(runtime.LoaderError, match="shaderIntegerDotProduct"):
            kernel(x=np.ones((1, spec.dim("k")), np.int8), x_scale=np.ones(1, np.float32), **weights)


@pytest.mark.compile
@pytest.mark.parametrize("op, options", [("qgemm_w4a16", {"group": 64, "min": True}),  # group scales
                                         ("qgemm_w8a8", {})])  # per-channel: one group
def test_every_gemm_knob_setting_replays_and_compiles(tmp_path, op, options):
    """The GEMM schedules' whole knob spaces (the tiled GEMM's tile heights x widths with the widest
    workgroup, with a dynamic M; the GEMV's columns x reduction threads), each reached as the
    tuner reaches it, by replaying the default trace with other decisions, lower to shaders
    glslang accepts."""
    require_spirv_tools()
    import itertools

    import tvm
    from tvm import s_tir

    import schedules
    import targets
    from compiler import ops
    from compiler.backends.vulkan import spirv
    from compiler.specs import make_spec

    target = targets.get("vulkan-adreno")
    spec = make_spec(op, n=64, k=256, **options)
    for bucket, fixed in (({}, {"gemm_tx": 64}), ({"M": 1}, {})):
        func = ops.get(spec.op).build(spec, schedules.layout(spec, target, bucket))
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        schedules.schedule(sch, spec, target, bucket)
        knobs = {}  # knob name -> (its SampleCategorical, candidates)
        for inst in sch.trace.insts:
            if inst.kind.name == "Annotate" and str(inst.attrs[0]).startswith(schedules.KNOB_PREFIX):
                sample = next(i for i in sch.trace.insts if i.outputs and i.outputs[0].same_as(inst.inputs[1]))
                knobs[str(inst.attrs[0])[len(schedules.KNOB_PREFIX):]] = (sample, [int(c) for c in sample.attrs[0]])
        names = [n for n in knobs if n not in fixed]
        for values in itertools.product(*(knobs[n][1] for n in names)):
            trace = sch.trace
            for name, value in {**dict(zip(names, values)), **fixed}.items():
                sample, candidates = knobs[name]
                trace = trace.with_decision(sample, candidates.index(value), remove_postproc=True)
            replayed = s_tir.Schedule(tvm.IRModule({"main": func}))
            trace.apply_to_schedule(replayed, remove_postproc=True)
            assert schedules.knobs(replayed) == {**dict(zip(names, values)), **fixed}
            spirv.build({"main": replayed.mod["main"].with_attr("global_symbol", "main")}, target.tvm_target(),
                         target.gpu.api_version, tmp_path, progress=lambda _: None)

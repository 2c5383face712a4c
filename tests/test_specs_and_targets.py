"""Specs, presets and targets are plain data with stable names and clear validation errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import schedules
import targets
from compiler import models, ops
from compiler.specs import make_spec

pytestmark = pytest.mark.unit


def test_spec_names_are_stable_and_readable():
    assert make_spec("qgemm_w4a16", n=2048, k=2048).name == "qgemm_w4a16_g128_n2048_k2048"
    assert make_spec("qgemm_w8a8", n=896, k=896, bias=True).name == "qgemm_w8a8_bias_n896_k896"
    assert make_spec("qgemm_w8a8", n=896, k=896, group=32).name == "qgemm_w8a8_g32_n896_k896"
    assert make_spec("qgemm_w4a16", n=64, k=64, group=32, zero=True, act="float16").name == \
        "qgemm_w4a16_g32_asym_f16_n64_k64"
    assert make_spec("qkv_proj", hq=14, hkv=2, d=64, k=896, bias=True, rope_theta=1e6).name == \
        "qkv_proj_w8a8_bias_rope_hq14_hkv2_d64_k896_theta1000000"
    assert make_spec("attention_decode", hq=32, hkv=8, d=128).name == "attention_decode_hq32_hkv8_d128"


@pytest.mark.parametrize("op, kw, message", [
    ("qgemm_w4a16", dict(n=64, k=100), "k=100 must be a multiple of 128"),
    ("qgemm_w8a8", dict(n=64, k=30), "k=30 must be a multiple of 4"),
    ("qgemm_w8a8", dict(n=64), "missing dim 'k'"),
    ("qgemm_w8a8", dict(n=64, k=64, zero=True), "unknown parameter"),
    ("qgemm_w8a8", dict(n=64, k=64, group=48), "group"),
    ("qgemm_w8a8", dict(n=64, k=96, group=64), "k=96 must be a multiple of 64"),
    ("qgemm_w4a8", dict(n=64, k=128, group=48), "option 'group' must be one of"),
    ("qgemm_w8a8", dict(n=-4, k=64), "must be a positive integer"),
    ("attention_prefill", dict(hq=6, hkv=4, d=64), "hq=6 must be a multiple of 4"),
    ("qkv_proj", dict(hq=4, hkv=2, d=64, k=64, quant="w8a8", zero=True), "zero=True .* needs quant='w4a16'"),
    ("qkv_proj", dict(hq=4, hkv=2, d=64, k=64, quant="w4a8", group=32, min=True), r"min=True.*needs .*act=q8_1"),
    ("qkv_proj", dict(hq=4, hkv=2, d=64, k=64, quant="w4a16", group=32, act="q8_0"), "act=q8_0 .* not w4a16"),
    ("qgemm_w4a8", dict(n=64, k=128, group=64, act="q8_0"), "weight group must be 32"),
    ("qgemm_w4a8", dict(n=64, k=128, group=32, act="q8_1"), r"act=q8_1 .*\(min=True\)"),
    ("qgemm_w8a8", dict(n=64, k=128, norm=1e-5), "norm .* need float activations"),
    ("nope", dict(), "unknown op 'nope'"),
])
def test_invalid_specs_are_rejected(op, kw, message):
    with pytest.raises(ValueError, match=message):
        make_spec(op, **kw)


@pytest.mark.parametrize("name", models.PRESETS)
def test_presets_give_every_op(name):
    specs = models.kernel_specs(models.preset(name))
    # W8A16 and the GGUF block forms serve GGUF files (`run`), not one of the presets' quantized forms
    assert {s.op for s in specs} == set(ops.names()) - {"qgemm_w8a16", "qgemm_gguf"}
    assert len({s.name for s in specs}) == len(specs)


def test_preset_shapes_are_real_models():
    qwen, llama, mistral = (models.preset(n) for n in ("qwen2.5-0.5b", "llama-3.2-1b", "mistral-7b"))
    assert (qwen.hidden, qwen.heads, qwen.kv_heads, qwen.head_dim) == (896, 14, 2, 64)
    assert (llama.hidden, llama.heads, llama.kv_heads, llama.head_dim) == (2048, 32, 8, 64)
    assert (mistral.hidden, mistral.heads, mistral.kv_heads, mistral.head_dim) == (4096, 32, 8, 128)


def test_targets_are_data():
    for target in targets.all_targets():
        if target.family == "gpu":
            gpu = target.gpu
            assert gpu.api == "vulkan" and gpu.subgroup_size <= gpu.max_threads and gpu.shared_memory_bytes >= 16384
            assert target.tvm_target().kind.name == "vulkan"
        else:
            assert target.family == "cpu" and target.vector_bits in (128, 256, 512, 1024)  # 1024: HVX 128B
    assert targets.get("vulkan-mali").gpu.subgroup_size == 16 and targets.get("vulkan-adreno").gpu.subgroup_size == 64
    assert targets.host().family == "cpu"
    assert targets.get("arm").int8_dot == "sdot"
    assert targets.get("arm-a53").int8_dot == "neon"
    assert "+i8mm" in targets.get("arm-i8mm").llvm["mattr"]
    assert targets.get("hexagon").int8_dot == "hvx_vrmpy" and targets.get("hexagon").emulator == "qemu-hexagon"
    assert targets.get("hexagon-v75").compile_only and targets.get("hexagon-v75").emulator is None
    with pytest.raises(ValueError, match="unknown target 'mips'.*known targets: arm"):
        targets.get("mips")


def test_layout_follows_target_facts():
    spec = make_spec("qgemm_w4a16", n=64, k=128)
    assert schedules.layout(spec, targets.get("x86")).n_tile == 16  # 2 x 8 fp32 lanes (AVX2)
    # NEON with ARMv8.2 FP16: products on half lanes, 2 x 8 of them; ARMv8.0: 2 x 4 fp32 lanes
    arm, a53 = schedules.layout(spec, targets.get("arm")), schedules.layout(spec, targets.get("arm-a53"))
    assert (arm.n_tile, arm.float_math) == (16, "float16") and (a53.n_tile, a53.float_math) == (8, "float32")
    assert schedules.layout(spec, targets.get("x86")).float_math == "float32"
    assert schedules.layout(make_spec("qgemm_w8a16", n=64, k=128), targets.get("arm")).float_math == "float32"


def test_sdot_weight_tiles_interleave_four_dot_tiles():
    """ARM's SDOT GEMMs pack 16-column weight tiles (four 4-channel SDOT tiles side by side) where N
    allows, else the instruction's own 4; the q8 model path's int4 weights are offset-binary."""
    arm = targets.get("arm")
    q8 = schedules.layout(make_spec("qgemm_w4a8", n=64, k=128, group=32, min=True, act="q8_1"), arm, {"M": 1})
    assert (q8.int8_dot, q8.n_tile, q8.k_tile, q8.int4_halves, q8.int4_unsigned) == ("sdot_unsigned", 16, 8, True, True)
    int8_act = schedules.layout(make_spec("qgemm_w4a8", n=64, k=128), arm)
    assert (int8_act.int8_dot, int8_act.n_tile, int8_act.int4_unsigned) == ("sdot", 16, False)
    assert schedules.layout(make_spec("qgemm_w8a8", n=68, k=128), arm).n_tile == 4  # 68: not a multiple of 16
    assert schedules.layout(make_spec("qgemm_w8a8", n=64, k=128), targets.get("x86")).n_tile == 8  # VPMADDWD's own


def test_prefill_unpacks_weights_once_on_sdot_only():
    """The any-length int4 (q8 and per-token int8 activations) GEMMs on SDOT read a scratch of
    unpacked bytes (Layout.weights_unpacked); the one-token GEMV, x86, int8 weights and targets
    without SDOT keep unpacking in registers; the packed form stays a choice."""
    spec = make_spec("qgemm_gguf", n=64, k=256, type="Q6_K", act="q8_0")
    arm = targets.get("arm")
    assert schedules.layout(spec, arm, {}).weights_unpacked
    assert not schedules.layout(spec, arm, {"M": 1}).weights_unpacked
    assert not schedules.layout(spec, targets.get("x86-avx512"), {}).weights_unpacked
    assert not schedules.layout(make_spec("qgemm_w4a8", n=64, k=128, group=32, act="q8_0"), targets.get("arm-a53"),
                                {}).weights_unpacked
    per_token = schedules.layout(make_spec("qgemm_w4a8", n=64, k=128), arm, {})  # int8 activations: signed halves
    assert (per_token.weights_unpacked, per_token.unpacked_form) == (True, "sdot")
    assert not schedules.layout(make_spec("qgemm_w4a8", n=64, k=128), targets.get("x86"), {}).weights_unpacked
    assert not schedules.layout(make_spec("qgemm_w8a8", n=64, k=128, group=32, act="q8_0"), arm, {}).weights_unpacked
    assert [c.weights_unpacked for c in schedules.layout_choices(spec, arm, {})] == [True, True, True, False, True]


def test_q8_prefill_with_i8mm_unpacks_into_smmla_tiles():
    """With i8mm (arm-i8mm) the any-length q8 GEMM on 4-, 5- and 6-bit weights unpacks into SMMLA's
    tiles (runs of 8 k per channel, 2 token rows a tile), SDOT's form a layout choice; its one-token
    GEMV and targets without i8mm keep SDOT's."""
    i8mm, arm = targets.get("arm-i8mm"), targets.get("arm")
    spec = make_spec("qgemm_w4a8", n=64, k=128, group=32, act="q8_0")
    layout = schedules.layout(spec, i8mm, {})
    assert (layout.weights_unpacked, layout.unpacked_form, layout.unpacked_k, layout.unpacked_rows) == (True, "smmla", 8, 2)
    assert not schedules.layout(spec, i8mm, {"M": 1}).weights_unpacked
    assert (schedules.layout(spec, arm, {}).unpacked_form, schedules.layout(spec, arm, {}).unpacked_k) == ("sdot_unsigned", 4)
    q6_k = make_spec("qgemm_gguf", n=64, k=256, type="Q6_K", act="q8_0")
    assert schedules.layout(q6_k, i8mm, {}).unpacked_form == "smmla"
    assert schedules.layout(q6_k, arm, {}).unpacked_form == "sdot_unsigned"
    forms = [c.unpacked_form for c in schedules.layout_choices(spec, i8mm, {}) if c.weights_unpacked]
    assert forms == ["smmla", "smmla", "smmla", "sdot_unsigned", "smmla"]


def test_q8_group_sums_are_biased_where_the_target_converts_slowly():
    """arm and arm-i8mm (SCVTF on 4 lanes: two uops on one pipe of their cores' models) make the q8
    GEMMs' float group sums by one subtraction from biased int32 sums, in both length variants, with
    the conversion a layout choice; arm-a55 and x86 convert; GEMMs on int8 or float activations never
    carry the flag. The starts are repeated per column on aarch64 only."""
    q8 = make_spec("qgemm_w4a8", n=64, k=128, group=32, act="q8_0")
    for name in ("arm", "arm-i8mm"):
        for bucket in ({}, {"M": 1}):
            layout = schedules.layout(q8, targets.get(name), bucket)
            assert layout.biased_sums and layout.lean_group_scaling, (name, bucket)
        assert not schedules.layout_choices(q8, targets.get(name), {})[-1].biased_sums
    a55 = schedules.layout(q8, targets.get("arm-a55"), {})
    assert not a55.biased_sums and a55.lean_group_scaling
    x86 = schedules.layout(q8, targets.get("x86-avx512"), {})
    assert not x86.biased_sums and not x86.lean_group_scaling
    arm = targets.get("arm")
    for other in (make_spec("qgemm_w4a8", n=64, k=128, group=32), make_spec("qgemm_w4a16", n=64, k=128, group=32)):
        assert not schedules.layout(other, arm, {}).biased_sums, other.name


def test_biased_sums_are_exact_over_their_range():
    """The bias's bits plus an int32 sum read as a float are exactly the bias plus the sum for every
    sum in (-2^22, 2^22), and a group whose sums could leave that range is refused."""
    from compiler.ops.group_sums import SUM_BIAS, SUM_BIAS_BITS, biased_sums_exact

    sums = np.array([-(2 ** 22) + 1, -32512, -1, 0, 1, 32512, 2 ** 22 - 1], np.int64)
    as_float = (SUM_BIAS_BITS + sums).astype(np.int32).view(np.float32)
    np.testing.assert_array_equal(as_float - np.float32(SUM_BIAS), sums.astype(np.float32))
    assert np.float32(SUM_BIAS).view(np.int32) == SUM_BIAS_BITS
    assert biased_sums_exact(32, 8) and biased_sums_exact(32, 6) and biased_sums_exact(256, 4)
    assert not biased_sums_exact(256, 8) and not biased_sums_exact(4864, 4)


def test_attention_tile_form_is_a_target_fact():
    """Keys in lanes where the target file says so (ARM, by the cycle model); x86 keeps the per-key
    tile (measured); never on a non-attention op's layout."""
    decode = make_spec("attention_decode", hq=9, hkv=3, d=64)
    assert schedules.layout(decode, targets.get("arm")).keys_in_lanes
    assert schedules.layout(decode, targets.get("arm-a53")).keys_in_lanes
    assert not schedules.layout(decode, targets.get("x86")).keys_in_lanes
    assert not schedules.layout(decode, targets.get("hexagon")).keys_in_lanes
    assert not schedules.layout(make_spec("qgemm_w8a8", n=64, k=128), targets.get("arm")).keys_in_lanes


def test_an_in_order_target_interleaves_the_fused_activation(tmp_path):
    """arm-a55 (activation_vectors = 2): the q8 GEMM's fused SwiGLU runs 2 independent SIMD vectors
    per unrolled step; arm leaves the loop to LLVM's vectoriser; a target file asking for fewer than
    one vector is refused by name."""
    from tvm import s_tir

    from compiler.build import lower_kernel

    spec = make_spec("qgemm_w4a8", n=64, k=128, group=32, act="q8_0", swiglu=True)
    for name, inner in (("arm-a55", [16, 2, 4]), ("arm", [128])):
        func, *_ = lower_kernel(spec, targets.get(name), {})
        sch = s_tir.Schedule(func)
        loops = [sch.get(loop) for loop in sch.get_loops(sch.get_sblock("xact"))][1:]
        assert [int(loop.extent) for loop in loops] == inner, name
    bad = tmp_path / "arm-a55.toml"
    bad.write_text(Path(targets.__file__).with_name("arm-a55.toml").read_text().replace(
        "activation_vectors = 2", "activation_vectors = 0"))
    with pytest.raises(ValueError, match="activation_vectors must be 1 or more"):
        targets._load(bad)


def test_the_half_table_holds_the_high_bytes_of_every_int4_weight():
    """schedules/cpu/intrinsics_half.py looks a weight's half up by its offset-binary nibble u and
    puts a zero byte under it: that is exact only if the half of u - 8 has a zero low byte."""
    from schedules.cpu.intrinsics_half import HALF_HIGH_BYTES

    bits = np.arange(-8, 8, dtype=np.float16).view(np.uint16)
    assert (bits & 0xFF == 0).all()
    assert tuple(int(b) for b in bits >> 8) == HALF_HIGH_BYTES

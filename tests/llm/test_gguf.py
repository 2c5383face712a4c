"""GGUF weight forms, the Q/K row order, file errors and sampling: fast, no model download."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.llm import model_kernels
from compiler.llm.gguf import GGUFError, GGUFModel, decode_blocks
from compiler.llm.sampling import Sampler

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("seed", [0, 1])
def test_blocks_decode_to_ggufs_own_dequantisation(kind, seed):
    import gguf

    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 9)), 32 * int(rng.integers(1, 7))
    values = (rng.standard_normal((n, k)) * rng.uniform(0.01, 3)).astype(np.float32)
    values[0, :32] += 5.0  # a block far from zero: Q4_1's minimum matters
    qtype = gguf.GGMLQuantizationType[kind]
    raw = gguf.quants.quantize(values, qtype)
    weight = decode_blocks(kind, raw, n, k)
    assert weight.w.dtype == np.int8 and weight.w.shape == (n, k)
    assert weight.w.min() >= (-128 if kind == "Q8_0" else -8) and weight.w.max() <= (127 if kind == "Q8_0" else 7)
    assert weight.arrays["w_scale"].shape == (n, k // 32)
    np.testing.assert_array_equal(weight.dequantize(), gguf.quants.dequantize(raw, qtype))


@pytest.mark.parametrize("kind", ["Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_5_6_bit_and_k_quant_blocks_decode_bit_for_bit(kind, seed):
    """Any block bytes (random, with finite float16 fields) decode to gguf's dequantisation bit for
    bit: every nibble, high bit, 6-bit scale and minimum lands where ggml puts it."""
    import gguf

    rng = np.random.default_rng(seed)
    qtype = gguf.GGMLQuantizationType[kind]
    per_block, size = gguf.GGML_QUANT_SIZES[qtype]
    n, blocks = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    raw = rng.integers(0, 256, (n, blocks, size), dtype=np.uint8)
    halves = {"Q5_0": (0,), "Q5_1": (0, 2), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}[kind]
    for start in halves:  # float16 fields: random finite values of either sign
        raw[..., start:start + 2] = rng.uniform(-0.05, 0.05, (n, blocks)).astype(np.float16)[..., None].view(np.uint8)
    raw = raw.reshape(n, blocks * size)
    weight = decode_blocks(kind, raw, n, blocks * per_block)
    assert weight.w.dtype == np.uint8 and weight.w.max() < 2 ** {"Q4_K": 4, "Q6_K": 6}.get(kind, 5)
    expected = gguf.quants.dequantize(raw, qtype)
    assert np.array_equal(weight.dequantize().view(np.uint32), expected.view(np.uint32))


def test_block_count_must_be_whole():
    with pytest.raises(GGUFError, match="K=48"):
        decode_blocks("Q8_0", np.zeros((2, 51), np.uint8), 2, 48)
    with pytest.raises(GGUFError, match="Q4_K weight with K=288"):
        decode_blocks("Q4_K", np.zeros((2, 162), np.uint8), 2, 288)
    with pytest.raises(GGUFError, match="not supported.*Q6_K"):
        decode_blocks("IQ4_NL", np.zeros((2, 18), np.uint8), 2, 32)


def test_rope_order_undoes_the_converters_permutation():
    heads, d = 3, 8
    hf_rows = np.arange(heads * d)
    # convert_hf_to_gguf.py's permute for Q/K: each head's halves interleaved
    gguf_rows = hf_rows.reshape(heads, 2, d // 2).swapaxes(1, 2).reshape(-1)
    np.testing.assert_array_equal(gguf_rows[model_kernels.rope_order(heads, d)], hf_rows)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(GGUFError, match="does not exist"):
        GGUFModel(tmp_path / "none.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(GGUFError, match="not a readable GGUF"):
        GGUFModel(bad)


def test_other_architectures_are_refused(tmp_path):
    import gguf

    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GGUFError, match="architecture 'gpt2' is not supported"):
        GGUFModel(path)


def test_sampler():
    logits = np.array([0.0, 5.0, 4.9, -3.0], np.float32)
    assert Sampler().pick(logits, np.random.default_rng(0)) == 1
    # top-p below the best token's mass keeps only it
    assert {Sampler(1.0, 0.3, 0).pick(logits, np.random.default_rng(s)) for s in range(20)} == {1}
    drawn = [Sampler(1.0, 1.0).pick(logits, np.random.default_rng(s)) for s in range(200)]
    assert set(drawn) >= {1, 2}  # the near-tie is sampled both ways
    seeded = Sampler(0.8, 0.9, seed=7)
    assert [seeded.pick(logits, r) for r in [seeded.rng()]] == [seeded.pick(logits, r) for r in [seeded.rng()]]
    with pytest.raises(ValueError, match="temperature"):
        Sampler(-1.0)
    with pytest.raises(ValueError, match="top_p"):
        Sampler(1.0, 0.0)


def test_5_and_6_bit_types_take_int8_activations_only_where_the_dot_product_has_their_form(tmp_path):
    """The q8 path: Q4_K on every target's int4 dot product, Q5_0 and Q6_K where the dot product has
    an intrinsic for values above a nibble (ARM SDOT, x86 byte products; not ARMv8.0's SMULL,
    Hexagon or Vulkan, where the int8 forms exist but the model path keeps the f32 ones)."""
    from compiler import build
    import targets
    from compiler import backends
    from compiler.specs import make_spec

    assert model_kernels.weight_form("Q5_0", "q8", "aarch64", "sdot") == \
        ("gguf", {"type": "Q5_0", "act": "q8_0", "q8_recip": "1/d"})
    assert model_kernels.weight_form("Q5_0", "q8", "x86_64", "avx512_vnni")[1]["act"] == "q8_0"
    assert model_kernels.weight_form("Q5_0", "q8", "aarch64", "neon") == ("gguf", {"type": "Q5_0"})
    assert model_kernels.weight_form("Q5_1", "q8", "hexagon", "hvx_vrmpy") == ("gguf", {"type": "Q5_1"})
    assert model_kernels.weight_form("Q4_K", "q8", "x86_64", "avx2_madd")[1]["act"] == "q8_1"
    assert model_kernels.weight_form("Q6_K", "q8", "aarch64", "sdot") == \
        ("gguf", {"type": "Q6_K", "act": "q8_0", "q8_recip": "1/d"})
    assert model_kernels.weight_form("Q6_K", "q8", "x86_64", "avx2_madd")[1]["act"] == "q8_0"
    assert model_kernels.weight_form("Q6_K", "q8", "aarch64", "neon") == ("gguf", {"type": "Q6_K"})
    assert model_kernels.weight_form("Q6_K", "q8", "vulkan", "spirv_dot4") == ("gguf", {"type": "Q6_K"})
    assert model_kernels.has_int8_form("Q5_1", "sdot") and not model_kernels.has_int8_form("Q5_1", "neon")
    # built anyway for a target without the intrinsic: the portable loop (tests/backends check it
    # against numpy), which the model path does not choose there (README: slower than the f32 form)
    target = targets.get("arm-a53")
    spec = make_spec("qgemm_gguf", n=64, k=256, type="Q6_K", act="q8_0")
    build.build([spec], target, tmp_path, toolchain=backends.toolchain_for(target), progress=lambda _: None)

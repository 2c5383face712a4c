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
    assert weight.scale.shape == (n, k // 32)
    np.testing.assert_array_equal(weight.dequantize(), gguf.quants.dequantize(raw, qtype))


def test_block_count_must_be_whole():
    with pytest.raises(GGUFError, match="K=48"):
        decode_blocks("Q8_0", np.zeros((2, 51), np.uint8), 2, 48)


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

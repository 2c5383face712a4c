"""Writers of small hostile inputs for the fuzz corpus, all generated in a test's tmp_path (no binary
file is committed): a tiny but valid llama GGUF that each case bends (one metadata key or tensor
changed, dropped or added), and helpers that write config and manifest files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DROP = object()  # as a value in `meta` / `tensors`: leave that key or tensor out of the file

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, LAYERS = 64, 2, 1, 32, 64, 1
# a byte-level BPE vocabulary ("Ġ" is the space byte) with two control tokens, so encode and chat work
TOKENS = [*"abcdefghijklmnopqrstuvwxyz", "Ġ", "hi", "Ġh", "<|im_start|>", "<|im_end|>", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
          *"0123456789.,", "Ċ"]
VOCAB = len(TOKENS)
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def base_metadata() -> dict:
    return {
        "llama.embedding_length": HIDDEN, "llama.block_count": LAYERS, "llama.feed_forward_length": FFN,
        "llama.attention.head_count": HEADS, "llama.attention.head_count_kv": KV_HEADS,
        "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.rope.freq_base": 10000.0,
        "llama.rope.dimension_count": HEAD_DIM, "general.name": "tiny",
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2", "tokenizer.ggml.tokens": TOKENS,
        "tokenizer.ggml.token_type": [3 if t.startswith("<|") else 1 for t in TOKENS],
        "tokenizer.ggml.merges": ["h i", "Ġ h"], "tokenizer.ggml.eos_token_id": TOKENS.index("<|im_end|>"),
        "tokenizer.chat_template": CHATML,
    }


def base_tensors() -> dict:
    """name -> (numpy shape [rows, K], GGUF type) of every tensor a tiny llama needs."""
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    tensors = {"token_embd.weight": ((VOCAB, HIDDEN), "Q8_0"), "output_norm.weight": ((HIDDEN,), "F32")}
    for layer in range(LAYERS):
        for name, shape, kind in (("attn_norm", (HIDDEN,), "F32"), ("attn_q", (q, HIDDEN), "Q8_0"),
                                  ("attn_k", (kv, HIDDEN), "Q8_0"), ("attn_v", (kv, HIDDEN), "Q8_0"),
                                  ("attn_output", (HIDDEN, q), "Q4_0"), ("ffn_norm", (HIDDEN,), "F32"),
                                  ("ffn_gate", (FFN, HIDDEN), "Q4_1"), ("ffn_up", (FFN, HIDDEN), "Q4_1"),
                                  ("ffn_down", (HIDDEN, FFN), "Q8_0")):
            tensors[f"blk.{layer}.{name}.weight"] = (shape, kind)
    return tensors


def _value_type(value):
    """The GGUF value type (and array item type) a Python value is written as."""
    import gguf

    t = gguf.GGUFValueType
    if isinstance(value, bool):
        return t.BOOL, None
    if isinstance(value, int):
        return (t.UINT32 if 0 <= value < 2**32 else t.INT64 if -2**63 <= value < 2**63 else t.UINT64), None
    if isinstance(value, float):
        return t.FLOAT32, None
    if isinstance(value, str):
        return t.STRING, None
    if isinstance(value, list):
        return t.ARRAY, _value_type(value[0])[0] if value else t.INT32
    raise TypeError(f"no GGUF value type for {value!r}")


def _tensor_data(shape: tuple, kind: str, rng: np.random.Generator):
    import gguf

    values = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    if kind == "F32":
        return values, None
    if kind == "F16":
        return values.astype(np.float16), None
    qtype = gguf.GGMLQuantizationType[kind]
    try:
        return gguf.quants.quantize(values, qtype), qtype
    except NotImplementedError:  # a type gguf-py cannot make (IQ4_NL, ...): zero blocks of its size
        per_block, size = gguf.GGML_QUANT_SIZES[qtype]
        return np.zeros((shape[0], shape[1] // per_block * size), np.uint8), qtype


def write_gguf(path: Path, *, meta: dict | None = None, tensors: dict | None = None, arch: str = "llama",
               truncate: int | None = None) -> Path:
    """The tiny llama with `meta` keys and `tensors` ((shape, type) per name) replaced, added or
    dropped (DROP); `truncate` keeps only that many bytes of the file."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in {**base_metadata(), **(meta or {})}.items():
        if value is not DROP:
            vtype, sub = _value_type(value)
            writer.add_key_value(key, value, vtype, sub_type=sub)
    rng = np.random.default_rng(0)
    for name, spec in {**base_tensors(), **(tensors or {})}.items():
        if spec is not DROP:
            data, raw_dtype = _tensor_data(*spec, rng)
            writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if truncate is not None:
        path.write_bytes(path.read_bytes()[:truncate])
    return path


def write_text(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def write_json(path: Path, value) -> Path:
    return write_text(path, json.dumps(value))

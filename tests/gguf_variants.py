"""Smaller llama GGUFs derived from SmolLM2's, with other weight types per role, for the "any llama GGUF"
tests: the first layers only, weights dequantised and requantised by gguf's own quantizers, the same
vocabulary and metadata (so llama.cpp runs them too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PARTS = {"attn_q": "qkv", "attn_k": "qkv", "attn_v": "qkv", "attn_output": "o", "ffn_gate": "gate_up",
         "ffn_up": "gate_up", "ffn_down": "down"}


def write_variant(source: Path, target: Path, *, layers: int, types: dict[str, str], untied_head: str | None):
    """types: role (qkv, o, gate_up, down, embedding) -> GGUF type name; untied_head: the type of a
    separate output.weight (a copy of the embedding), or None to keep the head tied."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(target), "llama")
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        if key == "llama.block_count":
            value = layers
        sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub)

    def add(name: str, values: np.ndarray, kind: str):
        if kind == "F32":
            writer.add_tensor(name, values)
        else:  # block bytes [N, K/32 * block size]; gguf derives the element shape from them
            qtype = gguf.GGMLQuantizationType[kind]
            writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)

    for tensor in reader.tensors:
        parts = tensor.name.split(".")
        if parts[0] == "blk" and int(parts[1]) >= layers:
            continue
        values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).astype(np.float32)
        values = values.reshape(tuple(int(d) for d in reversed(tensor.shape)))
        if tensor.tensor_type.name == "F32":
            add(tensor.name, values, "F32")
        elif tensor.name == "token_embd.weight":
            add(tensor.name, values, types["embedding"])
            if untied_head:
                add("output.weight", values, untied_head)
        else:
            add(tensor.name, values, types[PARTS[parts[2]]])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target

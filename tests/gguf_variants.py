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
            try:
                blocks = gguf.quants.quantize(values, qtype)
            except NotImplementedError:  # a type gguf-py cannot make (IQ4_NL, ...): zero blocks, for refusal tests
                per_block, size = gguf.GGML_QUANT_SIZES[qtype]
                blocks = np.zeros((values.shape[0], values.shape[1] // per_block * size), np.uint8)
            writer.add_tensor(name, blocks, raw_dtype=qtype)

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


def llama_cpp_quantized(source: Path, target: Path, ftype: str) -> Path:
    """`source` requantised by llama.cpp's own quantiser (llama_model_quantize) to a file type such
    as "Q4_K_M": per-tensor types chosen as llama.cpp chooses them (legacy fallbacks where a row is
    not a multiple of 256, Q6_K for some layers' attn_v / ffn_down)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True
    params.nthread = 2
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama_model_quantize({source} -> {ftype}) failed with status {status}")
    return target


def two_layer_greedy(tmp_path: Path, target_names: tuple[str, ...], steps: int = 3) -> dict[str, tuple]:
    """SmolLM2's first two layers (its own weight types: Q4_1, Q8_0 head) decoded greedily from
    "The capital of France is" on each target's build: name -> (tokens, logits)."""
    import targets
    from compiler import backends, runtime
    from compiler.llm import model_files
    from compiler.llm.decoder import Decoder
    from compiler.llm.gguf import GGUFModel
    from compiler.llm.tokenizer import GGUFTokenizer
    from compiler.llm.run import greedy_tokens, model_library

    source = model_files.gguf_path("smollm2-135m")
    types = {"qkv": "Q4_1", "o": "Q4_1", "gate_up": "Q4_1", "down": "Q4_1", "embedding": "Q8_0"}
    model = GGUFModel(write_variant(source, tmp_path / "two-layers.gguf", layers=2, types=types, untied_head=None))
    prompt = GGUFTokenizer(model).encode("The capital of France is")
    results = {}
    for name in target_names:
        target = targets.get(name)
        model_library(model, target, tmp_path / name, toolchain=backends.toolchain_for(target), tuning_dir=None,
                      progress=lambda _: None)
        with runtime.load(tmp_path / name) as library:
            results[name] = greedy_tokens(Decoder(model, library, max_context=32), prompt, steps)
    return results

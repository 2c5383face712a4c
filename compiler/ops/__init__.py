"""Op registry: op name -> definition, imported lazily so listing ops never pulls in TVM."""

from __future__ import annotations

import importlib

_MODULES = {
    "qgemm_w8a8": "compiler.ops.qgemm_int",
    "qgemm_w4a8": "compiler.ops.qgemm_int",
    "qgemm_w4a16": "compiler.ops.qgemm_w4a16",
    "qgemm_w8a16": "compiler.ops.qgemm_w8a16",
    "qgemm_gguf": "compiler.ops.qgemm_gguf",
    "quantize_per_token": "compiler.ops.quantize",
    "qkv_proj": "compiler.ops.qkv",
    "attention_prefill": "compiler.ops.attention",
    "attention_decode": "compiler.ops.attention",
}


def names() -> list[str]:
    return list(_MODULES)


def get(name: str):
    """The op definition (an `ops.base.OpDef`) registered under `name`."""
    if name not in _MODULES:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name]).OPS[name]

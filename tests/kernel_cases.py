"""Which runtime lengths each kernel is checked at, per test tier."""

from __future__ import annotations

import pytest

RUNTIME_DIM = {"attention_prefill": "S", "attention_decode": "L"}


def runtime_dim(spec) -> str:
    return RUNTIME_DIM.get(spec.op, "M")


def cases(specs, lengths: dict[str, tuple[int, ...]], keep=lambda spec, sizes: True):
    """pytest params (spec, sizes) over every spec and each length of its runtime dim (where `keep`)."""
    out = []
    for spec in specs:
        dim = runtime_dim(spec)
        for value in lengths[dim]:
            if not keep(spec, {dim: value}):
                continue
            out.append(pytest.param(spec, {dim: value}, id=f"{spec.name}-{dim}{value}"))
    return out

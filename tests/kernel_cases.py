"""Which runtime lengths each kernel is checked at, per test tier."""

from __future__ import annotations

import pytest

RUNTIME_DIM = {"attention_prefill": "S", "attention_decode": "L"}


def runtime_dim(spec) -> str:
    return RUNTIME_DIM.get(spec.op, "M")


def cases(specs, lengths: dict[str, tuple], keep=lambda spec, sizes: True):
    """pytest params (spec, sizes) over every spec and each length of its runtime dim (where `keep`);
    attention prefill also after each cached prefix of lengths["prefix"] ((S, P) pairs: L = P + S)."""
    out = []
    for spec in specs:
        dim = runtime_dim(spec)
        options = [{dim: value} for value in lengths[dim]]
        if spec.op == "attention_prefill":
            options += [{"S": s, "L": p + s} for s, p in lengths.get("prefix", ())]
        for sizes in options:
            if keep(spec, sizes):
                out.append(pytest.param(spec, sizes, id=f"{spec.name}-" + "-".join(f"{d}{v}" for d, v in sizes.items())))
    return out

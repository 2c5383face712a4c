"""Check built kernels against the numpy references, through the loader (native or emulated)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler import ops
from schedules import layouts
from compiler.specs import make_spec


@dataclass(frozen=True)
class Check:
    kernel: str
    sizes: dict[str, int]
    output: str
    max_error: float  # max |out - ref|
    allowed: float  # the largest error the tolerance allows anywhere
    ok: bool

    def __str__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        verdict = "ok" if self.ok else "FAIL"
        return f"{verdict:4} {self.kernel} [{sizes}] {self.output}: max error {self.max_error:.3g} (allowed {self.allowed:.3g})"


def spec_of(entry: dict):
    """The KernelSpec a manifest entry was built from."""
    raw = entry["spec"]
    return make_spec(raw["op"], **raw["dims"], **raw["options"])


def symbolic_dims(entry: dict) -> list[str]:
    return sorted({d for a in entry["args"] for d in a["shape"] if isinstance(d, str)})


def length_dim(entry: dict) -> str | None:
    """The runtime length a kernel is benchmarked over (the others take the same value): prefill
    attention's S (its cache length L = S then, a fresh prompt), else its one runtime dim."""
    dims = symbolic_dims(entry)
    return "S" if "S" in dims else (dims[0] if dims else None)


def check_kernel(kernel, sizes: dict[str, int], rng: np.random.Generator) -> list[Check]:
    """Random inputs -> kernel (via the loader) vs the op's numpy reference, per output."""
    spec = spec_of(kernel.spec)
    op = ops.get(spec.op)
    logical = op.random_inputs(spec, sizes, rng)
    input_names = [a["name"] for a in kernel.spec["args"] if a["role"] == "input"]
    packed = kernel.pack(**{n: logical[n] for n in kernel.logical_weights})
    result = kernel(**{n: logical[n] for n in input_names}, **packed)
    out_names = [a["name"] for a in kernel.spec["args"] if a["role"] == "output"]
    outputs = dict(zip(out_names, result if isinstance(result, tuple) else (result,)))
    layout = layouts.from_json(kernel.variant_for(sizes)["layout"])
    reference = op.layout_reference(spec, layout, **logical)
    overrides = op.tolerances(spec, layout)
    checks = []
    for name in out_names:
        out, ref = outputs[name].astype(np.float64), np.asarray(reference[name], dtype=np.float64)
        atol, rtol = overrides.get(name, op.default_tolerance(layout))
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        limit = atol * scale + rtol * np.abs(ref)
        error = np.abs(out - ref)
        ok = bool(np.all(error <= limit)) and bool(np.all(np.isfinite(out)))
        checks.append(Check(kernel.name, dict(sizes), name, float(error.max()) if error.size else 0.0,
                            float(limit.max()) if limit.size else 0.0, ok))
    return checks

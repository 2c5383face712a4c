"""Weight-only int8 GEMM with float activations (W8A16): block-scaled int8 weights (GGUF's Q8_0 form)
applied exactly, with no rounding of the activations (the int8-activation W8A8 quantises them).

y[m, n] = sum_g w_scale[n, g] * sum_{k in group g} x[m, k] * w[n, k] + bias[n]
The weight is stored [N/nt, K, nt]: at each k the nt outputs of a tile are adjacent, so the schedule
converts a vector of int8 weights to fp32 and does one FMA per column vector (W4A16's loop nest).
"""

from __future__ import annotations


import numpy as np

from compiler.ops import fused_act
from compiler.ops.base import Arg, OpDef, Option, Placeholders, check_divisible, padded_rows
from compiler.specs import KernelSpec


class W8A16Gemm(OpDef):
    def __init__(self):
        super().__init__("qgemm_w8a16", ("n", "k"), {
            "group": Option(32, (32, 64, 128), tag=lambda g: f"g{g}"),
            "bias": Option(False),
            **fused_act.OPTIONS,
        })

    def validate(self, spec: KernelSpec) -> None:
        check_divisible(self.name, "k", spec.dim("k"), spec.opt("group"))
        check_divisible(self.name, "n", spec.dim("n"), 2)

    def arguments(self, spec: KernelSpec, layout) -> list[Arg]:
        return w8a16_arguments(spec.dim("n"), spec.dim("k"), spec.opt("group"), spec.opt("bias"), layout, "y",
                               **fused_act.options(spec))

    def build(self, spec: KernelSpec, layout):
        args = self.arguments(spec, layout)
        ph = Placeholders(args, layout)
        y = w8a16_te(ph, spec.dim("n"), spec.dim("k"), spec.opt("group"), layout, "y", **fused_act.options(spec))
        return ph.prim_func(args, {"y": y})

    def flops(self, spec, sizes):
        return 2.0 * sizes["M"] * spec.dim("n") * spec.dim("k")

    def reference(self, spec: KernelSpec, **inp: np.ndarray) -> dict[str, np.ndarray]:
        x = fused_act.reference_activation(inp["x"], spec.dim("k"), spec.opt("norm"), spec.opt("swiglu"),
                                           inp.get("norm_w"))
        y = w8a16_reference(x, inp["w"], inp["w_scale"], spec.opt("group"), inp.get("bias"))
        return {"y": y + inp["residual"] if spec.opt("residual") else y}

    def random_inputs(self, spec, sizes, rng):
        n, k, m = spec.dim("n"), spec.dim("k"), sizes["M"]
        inputs = w8a16_random(n, k, m, spec.opt("group"), spec.opt("bias"), rng)
        return fused_act.random_extras(inputs, k, n, m, rng=rng, **fused_act.options(spec))


# -- shared with qkv_proj -------------------------------------------------------------------------

def w8a16_arguments(n, k, group, bias, layout, out, norm=0.0, swiglu=False, residual=False) -> list[Arg]:
    nt = layout.n_tile
    check_divisible("qgemm_w8a16", "n", n, nt)
    tiled = ({"op": "reshape", "shape": [n // nt, nt, -1]}, {"op": "transpose", "axes": [0, 2, 1]})
    fused_weights, fused_inputs = fused_act.extra_args(k, n, norm, residual)
    args = [
        fused_act.x_arg(k, swiglu),
        *fused_inputs,
        Arg("w", (n // nt, k, nt), "int8", "weight", (n, k), "int8", tiled, doc="int8 weight [N, K]"),
        Arg("w_scale", (n // nt, k // group, nt), "float32", "weight", (n, k // group), "float32", tiled,
            doc="per-group scale [N, K/group]"),
        *fused_weights,
    ]
    if bias:
        args.append(Arg("bias", (n,), "float32", "weight"))
    return [*args, Arg(out, ("M", n), "float32", "output")]


def w8a16_te(ph: Placeholders, n, k, group, layout, name, norm=0.0, swiglu=False, residual=False):
    """Stages: acc[m, g, n] (group sums of x * w) -> ysum[m, n] (scaled per group) -> out (+ residual, bias)."""
    from tvm import te

    nt = layout.n_tile
    x = fused_act.activation(ph, k, norm, swiglu, cpu=not layout.threaded)
    w, ws, bias = ph["w"], ph["w_scale"], ph.tensors.get("bias")
    m = x.shape[0]
    rows, row = padded_rows(m, layout.m_tile)
    r = te.reduce_axis((0, group), name="r")
    acc = te.compute((rows, k // group, n), lambda i, g, j: te.sum(
        w[j // nt, g * group + r, j % nt].astype("float32") * x[row(i), g * group + r], axis=r), name="acc")
    rg = te.reduce_axis((0, k // group), name="rg")
    ysum = te.compute((rows, n), lambda i, j: te.sum(acc[i, rg, j] * ws[j // nt, rg, j % nt], axis=rg), name="ysum")

    def output(i, j):
        value = ysum[i, j] + ph["residual"][i, j] if residual else ysum[i, j]
        return value + bias[j] if bias is not None else value

    return te.compute((m, n), output, name=name)


def w8a16_reference(x, w, w_scale, group, bias=None) -> np.ndarray:
    y = x.astype(np.float64) @ (w.astype(np.float64) * np.repeat(w_scale.astype(np.float64), group, axis=1)).T
    return y + bias.astype(np.float64)[None] if bias is not None else y


def w8a16_random(n, k, m, group, bias, rng) -> dict[str, np.ndarray]:
    out = {"x": rng.standard_normal((m, k)).astype(np.float32),
           "w": rng.integers(-127, 128, (n, k), dtype=np.int8),
           "w_scale": rng.uniform(0.001, 0.01, (n, k // group)).astype(np.float32)}
    if bias:
        out["bias"] = rng.standard_normal(n).astype(np.float32)
    return out


OPS = {"qgemm_w8a16": W8A16Gemm()}

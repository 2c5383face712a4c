"""What a float-activation GEMM can fuse around itself, so a decoder layer needs no elementwise passes:

- `norm` (the RMSNorm epsilon; 0 = off): x is normalised first, x * rsqrt(mean(x^2) + eps) * norm_w,
  with norm_w [K] a weight (the norm before attention or before the MLP);
- `swiglu`: x is [M, 2K], gate then up, and the GEMM multiplies silu(gate) * up (the MLP's down input);
- `residual`: an input [M, N] added to the output (the residual stream).
The activation is computed once per token into `xact` [M, K] before the GEMM's tiles.
"""

from __future__ import annotations

import numpy as np

from compiler.ops.base import Arg, Option

OPTIONS = {
    "norm": Option(0.0, tag=lambda eps: "rmsnorm" + f"{eps:g}".replace("-", "m").replace(".", "p") if eps else ""),
    "swiglu": Option(False),
    "residual": Option(False, tag=lambda r: "res" if r else ""),
}


def options(spec) -> dict:
    """The fusion options of a spec, as keyword arguments for the functions below and the ops' own."""
    return {name: spec.opt(name) for name in OPTIONS}


def x_arg(k: int, swiglu: bool, dtype: str = "float32") -> Arg:
    if swiglu:
        return Arg("x", ("M", 2 * k), dtype, "input", doc="gate then up [M, 2K]; the GEMM takes silu(gate) * up")
    return Arg("x", ("M", k), dtype, "input")


def extra_args(k: int, n: int, norm: float, residual: bool) -> tuple[list[Arg], list[Arg]]:
    """(weights, inputs) the fusions add: the norm's weight; the residual stream."""
    weights = [Arg("norm_w", (k,), "float32", "weight", doc="RMSNorm weight [K]")] if norm else []
    inputs = [Arg("residual", ("M", n), "float32", "input", doc="added to the output")] if residual else []
    return weights, inputs


def activation(ph, k: int, norm: float, swiglu: bool, cpu: bool = True):
    """The activation the GEMM multiplies, as a te tensor [M, K]: x itself without fusions.

    On a CPU (`cpu`), the RMSNorm's sum of squares adds float32 squares in float64 (GPUs have no
    float64: float32 there), then rounds the mean to float32, as ggml's CPU backend does: a last-
    bit difference in the norm's scale flips int8 roundings of the q8 path downstream, which 30
    layers amplify to ~0.2 in the logits. SiLU's exp is plain arithmetic there (fast_math), one
    SIMD pass where libm's expf was a call per value (a prefill's down GEMM: M x K calls)."""
    from tvm import te, tirx

    from compiler.ops.fast_math import fast_exp

    exp = fast_exp if cpu else te.exp

    x = ph["x"]
    m = x.shape[0]
    if not norm and not swiglu:
        return x

    def raw(i, kk):
        if not swiglu:
            return x[i, kk].astype("float32")
        gate, up = x[i, kk].astype("float32"), x[i, k + kk].astype("float32")
        return gate / (tirx.const(1.0, "float32") + exp(-gate)) * up

    if not norm:
        return te.compute((m, k), raw, name="xact")
    r = te.reduce_axis((0, k), name="rk")
    wide = "float64" if cpu else "float32"
    squares = te.compute((m,), lambda i: te.sum((raw(i, r) * raw(i, r)).astype(wide), axis=r), name="rms_ss")
    scale = te.compute((m,), lambda i: tirx.const(1.0, "float32") / te.sqrt(
        (squares[i] / tirx.const(float(k), wide)).astype("float32") + tirx.const(norm, "float32")), name="rms_inv")
    return te.compute((m, k), lambda i, kk: raw(i, kk) * scale[i] * ph["norm_w"][kk], name="xact")


def reference_activation(x: np.ndarray, k: int, norm: float, swiglu: bool, norm_w=None) -> np.ndarray:
    x = x.astype(np.float64)
    if swiglu:
        gate, up = x[:, :k], x[:, k:]
        x = gate / (1.0 + np.exp(-gate)) * up
    if norm:
        x = x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + norm) * norm_w.astype(np.float64)
    return x


def random_extras(inputs: dict, k: int, n: int, m: int, norm: float, swiglu: bool, residual: bool, rng) -> dict:
    if swiglu:
        inputs["x"] = rng.standard_normal((m, 2 * k)).astype(inputs["x"].dtype)
    if norm:
        inputs["norm_w"] = rng.uniform(0.5, 1.5, k).astype(np.float32)
    if residual:
        inputs["residual"] = rng.standard_normal((m, n)).astype(np.float32)
    return inputs

"""Per-token symmetric int8 quantisation of activations, the producer for W8A8 and W4A8 GEMMs.

scale[m] = max_k |x[m, k]| / 127;  q[m, k] = clip(round_half_even(x[m, k] / scale[m]), -127, 127)
(a zero row gets scale 0 and q 0). Float32 throughout, so the result is bit-exact against numpy.

Non-finite rows, as numpy's max says: a row holding a NaN gets scale NaN, one holding +-Inf (and
no NaN) scale +Inf, and either gets q 0 (no NaN is cast to int8). The scale alone carries the
poison on: the GEMM that consumes the row multiplies by it, so its output row is NaN.
"""

from __future__ import annotations

import numpy as np

from compiler.ops.base import Arg, OpDef, Placeholders
from compiler.specs import KernelSpec


class QuantizePerToken(OpDef):
    def __init__(self):
        super().__init__("quantize_per_token", ("k",))

    def tolerances(self, spec, layout):
        return {"q": (0.0, 0.0), "scale": (0.0, 0.0)}

    def arguments(self, spec: KernelSpec, layout) -> list[Arg]:
        k = spec.dim("k")
        return [
            Arg("x", ("M", k), "float32", "input"),
            Arg("q", ("M", k), "int8", "output"),
            Arg("scale", ("M",), "float32", "output"),
        ]

    def build(self, spec: KernelSpec, layout):
        from tvm import te, tirx

        args = self.arguments(spec, layout)
        ph = Placeholders(args, layout)
        x = ph["x"]
        m, k = x.shape
        r = te.reduce_axis((0, k), name="r")
        amax = te.compute((m,), lambda i: te.max(magnitude_bits(x[i, r]), axis=r), name="amax")
        scale = te.compute((m,), lambda i: tirx.reinterpret("float32", amax[i]) / tirx.const(127.0, "float32"),
                           name="scale")

        def quant(i, j):
            v = tirx.nearbyint(x[i, j] / scale[i])
            v = te.max(te.min(v, tirx.const(127.0, "float32")), tirx.const(-127.0, "float32"))
            # 0 < scale <= FLT_MAX: not a zero row, nor one holding NaN (scale NaN) or +-Inf (x / inf
            # is NaN at the Inf, and min/max clamp a NaN to a bound: -Inf would become +127)
            usable = tirx.all(scale[i] > tirx.const(0.0, "float32"), scale[i] <= tirx.max_value("float32"))
            return te.if_then_else(usable, v, tirx.const(0.0, "float32")).astype("int8")

        q = te.compute((m, k), quant, name="q")
        return ph.prim_func(args, {"q": q, "scale": scale})

    def flops(self, spec, sizes):
        return 3.0 * sizes["M"] * spec.dim("k")  # |x| and max, divide, round

    def reference(self, spec: KernelSpec, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(("q", "scale"), quantize_reference(x)))

    def random_inputs(self, spec, sizes, rng):
        x = rng.standard_normal((sizes["M"], spec.dim("k"))).astype(np.float32) * 3.0
        if sizes["M"] > 1:
            x[-1] = 0.0  # a zero row exercises the scale-0 path
        return {"x": x}


def magnitude_bits(value):
    """|value| of a float32 as its int32 bit pattern (the sign bit cleared). Integer order of these
    is float order of |value|, with every NaN above +Inf above every finite value: their max is
    NaN if any value is NaN, else Inf if any is +-Inf, as numpy's max. A float max would not do:
    TVM lowers max(a, b) to `a > b ? a : b`, which drops a NaN that is not the last element."""
    from tvm import tirx

    return tirx.reinterpret("int32", value) & tirx.const(0x7FFFFFFF, "int32")


def quantize_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float32)
    scale = np.abs(x).max(axis=1) / np.float32(127.0)
    usable = np.isfinite(scale) & (scale > 0)  # not a zero row, nor one holding NaN or +-Inf
    safe = np.where(usable, scale, np.float32(1.0))
    q = np.clip(np.rint(np.where(usable[:, None], x, 0) / safe[:, None]), -127, 127)
    q = np.where(usable[:, None], q, 0).astype(np.int8)
    return q, scale.astype(np.float32)


OPS = {"quantize_per_token": QuantizePerToken()}

"""Per-token symmetric int8 quantisation of activations, the producer for W8A8 and W4A8 GEMMs.

scale[m] = max_k |x[m, k]| / 127;  q[m, k] = clip(round_half_even(x[m, k] / scale[m]), -127, 127)
(a zero row gets scale 0 and q 0). Float32 throughout, so the result is bit-exact against numpy.
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
        amax = te.compute((m,), lambda i: te.max(te.abs(x[i, r]), axis=r), name="amax")
        scale = te.compute((m,), lambda i: amax[i] / tirx.const(127.0, "float32"), name="scale")

        def quant(i, j):
            v = tirx.nearbyint(x[i, j] / scale[i])
            v = te.max(te.min(v, tirx.const(127.0, "float32")), tirx.const(-127.0, "float32"))
            return te.if_then_else(scale[i] > tirx.const(0.0, "float32"), v, tirx.const(0.0, "float32")).astype("int8")

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


def quantize_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float32)
    scale = np.abs(x).max(axis=1) / np.float32(127.0)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    q = np.clip(np.rint(x / safe[:, None]), -127, 127)
    q = np.where(scale[:, None] > 0, q, 0).astype(np.int8)
    return q, scale.astype(np.float32)


OPS = {"quantize_per_token": QuantizePerToken()}

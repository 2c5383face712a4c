"""Integer-activation GEMMs: W8A8 (per-channel weights) and W4A8 (group-wise int4 weights).

y[m, n] = x_scale[m] * sum_g w_scale[n, g] * (sum_{k in group g} x[m, k] * w[n, k]) + bias[n]
with the inner sums in int32, so dot-product instructions (SDOT, VRMPY, VNNI) do the work.
The weight is stored tiled [N/nt, K/kt, nt, kt] (int4: two k-neighbours per byte), the tile
(nt, kt) chosen by the target's schedule family to match its dot-product instruction.
"""

from __future__ import annotations


import numpy as np

from compiler.ops.base import (
    Arg,
    OpDef,
    Option,
    Placeholders,
    check_divisible,
    int4_nibble,
    padded_rows,
)
from compiler.specs import KernelSpec


class IntGemm(OpDef):
    tolerance = (1e-5, 1e-5)  # int32 sums are exact; only the fp32 scaling rounds
    def __init__(self, name: str, weight_bits: int):
        options = {"bias": Option(False)}
        if weight_bits == 4:
            options = {"group": Option(128, (32, 64, 128), tag=lambda g: f"g{g}"), **options}
        else:  # 0: one scale per output channel; else per block of `group` k (GGUF's Q8_0 is 32)
            options = {"group": Option(0, (0, 32, 64, 128), tag=lambda g: f"g{g}" if g else ""), **options}
        super().__init__(name, ("n", "k"), options)
        self.weight_bits = weight_bits

    def group(self, spec: KernelSpec) -> int:
        return spec.opt("group") or spec.dim("k")

    def group_scales(self, spec: KernelSpec) -> bool:
        """Whether w_scale is per group [N, K/group] (else per channel [N])."""
        return bool(spec.opt("group"))

    def validate(self, spec: KernelSpec) -> None:
        check_divisible(self.name, "k", spec.dim("k"), 4)
        check_divisible(self.name, "n", spec.dim("n"), 4)
        check_divisible(self.name, "k", spec.dim("k"), self.group(spec))

    def arguments(self, spec: KernelSpec, layout) -> list[Arg]:
        n, k = spec.dim("n"), spec.dim("k")
        return int_gemm_arguments(n, k, self.weight_bits, self.group(spec), spec.opt("bias"), layout, out="y",
                                  group_scales=self.group_scales(spec))

    def build(self, spec: KernelSpec, layout):
        args = self.arguments(spec, layout)
        ph = Placeholders(args, layout)
        y = int_gemm_te(ph, spec.dim("n"), spec.dim("k"), self.weight_bits, self.group(spec), layout, "y",
                        group_scales=self.group_scales(spec))
        return ph.prim_func(args, {"y": y})

    def flops(self, spec, sizes):
        return 2.0 * sizes["M"] * spec.dim("n") * spec.dim("k")

    def reference(self, spec: KernelSpec, **inp: np.ndarray) -> dict[str, np.ndarray]:
        y = int_gemm_reference(inp["x"], inp["x_scale"], inp["w"], inp["w_scale"], self.group(spec), inp.get("bias"))
        return {"y": y}

    def random_inputs(self, spec, sizes, rng):
        return int_gemm_random(spec.dim("n"), spec.dim("k"), sizes["M"], self.weight_bits, self.group(spec),
                               spec.opt("bias"), rng, group_scales=self.group_scales(spec))


# -- shared with qkv_proj -------------------------------------------------------------------------

def int_gemm_arguments(n, k, bits, group, bias, layout, out, group_scales=None) -> list[Arg]:
    """group_scales: w_scale per group [N, K/group] (default: for int4 weights) or per channel [N]."""
    group_scales = bits == 4 if group_scales is None else group_scales
    nt, kt = layout.n_tile, layout.k_tile
    check_divisible("int gemm", "n", n, nt)
    check_divisible("int gemm", "k", k, kt)
    tile = [{"op": "reshape", "shape": [n // nt, nt, k // kt, kt]}, {"op": "transpose", "axes": [0, 2, 1, 3]}]
    if bits == 8:
        w = Arg("w", (n // nt, k // kt, nt, kt), "int8", "weight", (n, k), "int8", tuple(tile),
                doc="int8 weight [N, K]")
    else:
        steps = ({"op": "check_range", "min": -8, "max": 7}, *tile, {"op": "nibbles"})
        w = Arg("w", (n // nt, k // kt, nt, kt // 2), "int8", "weight", (n, k), "int8", steps,
                doc="int4 weight values in [-8, 7], given as int8 [N, K]")
    if group_scales:
        w_scale = Arg("w_scale", (n, k // group), "float32", "weight", doc="per-group weight scale")
    else:
        w_scale = Arg("w_scale", (n,), "float32", "weight", doc="per-output-channel weight scale")
    args = [
        Arg("x", ("M", k), "int8", "input", doc="per-token quantized activations"),
        Arg("x_scale", ("M",), "float32", "input"),
        w,
        w_scale,
    ]
    if layout.act_offset:
        # Dot products on unsigned activations (VNNI) compute sum((x + o) w); this is -o sum(w)
        # per group and column, precomputed once from the weight, [K/group, N].
        args.append(Arg("w_offset_sums", (k // group, n), "int32", "weight", (n, k), "int8", (
            {"op": "group_sums", "group": group, "scale": -layout.act_offset},
            {"op": "transpose", "axes": [1, 0]}), source="w",
            doc="derived from w by pack: -offset * sum of each group's weights"))
    if bias:
        args.append(Arg("bias", (n,), "float32", "weight"))
    args.append(Arg(out, ("M", n), "float32", "output"))
    return args


def int_gemm_te(ph: Placeholders, n, k, bits, group, layout, name, group_scales=None):
    """y = x_scale * sum_g w_scale * int32-dot(x, w) + bias, as te stages acc -> (ysum) -> y."""
    from tvm import te

    group_scales = bits == 4 if group_scales is None else group_scales
    nt, kt = layout.n_tile, layout.k_tile
    x, xs, w, ws = ph["x"], ph["x_scale"], ph["w"], ph["w_scale"]
    m = x.shape[0]
    ngroups = k // group

    def weight(j, kg):  # int32 value of W[j, kg]; int4 nibbles unpacked where they are used
        if bits == 8:
            return w[j // nt, kg // kt, j % nt, kg % kt].astype("int32")
        return int4_nibble(w[j // nt, kg // kt, j % nt, (kg % kt) // 2], kg % 2)

    rows, row = padded_rows(m, layout.m_tile)
    offset = layout.act_offset

    if layout.int8_dot == "spirv_dot4" and group % 4 == 0:
        # GPUs with SPV_KHR_integer_dot_product: 4 products per instruction on packed int8
        # (compiler/backends/vulkan/glsl.py prints the extern as OpSDotKHR).
        from tvm import tirx

        kq = te.reduce_axis((0, group // 4), name="kq")

        def dot(i, g, j):
            base = g * group + kq * 4
            xs4 = [x[row(i), base + u] for u in range(4)]
            ws4 = [weight(j, base + u).astype("int8") for u in range(4)]
            return te.sum(tirx.call_pure_extern("int32", "ekc_sdot4", *xs4, *ws4), axis=kq)
    else:
        kk = te.reduce_axis((0, group), name="kk")

        def dot(i, g, j):  # with an activation offset o (unsigned-activation instructions): sum((x + o) w)
            xv = x[row(i), g * group + kk].astype("int32")
            return te.sum(((xv + offset) if offset else xv) * weight(j, g * group + kk), axis=kk)

    # group before column: a dot-product instruction writes adjacent columns
    acc = te.compute((rows, ngroups, n), dot, name="acc")

    def group_sum(i, g, j):  # the exact int32 x . w of one group: minus o sum(w), precomputed by pack
        return acc[i, g, j] + ph["w_offset_sums"][g, j] if offset else acc[i, g, j]
    bias = ph.tensors.get("bias")

    def epilogue(i, j, value):
        value = value * xs[i]
        return value + bias[j] if bias is not None else value

    def scale(j, g):  # per group [N, K/group], or per channel [N]
        return ws[j, g] if group_scales else ws[j]

    if ngroups == 1:
        return te.compute((m, n), lambda i, j: epilogue(i, j, group_sum(i, 0, j).astype("float32") * scale(j, 0)),
                          name=name)
    g = te.reduce_axis((0, ngroups), name="g")
    ysum = te.compute((rows, n), lambda i, j: te.sum(group_sum(i, g, j).astype("float32") * scale(j, g), axis=g),
                      name="ysum")
    return te.compute((m, n), lambda i, j: epilogue(i, j, ysum[i, j]), name=name)


def int_gemm_reference(x, x_scale, w, w_scale, group, bias=None) -> np.ndarray:
    m, k = x.shape
    n = w.shape[0]
    acc = np.einsum("mgk,ngk->mng", x.astype(np.int64).reshape(m, k // group, group),
                    w.astype(np.int64).reshape(n, k // group, group))
    ws = w_scale.astype(np.float64).reshape(n, -1)
    y = (acc * ws[None]).sum(-1) * x_scale.astype(np.float64)[:, None]
    return y + bias.astype(np.float64)[None] if bias is not None else y


def int_gemm_random(n, k, m, bits, group, bias, rng, group_scales=None) -> dict[str, np.ndarray]:
    group_scales = bits == 4 if group_scales is None else group_scales
    lo, hi = (-127, 128) if bits == 8 else (-8, 8)
    out = {
        "x": rng.integers(-127, 128, (m, k), dtype=np.int8),
        "x_scale": rng.uniform(0.005, 0.02, m).astype(np.float32),
        "w": rng.integers(lo, hi, (n, k), dtype=np.int8),
        "w_scale": rng.uniform(0.001, 0.01, (n, k // group) if group_scales else (n,)).astype(np.float32),
    }
    if bias:
        out["bias"] = rng.standard_normal(n).astype(np.float32)
    return out


OPS = {"qgemm_w8a8": IntGemm("qgemm_w8a8", 8), "qgemm_w4a8": IntGemm("qgemm_w4a8", 4)}

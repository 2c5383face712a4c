"""GEMM with float activations over GGUF's 5- and 6-bit and K-quant weights (Q5_0, Q5_1, Q4_K, Q5_K,
Q6_K), read in their own block structure: resident bytes within a few percent of the file's.

Every one of these types is, per sub-block of `sub` values, unsigned b-bit integers q with
  w = d * s * (q - offset) - dmin * mn     (K-quants: d, dmin float16 per super-block of 256,
                                            s, mn small integers per sub-block)
  w = d * (q - offset) [+ m]               (Q5_0 / Q5_1: d, m float16 per block of 32)
(`GGUF_FORMS` lists each type's bits, blocks and terms.) So
  y[m, n] = sum_g scale[n, g] * sum_{k in g} x[m, k] q[n, k]  +  sum_g term[n, g] * sum_{k in g} x[m, k]
with scale = d s and term = -offset d s - dmin mn (or m): the inner loop multiplies the unsigned
integers alone; scales and terms are applied once per sub-block, the terms against per-call group
sums of x (as the -8 of W4A16's offset-binary nibbles is).

Packed layout (at each k the nt outputs of a tile adjacent, as W4A16): the low 4 bits of each value
in a nibble plane [N/nt, K/2, nt] (k in the low nibble, k+1 in the high), the bits above in a plane
of 1 or 2 bits per value [N/nt, K/8 or K/4, nt] (value k + i at bit width * i); block scales as
float16 and sub-block scales and minimums as int8, tiled the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ops import fused_act
from compiler.ops.base import Arg, OpDef, Option, Placeholders, check_divisible, padded_rows
from compiler.specs import KernelSpec


@dataclass(frozen=True)
class GGUFForm:
    """One GGUF type's block structure, as the kernel reads it."""
    bits: int  # bits per value (4, 5 or 6): a nibble plane plus bits - 4 high bits
    block: int  # values per float16 scale d
    sub: int  # values per sub-block (its own integer scale and minimum); == block: no sub-scales
    offset: int  # subtracted from the unsigned value: Q5_0 16, Q6_K 32
    minimum: str  # "" | "block": a float16 m per block added (Q5_1) | "sub": dmin * mn subtracted (Q4_K, Q5_K)

    @property
    def sub_scales(self) -> bool:
        return self.sub != self.block

    @property
    def high_values_per_byte(self) -> int:
        """Values whose high bits share one byte of the high plane (2: no high plane, as the nibbles)."""
        return 8 // (self.bits - 4) if self.bits > 4 else 2


GGUF_FORMS = {
    "Q5_0": GGUFForm(bits=5, block=32, sub=32, offset=16, minimum=""),
    "Q5_1": GGUFForm(bits=5, block=32, sub=32, offset=0, minimum="block"),
    "Q4_K": GGUFForm(bits=4, block=256, sub=32, offset=0, minimum="sub"),
    "Q5_K": GGUFForm(bits=5, block=256, sub=32, offset=0, minimum="sub"),
    "Q6_K": GGUFForm(bits=6, block=256, sub=16, offset=32, minimum=""),
}


class GGUFGemm(OpDef):
    def __init__(self):
        super().__init__("qgemm_gguf", ("n", "k"), {
            "type": Option("Q4_K", tuple(GGUF_FORMS), tag=str.lower),
            "bias": Option(False),
            **fused_act.OPTIONS,
        })

    def validate(self, spec: KernelSpec) -> None:
        validate_shape(self.name, spec.opt("type"), spec.dim("n"), spec.dim("k"))

    def arguments(self, spec: KernelSpec, layout) -> list[Arg]:
        return gguf_arguments(GGUF_FORMS[spec.opt("type")], spec.dim("n"), spec.dim("k"), spec.opt("bias"), layout,
                              "y", **fused_act.options(spec))

    def build(self, spec: KernelSpec, layout):
        args = self.arguments(spec, layout)
        ph = Placeholders(args, layout)
        y = gguf_te(ph, GGUF_FORMS[spec.opt("type")], spec.dim("n"), spec.dim("k"), layout, "y",
                    **fused_act.options(spec))
        return ph.prim_func(args, {"y": y})

    def flops(self, spec, sizes):
        return 2.0 * sizes["M"] * spec.dim("n") * spec.dim("k")

    def reference(self, spec: KernelSpec, **inp: np.ndarray) -> dict[str, np.ndarray]:
        x = fused_act.reference_activation(inp["x"], spec.dim("k"), spec.opt("norm"), spec.opt("swiglu"),
                                           inp.get("norm_w"))
        y = gguf_reference(spec.opt("type"), x, inp, inp.get("bias"))
        return {"y": y + inp["residual"] if spec.opt("residual") else y}

    def random_inputs(self, spec, sizes, rng):
        n, k, m = spec.dim("n"), spec.dim("k"), sizes["M"]
        inputs = {"x": rng.standard_normal((m, k)).astype(np.float32),
                  **gguf_random_weights(spec.opt("type"), n, k, rng)}
        if spec.opt("bias"):
            inputs["bias"] = rng.standard_normal(n).astype(np.float32)
        return fused_act.random_extras(inputs, k, n, m, rng=rng, **fused_act.options(spec))


# -- shared with qkv_proj -------------------------------------------------------------------------

def validate_shape(op: str, kind: str, n: int, k: int) -> None:
    check_divisible(op, "k", k, GGUF_FORMS[kind].block)
    check_divisible(op, "n", n, 2)


def gguf_arguments(form: GGUFForm, n, k, bias, layout, out, norm=0.0, swiglu=False, residual=False) -> list[Arg]:
    nt = layout.n_tile
    check_divisible("qgemm_gguf", "n", n, nt)
    tiled = ({"op": "reshape", "shape": [n // nt, nt, -1]}, {"op": "transpose", "axes": [0, 2, 1]})

    def plane(per_byte: int, shift: int, width: int):
        return ({"op": "reshape", "shape": [n // nt, nt, k // per_byte, per_byte]},
                {"op": "transpose", "axes": [0, 2, 1, 3]},
                {"op": "pack_bits", "shift": shift, "width": width})

    def per(size: int, name: str, dtype: str, doc: str) -> Arg:
        return Arg(name, (n // nt, k // size, nt), dtype, "weight", (n, k // size), dtype, tiled, doc=doc)

    fused_weights, fused_inputs = fused_act.extra_args(k, n, norm, residual)
    top = 2 ** form.bits - 1
    args = [
        fused_act.x_arg(k, swiglu),
        *fused_inputs,
        Arg("w", (n // nt, k // 2, nt), "int8", "weight", (n, k), "uint8",
            ({"op": "check_range", "min": 0, "max": top}, *plane(2, 0, 4)),
            doc=f"unsigned {form.bits}-bit weight values [N, K] in [0, {top}]"),
    ]
    if form.bits > 4:
        per_byte = form.high_values_per_byte
        args.append(Arg("w_high", (n // nt, k // per_byte, nt), "int8", "weight", (n, k), "uint8",
                        plane(per_byte, 4, form.bits - 4), source="w"))
    args.append(per(form.block, "w_d", "float16", "block scale d [N, K/block]"))
    if form.sub_scales:
        args.append(per(form.sub, "w_sub", "int8", "sub-block scale s [N, K/sub] (w = d s ...)"))
    if form.minimum == "sub":
        args += [per(form.block, "w_dmin", "float16", "block minimum scale dmin [N, K/block]"),
                 per(form.sub, "w_submin", "int8", "sub-block minimum mn [N, K/sub] (w = ... - dmin mn)")]
    elif form.minimum == "block":
        args.append(per(form.block, "w_m", "float16", "block minimum m [N, K/block] (w = d q + m)"))
    args += fused_weights
    if bias:
        args.append(Arg("bias", (n,), "float32", "weight"))
    return [*args, Arg(out, ("M", n), "float32", "output")]


def gguf_te(ph: Placeholders, form: GGUFForm, n, k, layout, name, norm=0.0, swiglu=False, residual=False):
    """Stages: xgroup[m, g] (sub-block sums of x) and acc[m, g, n] (sub-block sums of x times the
    unsigned values) -> ysum[m, n] (scaled per sub-block; GPUs add the terms there too) -> corr[m, n]
    (CPUs: the terms, a pass of its own as W4A16's) -> out (+ residual, bias)."""
    from tvm import te

    nt = layout.n_tile
    x = fused_act.activation(ph, k, norm, swiglu, float64_sum=not layout.threaded)
    w, high, bias = ph["w"], ph.tensors.get("w_high"), ph.tensors.get("bias")
    m = x.shape[0]
    sub, per_byte = form.sub, form.high_values_per_byte
    ngroups, subs_per_block = k // sub, form.block // form.sub
    rows, row = padded_rows(m, layout.m_tile)

    def xf(i, kk):
        return x[row(i), kk].astype("float32")

    def value(j, g, r, b):  # the unsigned value at k = g * sub + r * per_byte + b
        byte = w[j // nt, g * (sub // 2) + r * (per_byte // 2) + b // 2, j % nt].astype("int32")
        q = (byte >> (b % 2 * 4)) & 15
        if high is not None:
            width = form.bits - 4
            top = high[j // nt, g * (sub // per_byte) + r, j % nt].astype("int32")
            q = q | (((top >> (b * width)) & (2 ** width - 1)) << 4)
        return q.astype("float32")

    r = te.reduce_axis((0, sub // per_byte), name="r")
    b = te.reduce_axis((0, per_byte), name="b")
    acc = te.compute((rows, ngroups, n), lambda i, g, j: te.sum(
        value(j, g, r, b) * xf(i, g * sub + r * per_byte + b), axis=[r, b]), name="acc")
    rs = te.reduce_axis((0, sub), name="rs")
    xgroup = te.compute((rows, ngroups), lambda i, g: te.sum(xf(i, g * sub + rs), axis=rs), name="xgroup")

    def load(arg, j, index):
        return ph[arg][j // nt, index, j % nt].astype("float32")

    def scale(j, g):
        d = load("w_d", j, g // subs_per_block)
        return d * load("w_sub", j, g) if form.sub_scales else d

    def term(j, g):
        value = scale(j, g) * float(-form.offset) if form.offset else None
        if form.minimum == "sub":
            low = -(load("w_dmin", j, g // subs_per_block) * load("w_submin", j, g))
        elif form.minimum == "block":
            low = load("w_m", j, g)
        else:
            return value
        return low if value is None else value + low

    rg = te.reduce_axis((0, ngroups), name="rg")
    if layout.group_terms_in_sum:  # GPUs: one pass, the scales read once
        ysum = te.compute((rows, n), lambda i, j: te.sum(
            acc[i, rg, j] * scale(j, rg) + term(j, rg) * xgroup[i, rg], axis=rg), name="ysum")
        corr = None
    else:  # CPUs: the terms are a small GEMM over group sums, scheduled apart (schedules/cpu/gemm_tiles)
        ysum = te.compute((rows, n), lambda i, j: te.sum(acc[i, rg, j] * scale(j, rg), axis=rg), name="ysum")
        rm = te.reduce_axis((0, ngroups), name="rm")
        corr = te.compute((m, n), lambda i, j: te.sum(term(j, rm) * xgroup[i, rm], axis=rm), name="corr")

    def output(i, j):
        out = ysum[i, j] + corr[i, j] if corr is not None else ysum[i, j]
        if residual:
            out = out + ph["residual"][i, j]
        return out + bias[j] if bias is not None else out

    return te.compute((m, n), output, name=name)


def dequantize(kind: str, weights: dict[str, np.ndarray]) -> np.ndarray:
    """float32 [N, K] from the logical weights, with the float32 operations in gguf's (and ggml's)
    order, so the values equal `gguf.quants.dequantize` of the same blocks bit for bit."""
    form = GGUF_FORMS[kind]
    q = weights["w"]
    n, k = q.shape

    def per_value(a, size):  # [N, K/size] -> [N, K/size, size]: one entry per value, for broadcasting
        return a.astype(np.float32)[..., None]

    if form.sub_scales:
        d = np.repeat(weights["w_d"].astype(np.float32), form.block // form.sub, axis=1)
        scale = d * weights["w_sub"].astype(np.float32)  # float32 d * s, as gguf and ggml
    else:
        scale = weights["w_d"].astype(np.float32)
    grouped = q.reshape(n, k // form.sub, form.sub)
    if form.offset:  # Q5_0, Q6_K: (q - offset) as an integer, then d * it
        w = per_value(scale, form.sub) * (grouped.astype(np.int16) - form.offset).astype(np.float32)
    else:
        w = per_value(scale, form.sub) * grouped.astype(np.float32)
    if form.minimum == "sub":
        dmin = np.repeat(weights["w_dmin"].astype(np.float32), form.block // form.sub, axis=1)
        w = w - per_value(dmin * weights["w_submin"].astype(np.float32), form.sub)
    elif form.minimum == "block":
        w = w + per_value(weights["w_m"], form.sub)
    return w.reshape(n, k)


def gguf_reference(kind: str, x: np.ndarray, weights: dict[str, np.ndarray], bias=None) -> np.ndarray:
    y = x.astype(np.float64) @ dequantize(kind, weights).astype(np.float64).T
    return y + bias.astype(np.float64)[None] if bias is not None else y


def gguf_random_weights(kind: str, n: int, k: int, rng) -> dict[str, np.ndarray]:
    """Logical weights of GGUF's ranges: scales of a typical magnitude, integer sub-scales as its
    quantisers make them (6-bit unsigned for Q4_K / Q5_K, int8 for Q6_K)."""
    form = GGUF_FORMS[kind]
    out = {"w": rng.integers(0, 2 ** form.bits, (n, k), dtype=np.uint8),
           "w_d": rng.uniform(0.0005, 0.002, (n, k // form.block)).astype(np.float16)}
    if form.sub_scales:
        low, high = (-128, 128) if form.offset else (0, 64)
        out["w_sub"] = rng.integers(low, high, (n, k // form.sub), dtype=np.int8)
    if form.minimum == "sub":
        out["w_dmin"] = rng.uniform(0.0005, 0.002, (n, k // form.block)).astype(np.float16)
        out["w_submin"] = rng.integers(0, 64, (n, k // form.sub), dtype=np.int8)
    elif form.minimum == "block":
        out["w_m"] = rng.uniform(-0.3, 0.0, (n, k // form.block)).astype(np.float16)
    return out


OPS = {"qgemm_gguf": GGUFGemm()}

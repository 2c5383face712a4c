"""GEMM over GGUF's 5- and 6-bit and K-quant weights (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), read in their own
block structure: resident bytes within a few percent of the file's. This module: the float-activation
form (act="float32"); the int8-activation one (act="q8_0" / "q8_1") is in qgemm_gguf_int8.py.

Every one of these types is, per sub-block of `sub` values, unsigned b-bit integers q with
  w = d * s * (q - offset) - dmin * mn     (K-quants: d, dmin float16 per super-block of 256,
                                            s, mn small integers per sub-block)
  w = d * (q - offset) [+ m]               (Q5_0 / Q5_1: d, m float16 per block of 32)
(ops/gguf_forms.py: `GGUF_FORMS` lists each type's bits, blocks and terms.) So
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

import numpy as np

from compiler.ops import fused_act, q8_act
from compiler.ops.base import Arg, OpDef, Option, Placeholders, check_divisible, padded_rows
from compiler.ops.gguf_forms import GGUF_FORMS, INT8_ACTIVATIONS, GGUFForm, dequantize, gguf_random_weights, \
    scale_fields
from compiler.ops.qgemm_gguf_int8 import int8_arguments, int8_reference, int8_te
from compiler.ops.qgemm_w4a16 import byte_pair_factors
from compiler.specs import KernelSpec


ACTS = ("float32", "q8_0", "q8_1")


class GGUFGemm(OpDef):
    def __init__(self):
        super().__init__("qgemm_gguf", ("n", "k"), {
            "type": Option("Q4_K", tuple(GGUF_FORMS), tag=str.lower),
            "act": Option("float32", ACTS, tag=lambda a: "" if a == "float32" else a),
            "q8_recip": q8_act.OPTIONS["q8_recip"],
            "bias": Option(False),
            **fused_act.OPTIONS,
        })

    def validate(self, spec: KernelSpec) -> None:
        validate_shape(self.name, spec.opt("type"), spec.dim("n"), spec.dim("k"), spec.opt("act"))

    def arguments(self, spec: KernelSpec, layout) -> list[Arg]:
        return gguf_arguments(spec.opt("type"), spec.dim("n"), spec.dim("k"), spec.opt("bias"), layout, "y",
                              act=spec.opt("act"), **fused_act.options(spec))

    def build(self, spec: KernelSpec, layout):
        args = self.arguments(spec, layout)
        ph = Placeholders(args, layout)
        y = gguf_te(ph, spec.opt("type"), spec.dim("n"), spec.dim("k"), layout, "y", act=spec.opt("act"),
                    recip=spec.opt("q8_recip"), **fused_act.options(spec))
        return ph.prim_func(args, {"y": y})

    def tolerances(self, spec: KernelSpec, layout):
        return {"y": (1e-5, 1e-5)} if spec.opt("act") != "float32" else {}  # int32 sums: only the scaling rounds

    def flops(self, spec, sizes):
        return 2.0 * sizes["M"] * spec.dim("n") * spec.dim("k")

    def reference(self, spec: KernelSpec, **inp: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": gguf_reference_of(spec.opt("type"), inp, spec.dim("k"), spec.opt("act"), spec.opt("q8_recip"),
                                       **fused_act.options(spec))}

    def random_inputs(self, spec, sizes, rng):
        n, k, m = spec.dim("n"), spec.dim("k"), sizes["M"]
        inputs = gguf_random_inputs(spec.opt("type"), n, k, m, spec.opt("bias"), rng)
        return fused_act.random_extras(inputs, k, n, m, rng=rng, **fused_act.options(spec))


# -- shared with qkv_proj -------------------------------------------------------------------------

def validate_shape(op: str, kind: str, n: int, k: int, act: str = "float32") -> None:
    check_divisible(op, "k", k, GGUF_FORMS[kind].block)
    check_divisible(op, "n", n, 4 if act != "float32" else 2)
    if act != "float32" and INT8_ACTIVATIONS.get(kind) != act:
        forms = ", ".join(f"{t} act={a}" for t, a in INT8_ACTIVATIONS.items())
        raise ValueError(f"{op}: {kind} has no int8-activation form with act={act} (there are: {forms}); "
                         "other types take act=float32")


def gguf_arguments(kind: str, n, k, bias, layout, out, act="float32", norm=0.0, swiglu=False,
                   residual=False) -> list[Arg]:
    form = GGUF_FORMS[kind]
    if act != "float32":
        return int8_arguments(form, n, k, bias, layout, out, act, norm, swiglu, residual)
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
    args += [per(size, name, dtype, doc) for name, size, dtype, doc in scale_fields(form)]
    args += fused_weights
    if bias:
        args.append(Arg("bias", (n,), "float32", "weight"))
    return [*args, Arg(out, ("M", n), "float32", "output")]


def gguf_te(ph: Placeholders, kind: str, n, k, layout, name, act="float32", recip="127/amax", norm=0.0,
            swiglu=False, residual=False):
    """Stages: xgroup[m, g] (sub-block sums of x) and acc[m, g, n] (sub-block sums of x times the
    unsigned values) -> ysum[m, n] (scaled per sub-block; GPUs add the terms there too) -> corr[m, n]
    (CPUs: the terms, a pass of its own as W4A16's) -> out (+ residual, bias). With int8
    activations: W4A8's stages (ops/qgemm_int.py) with this type's scales."""
    from tvm import te

    form = GGUF_FORMS[kind]
    if act != "float32":
        return int8_te(ph, form, n, k, layout, name, act, recip, norm, swiglu, residual)

    nt = layout.n_tile
    x = fused_act.activation(ph, k, norm, swiglu, cpu=not layout.threaded)
    w, high, bias = ph["w"], ph.tensors.get("w_high"), ph.tensors.get("bias")
    m = x.shape[0]
    sub = form.sub
    ngroups, subs_per_block = k // sub, form.block // form.sub
    rows, row = padded_rows(m, layout.m_tile)

    def xf(i, kk):
        return x[row(i), kk].astype("float32")

    width = form.bits - 4
    if width:
        acc = _acc_merged(w, high, xf, form, rows, ngroups, n, nt)
    else:
        acc = _acc_byte_trick(w, xf, sub, k, rows, ngroups, n, nt)
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


def _acc_merged(w, high, xf, form: GGUFForm, rows, ngroups, n, nt):
    """acc[m, g, n] for 5- and 6-bit values: each value assembled from its nibble and its high bits
    in byte lanes (one SIMD op covers a register of columns), then widened once and multiplied."""
    from tvm import te

    sub, per_byte, width = form.sub, form.high_values_per_byte, form.bits - 4

    def value(j, g, r, b):  # the unsigned value at k = g * sub + r * per_byte + b
        byte = w[j // nt, g * (sub // 2) + r * (per_byte // 2) + b // 2, j % nt]
        top = high[j // nt, g * (sub // per_byte) + r, j % nt]
        low = (byte >> (b % 2 * 4)).astype("int8") & 15
        return (low | ((top >> (b * width)) & (2 ** width - 1)) << 4).astype("float32")

    r = te.reduce_axis((0, sub // per_byte), name="r")
    b = te.reduce_axis((0, per_byte), name="b")
    return te.compute((rows, ngroups, n), lambda i, g, j: te.sum(
        value(j, g, r, b) * xf(i, g * sub + r * per_byte + b), axis=[r, b]), name="acc")


def _acc_byte_trick(w, xf, sub, k, rows, ngroups, n, nt):
    """acc[m, g, n] for 4-bit values. Per byte of the nibble plane, b = u_k + 16 u_k+1 (k even):
    x_k u_k + x_k+1 u_k+1 = u_k (x_k - x_k+1 / 16) + b (x_k+1 / 16), so the byte is masked once and
    never shifted (W4A16's trick and its activation factors, here with both nibbles unsigned). (For
    5- and 6-bit values the high bits cost more as FMAs of their own than merged: _acc_merged.)"""
    from tvm import te, tirx

    xpair = byte_pair_factors(xf, rows, k // 2, 2)

    def factor(j, p, h):  # what multiplies xpair[., p, h]: u_k, the byte
        byte = w[j // nt, p, j % nt].astype("int32") & 255
        return tirx.Select(h == 0, byte & 15, byte).astype("float32")

    r = te.reduce_axis((0, sub // 2), name="r")
    h = te.reduce_axis((0, 2), name="h")
    return te.compute((rows, ngroups, n), lambda i, g, j: te.sum(
        factor(j, g * (sub // 2) + r, h) * xpair[i, g * (sub // 2) + r, h], axis=[r, h]), name="acc")


def gguf_reference_of(kind: str, inp: dict, k: int, act="float32", recip="127/amax", norm=0.0, swiglu=False,
                      residual=False) -> np.ndarray:
    """The output from logical inputs: float activations against the dequantised weights in float64;
    int8 activations quantised to Q8 blocks in numpy exactly as the kernel does (ops/qgemm_int.py)."""
    form = GGUF_FORMS[kind]
    if act != "float32":
        return int8_reference(form, inp, k, act, recip, norm, swiglu, residual)
    x = fused_act.reference_activation(inp["x"], k, norm, swiglu, inp.get("norm_w"))
    y = x.astype(np.float64) @ dequantize(kind, inp).astype(np.float64).T
    if inp.get("bias") is not None:
        y = y + inp["bias"].astype(np.float64)[None]
    return y + inp["residual"] if residual else y


def gguf_random_inputs(kind: str, n: int, k: int, m: int, bias: bool, rng) -> dict[str, np.ndarray]:
    """Float activations of a model's magnitude (a zero block: a q8 block scale of 0) and weights."""
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[:, :q8_act.BLOCK] = 0.0
    out = {"x": x, **gguf_random_weights(kind, n, k, rng)}
    if bias:
        out["bias"] = rng.standard_normal(n).astype(np.float32)
    return out


OPS = {"qgemm_gguf": GGUFGemm()}

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

from compiler.ops import fused_act, q8_act
from compiler.ops.base import Arg, OpDef, Option, Placeholders, check_divisible, padded_rows
from compiler.ops.qgemm_int import int_gemm_arguments, int_gemm_reference_of, int_gemm_te
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


# Types with an int8-activation form (the q8 model path): Q4_K's 4-bit values are int4 nibbles, so
# its GEMM is W4A8's on Q8_1 activation blocks (SDOT, VPMADDUBSW / VPDPBUSD, VRMPY, OpSDotKHR) with
# each 32-value sub-block's scale d s and minimum -dmin mn computed from the type's own fields.
# (llama.cpp rounds K-quants' activations to Q8_K, blocks of 256; ours are finer, blocks of 32.)
# The 5- and 6-bit types have none yet: they take float32 activations.
INT8_ACT_TYPES = ("Q4_K",)
ACTS = ("float32", "q8_1")


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
    if act != "float32" and kind not in INT8_ACT_TYPES:
        raise ValueError(f"{op}: act={act} (int8 activations) is built for {', '.join(INT8_ACT_TYPES)} only; "
                         f"{kind} takes float32 activations")


def gguf_arguments(kind: str, n, k, bias, layout, out, act="float32", norm=0.0, swiglu=False,
                   residual=False) -> list[Arg]:
    form = GGUF_FORMS[kind]
    if act != "float32":
        return _int8_arguments(form, n, k, bias, layout, out, norm, swiglu, residual)
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


def gguf_te(ph: Placeholders, kind: str, n, k, layout, name, act="float32", recip="127/amax", norm=0.0,
            swiglu=False, residual=False):
    """Stages: xgroup[m, g] (sub-block sums of x) and acc[m, g, n] (sub-block sums of x times the
    unsigned values) -> ysum[m, n] (scaled per sub-block; GPUs add the terms there too) -> corr[m, n]
    (CPUs: the terms, a pass of its own as W4A16's) -> out (+ residual, bias). With int8
    activations: W4A8's stages (ops/qgemm_int.py) with this type's scales."""
    from tvm import te

    form = GGUF_FORMS[kind]
    if act != "float32":
        return _int8_te(ph, form, n, k, layout, name, recip, norm, swiglu, residual)

    nt = layout.n_tile
    x = fused_act.activation(ph, k, norm, swiglu, float64_sum=not layout.threaded)
    w, high, bias = ph["w"], ph.tensors.get("w_high"), ph.tensors.get("bias")
    m = x.shape[0]
    sub, per_byte = form.sub, form.high_values_per_byte
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
    never shifted (W4A16's trick, here with both nibbles unsigned), against activation factors
    computed once per call (xpair). (For 5- and 6-bit values the high bits cost more as FMAs of
    their own than merged: _acc_merged.)"""
    from tvm import te, tirx

    def pair(i, p, h):
        lo, hi = xf(i, 2 * p), xf(i, 2 * p + 1)
        return tirx.Select(h == 0, lo - hi * 0.0625, hi * 0.0625)

    xpair = te.compute((rows, k // 2, 2), pair, name="xpair")

    def factor(j, p, h):  # what multiplies xpair[., p, h]: u_k, the byte
        byte = w[j // nt, p, j % nt].astype("int32") & 255
        return tirx.Select(h == 0, byte & 15, byte).astype("float32")

    r = te.reduce_axis((0, sub // 2), name="r")
    h = te.reduce_axis((0, 2), name="h")
    return te.compute((rows, ngroups, n), lambda i, g, j: te.sum(
        factor(j, g * (sub // 2) + r, h) * xpair[i, g * (sub // 2) + r, h], axis=[r, h]), name="acc")


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


def _int8_arguments(form: GGUFForm, n, k, bias, layout, out, norm, swiglu, residual) -> list[Arg]:
    """W4A8's arguments (q8_1 activations, unsigned nibbles) with the type's scale fields, group-major
    [K/size, N] as W4A8's block scales are on the q8 path."""
    def per(size: int, name: str, dtype: str, doc: str) -> Arg:
        return Arg(name, (k // size, n), dtype, "weight", (n, k // size), dtype,
                   ({"op": "transpose", "axes": [1, 0]},), doc=doc)

    scales = [per(form.block, "w_d", "float16", "block scale d [N, K/block]"),
              per(form.sub, "w_sub", "int8", "sub-block scale s [N, K/sub] (w = d s q ...)"),
              per(form.block, "w_dmin", "float16", "block minimum scale dmin [N, K/block]"),
              per(form.sub, "w_submin", "int8", "sub-block minimum mn [N, K/sub] (w = ... - dmin mn)")]
    return int_gemm_arguments(n, k, 4, form.sub, bias, layout, out, group_scales=True, act="q8_1", minimum=True,
                              norm=norm, swiglu=swiglu, residual=residual, unsigned=True, block_scales=scales)


def _int8_te(ph: Placeholders, form: GGUFForm, n, k, layout, name, recip, norm, swiglu, residual):
    from tvm import te

    per = form.block // form.sub

    def block_scales(ngroups, n):  # d s and -dmin mn per sub-block (exact in float32: 11 x 6 bits)
        def field(arg, g, j):
            return ph[arg][g, j].astype("float32")

        scale = te.compute((ngroups, n), lambda g, j: field("w_d", g // per, j) * field("w_sub", g, j),
                           name="w_scale_f32")
        minimum = te.compute((ngroups, n), lambda g, j: -(field("w_dmin", g // per, j) * field("w_submin", g, j)),
                             name="w_min_f32")
        return scale, minimum

    return int_gemm_te(ph, n, k, 4, form.sub, layout, name, group_scales=True, act="q8_1", recip=recip,
                       minimum=True, norm=norm, swiglu=swiglu, residual=residual, block_scales=block_scales)


def gguf_reference_of(kind: str, inp: dict, k: int, act="float32", recip="127/amax", norm=0.0, swiglu=False,
                      residual=False) -> np.ndarray:
    """The output from logical inputs: float activations against the dequantised weights in float64;
    int8 activations quantised to Q8_1 in numpy exactly as the kernel does (ops/qgemm_int.py)."""
    form = GGUF_FORMS[kind]
    if act != "float32":
        per = form.block // form.sub
        scale = np.repeat(inp["w_d"].astype(np.float32), per, axis=1) * inp["w_sub"].astype(np.float32)
        minimum = -(np.repeat(inp["w_dmin"].astype(np.float32), per, axis=1) * inp["w_submin"].astype(np.float32))
        logical = {**inp, "w": inp["w"].astype(np.int8) - 8, "w_scale": scale, "w_min": minimum + 8 * scale}
        return int_gemm_reference_of(logical, k, form.sub, act=act, recip=recip, minimum=True, norm=norm,
                                     swiglu=swiglu, residual=residual)
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

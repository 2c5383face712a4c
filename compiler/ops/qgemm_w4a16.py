"""Weight-only int4 GEMM with float activations (W4A16): the decode workhorse on memory-bound devices.

y[m, n] = sum_k x[m, k] * (w[n, k] - w_zero[n, k/g]) * w_scale[n, k/g] + bias[n]
The weight is stored [N/nt, K/2, nt] bytes: for each pair of k, the nt outputs of a tile are
adjacent (the schedule vectorises over outputs), and byte l holds output l at k in its low nibble
(offset binary, u = w + 8) and at k + 1 in its high nibble (two's complement). The inner loop never
isolates the high nibble: the signed byte is b = 16 w_k+1 + u, so
x_k w_k + x_k+1 w_k+1 = u (x_k - x_k+1 / 16) + b (x_k+1 / 16) - 8 x_k: per byte it widens b,
masks u, converts both and does two FMAs, against activation factors computed once per call
("xpair"). The column-independent -8 x_k terms are summed per group and added once per group and
column with the output (with the block minimums' terms), not per byte. A zero point costs one more
FMA per byte: sum x (w - z) = sum x w - z sum x.
"""

from __future__ import annotations


import numpy as np

from compiler.ops import fused_act
from compiler.ops.base import (
    Arg,
    OpDef,
    Option,
    Placeholders,
    check_divisible,
    padded_rows,
)
from compiler.specs import KernelSpec

ACT_DTYPES = ("float32", "float16")


class W4A16Gemm(OpDef):
    def __init__(self):
        super().__init__("qgemm_w4a16", ("n", "k"), {
            "group": Option(128, (32, 64, 128), tag=lambda g: f"g{g}"),
            "zero": Option(False, tag=lambda z: "asym" if z else ""),
            # an additive per-group term (GGUF Q4_1's block minimum): w_real = w * scale + min
            "min": Option(False, tag=lambda m: "min" if m else ""),
            "act": Option("float32", ACT_DTYPES, tag=lambda a: "" if a == "float32" else "f16"),
            "bias": Option(False),
            **fused_act.OPTIONS,
        })

    def validate(self, spec: KernelSpec) -> None:
        check_divisible(self.name, "k", spec.dim("k"), spec.opt("group"))
        check_divisible(self.name, "n", spec.dim("n"), 2)

    def arguments(self, spec: KernelSpec, layout) -> list[Arg]:
        n, k = spec.dim("n"), spec.dim("k")
        return w4a16_arguments(n, k, spec.opt("group"), spec.opt("zero"), spec.opt("act"), spec.opt("bias"),
                               layout, out="y", minimum=spec.opt("min"), **fused_act.options(spec))

    def build(self, spec: KernelSpec, layout):
        args = self.arguments(spec, layout)
        ph = Placeholders(args, layout)
        y = w4a16_te(ph, spec.dim("n"), spec.dim("k"), spec.opt("group"), layout, "y", **fused_act.options(spec))
        return ph.prim_func(args, {"y": y})

    def flops(self, spec, sizes):
        return 2.0 * sizes["M"] * spec.dim("n") * spec.dim("k")

    def reference(self, spec: KernelSpec, **inp: np.ndarray) -> dict[str, np.ndarray]:
        x = fused_act.reference_activation(inp["x"], spec.dim("k"), spec.opt("norm"), spec.opt("swiglu"),
                                           inp.get("norm_w"))
        y = w4a16_reference(x, inp["w"], inp["w_scale"], inp.get("w_zero"), spec.opt("group"), inp.get("bias"),
                            inp.get("w_min"))
        return {"y": y + inp["residual"] if spec.opt("residual") else y}

    def random_inputs(self, spec, sizes, rng):
        n, k, m = spec.dim("n"), spec.dim("k"), sizes["M"]
        inputs = w4a16_random(n, k, m, spec.opt("group"), spec.opt("zero"), spec.opt("act"), spec.opt("bias"), rng,
                              minimum=spec.opt("min"))
        return fused_act.random_extras(inputs, k, n, m, rng=rng, **fused_act.options(spec))


def w4a16_arguments(n, k, group, zero, act, bias, layout, out, minimum=False, norm=0.0, swiglu=False,
                    residual=False) -> list[Arg]:
    nt = layout.n_tile
    check_divisible("qgemm_w4a16", "n", n, nt)
    # both nibbles offset binary for the SIMD float16 form (_acc_fp16_lanes), else the high one signed
    offsets = {"low_offset": 8, "high_offset": 8} if _fp16_lanes(layout) else {"low_offset": 8}
    steps = (
        {"op": "check_range", "min": -8, "max": 7},
        {"op": "reshape", "shape": [n // nt, nt, k // 2, 2]},
        {"op": "transpose", "axes": [0, 2, 1, 3]},
        {"op": "nibbles", **offsets},
        {"op": "reshape", "shape": [n // nt, k // 2, nt]},
    )
    # Scales (and zeros) tiled like the weight, [N/nt, K/g, nt]: one vector load per group.
    tiled = ({"op": "reshape", "shape": [n // nt, nt, k // group]}, {"op": "transpose", "axes": [0, 2, 1]})
    fused_weights, fused_inputs = fused_act.extra_args(k, n, norm, residual)
    args = [
        fused_act.x_arg(k, swiglu, act),
        *fused_inputs,
        Arg("w", (n // nt, k // 2, nt), "int8", "weight", (n, k), "int8", steps,
            doc="int4 weight values in [-8, 7], given as int8 [N, K]"),
        Arg("w_scale", (n // nt, k // group, nt), "float32", "weight", (n, k // group), "float32", tiled,
            doc="per-group scale [N, K/group]"),
    ]
    if zero:
        args.append(Arg("w_zero", (n // nt, k // group, nt), "float32", "weight", (n, k // group), "float32", tiled,
                        doc="per-group zero point in the int4 domain: w_real = (w - w_zero) * w_scale"))
    if minimum:
        args.append(Arg("w_min", (n // nt, k // group, nt), "float32", "weight", (n, k // group), "float32", tiled,
                        doc="per-group additive term [N, K/group]: w_real = (w - w_zero) * w_scale + w_min"))
    args += fused_weights
    if bias:
        args.append(Arg("bias", (n,), "float32", "weight"))
    args.append(Arg(out, ("M", n), "float32", "output"))
    return args


def w4a16_te(ph: Placeholders, n, k, group, layout, name, norm=0.0, swiglu=False, residual=False):
    """Stages: xpair[m, k/2, 2 or 3] (fp32 form only: the activation factors of each weight byte,
    see the module doc) and xgroup[m, k/g, 2] (group sums of x) -> acc[m, g, n] (group partial sums
    of x * (w - zero), unscaled) -> ysum[m, n] (scaled once per group, summed over groups) -> y
    (+ the group terms, bias)."""
    from tvm import te, tirx

    nt = layout.n_tile
    x, w, ws = fused_act.activation(ph, k, norm, swiglu, cpu=not layout.threaded), ph["w"], ph["w_scale"]
    wz, wmin, bias = ph.tensors.get("w_zero"), ph.tensors.get("w_min"), ph.tensors.get("bias")
    m = x.shape[0]
    ngroups, pairs = k // group, group // 2
    rows, row = padded_rows(m, layout.m_tile)

    def xf(i, kk):
        return x[row(i), kk].astype("float32")

    # per group: -8 x the sum of x at even k (the low nibble is offset binary), and the sum of all x
    # (for block minimums)
    rs = te.reduce_axis((0, group), name="rs")
    xgroup = te.compute((rows, ngroups, 2), lambda i, g, h: te.sum(te.if_then_else(
        h == 1, xf(i, g * group + rs),
        te.if_then_else(rs % 2 == 0, xf(i, g * group + rs) * tirx.const(-8.0, "float32"), tirx.const(0.0, "float32"))),
        axis=rs), name="xgroup")
    lanes16 = _fp16_lanes(layout)
    if lanes16:
        acc, row_scale = _acc_fp16_lanes(xf, w, rows, n, k, group, nt)
    elif layout.float_math == "float16":
        acc = _acc_fp16(xf, w, wz, rows, n, ngroups, pairs, nt)
    else:
        acc = _acc_fp32(xf, w, wz, rows, n, ngroups, pairs, nt)
    # The group terms: scale x the -8 x_k terms (not in the float16 SIMD form: its weights are signed),
    # minus a zero point's scale x z x the group's sum of x (there: the fp32 form folds it into the
    # bytes' factors), and with block minimums sum_k x w_min = sum_g w_min[g] * (sum of x over group g).
    def group_terms(i, j, g):
        t, c = j // nt, j % nt
        if lanes16:
            value = -ws[t, g, c] * wz[t, g, c] * xgroup[i, g, 1] if wz is not None else tirx.const(0.0, "float32")
        else:
            value = ws[t, g, c] * xgroup[i, g, 0]
        return value + wmin[t, g, c] * xgroup[i, g, 1] if wmin is not None else value

    chunks = acc.shape[1]  # partial sums per group: one, or (float16 SIMD form) one per chunk of k
    rg = te.reduce_axis((0, chunks), name="rg")

    def scaled_sum(i, j, c):
        return acc[i, c, j].astype("float32") * ws[j // nt, c * ngroups // chunks, j % nt]
    if layout.group_terms_in_sum:  # GPUs: added where each group's sum is scaled, one pass
        ysum = te.compute((rows, n), lambda i, j: te.sum(scaled_sum(i, j, rg) + group_terms(i, j, rg), axis=rg),
                          name="ysum")
        corr = None
    else:  # CPUs: a small GEMM over group sums of its own, scheduled apart (schedules/cpu/gemm_tiles)
        ysum = te.compute((rows, n), lambda i, j: te.sum(scaled_sum(i, j, rg), axis=rg), name="ysum")
        rm = te.reduce_axis((0, ngroups), name="rm")
        has_terms = wmin is not None or not lanes16 or wz is not None
        corr = te.compute((m, n), lambda i, j: te.sum(group_terms(i, j, rm), axis=rm), name="corr") if has_terms else None

    def output(i, j):
        value = ysum[i, j] * row_scale(i) if lanes16 else ysum[i, j]
        value = value + corr[i, j] if corr is not None else value
        if residual:
            value = value + ph["residual"][i, j]
        return value + bias[j] if bias is not None else value

    return te.compute((m, n), output, name=name)


def byte_pair_factors(xf, rows, pairs: int, terms: int):
    """xpair[m, p, h]: the activation factors of weight byte p (k = 2p, 2p + 1), computed once per
    call: x_k - x_k+1 / 16 (times the low nibble), x_k+1 / 16 (times the byte) and, with terms=3,
    x_k + x_k+1 (times a zero point). Shared with GGUF's Q4_K (ops/qgemm_gguf.py)."""
    from tvm import te, tirx

    def pair(i, p, h):
        lo, hi = xf(i, 2 * p), xf(i, 2 * p + 1)
        return tirx.Select(h == 0, lo - hi * 0.0625, tirx.Select(h == 1, hi * 0.0625, lo + hi))

    return te.compute((rows, pairs, terms), pair, name="xpair")


def _acc_fp32(xf, w, wz, rows, n, ngroups, pairs, nt):
    """acc[m, g, n], the group sums of x * (w - zero) + 8 x_even (xf(row, k): x as float32), with the
    byte trick of the module doc: per byte, two or three FMAs against activation factors computed
    once per call (xpair)."""
    from tvm import te, tirx

    terms = 3 if wz is not None else 2
    xpair = byte_pair_factors(xf, rows, ngroups * pairs, terms)

    def factor(g, j, p, h):  # what multiplies xpair[., p, h]: the low nibble u, the signed byte b, -zero
        byte = w[j // nt, p, j % nt].astype("int32")
        rest = -wz[j // nt, g, j % nt] if wz is not None else tirx.const(0.0, "float32")
        return tirx.Select(h == 0, (byte & 15).astype("float32"), tirx.Select(h == 1, byte.astype("float32"), rest))

    # Reducing over (pair, factor) makes each factor its own FMA into the accumulator.
    r = te.reduce_axis((0, pairs), name="r")
    h = te.reduce_axis((0, terms), name="h")
    return te.compute((rows, ngroups, n), lambda i, g, j: te.sum(
        factor(g, j, g * pairs + r, h) * xpair[i, g * pairs + r, h], axis=[r, h]), name="acc")


def _acc_fp16(xf, w, wz, rows, n, ngroups, pairs, nt):
    """acc[m, g, n] as in _acc_fp32, with each weight byte's products in float16 and the sum over
    bytes in float32 (GPUs with fast fp16: Mali, Adreno). The nibbles are small integers, exact in
    fp16, so no byte trick is needed (it cancels terms, which fp16 cannot afford): per byte
    u x_k + w_k+1 x_k+1 (- zero (x_k + x_k+1)), with u = w_k + 8 as in the fp32 form."""
    from tvm import te

    def byte_sum(i, g, j, p):
        byte = w[j // nt, p, j % nt].astype("int32")
        lo, hi = xf(i, 2 * p).astype("float16"), xf(i, 2 * p + 1).astype("float16")
        value = (byte & 15).astype("float16") * lo + (byte >> 4).astype("float16") * hi
        if wz is not None:
            value = value - wz[j // nt, g, j % nt].astype("float16") * (lo + hi)
        return value.astype("float32")

    r = te.reduce_axis((0, pairs), name="r")
    return te.compute((rows, ngroups, n), lambda i, g, j: te.sum(
        byte_sum(i, g, j, g * pairs + r), axis=r), name="acc")


# k per float16 partial sum of the SIMD float16 form: its rounding error grows with the chain (32
# products of |w| <= 8 and |x| <= 1: ~1e-3 of the largest output, within fp16_tolerance)
FP16_CHUNK = 32
# A row scale of at least this: 1 / max|x| of a row of tiny values (below ~3e-39) would overflow
SMALLEST_NORMAL = 2.0 ** -126


def _fp16_lanes(layout) -> bool:
    """The float16 form of SIMD lanes (CPUs with float16 arithmetic), not the GPUs' per-thread one."""
    return layout.float_math == "float16" and not layout.threaded


def _acc_fp16_lanes(xf, w, rows, n, k, group, nt):
    """(acc[m, k/chunk, n], row_scale(m)): float16 partial sums of x / max|x| times the signed weights
    over chunks of FP16_CHUNK k (NEON FMLA on 8 half lanes, twice the float32 rate), and each row's
    max|x| (at least SMALLEST_NORMAL), by which the scaled sums are multiplied back. Dividing by the
    row's max keeps every product within +-8 and a chunk's sum within float16's range, whatever the
    activations' size. Both nibbles are offset binary (u = w + 8): the bits 0x6400 | u are the
    float16 1024 + u, so a weight is exact without a conversion (UCVTF on 8 half lanes: 4 uops on one
    pipe of the A76 model); the ARM intrinsic computes the same halves by a table lookup
    (schedules/cpu/intrinsics_half.py)."""
    from tvm import te, tirx

    rk = te.reduce_axis((0, k), name="rk")
    amax = te.compute((rows,), lambda i: te.max(te.abs(xf(i, rk)), axis=rk), name="x_amax")

    def row_scale(i):  # max|x|, at least the smallest normal float32: 1 / max|x| must be finite
        return tirx.max(amax[i], tirx.const(SMALLEST_NORMAL, "float32"))

    inv = te.compute((rows,), lambda i: 1.0 / row_scale(i), name="x_inv")
    xh = te.compute((rows, k), lambda i, kk: (xf(i, kk) * inv[i]).astype("float16"), name="x_f16")
    chunk = min(group, FP16_CHUNK)

    def weight(j, p, h):  # the nibble h of byte p (k = 2p + h), as schedules/cpu/intrinsics_half.py reads it
        byte = w[j // nt, p, j % nt].astype("int32")
        bits = ((byte >> (h * 4)) & 15) | 0x6400
        return tirx.reinterpret("float16", bits.astype("uint16")) - tirx.const(1032.0, "float16")

    r = te.reduce_axis((0, chunk // 2), name="r")
    h = te.reduce_axis((0, 2), name="h")
    acc = te.compute((rows, k // chunk, n), lambda i, c, j: te.sum(
        weight(j, c * (chunk // 2) + r, h) * xh[i, 2 * (c * (chunk // 2) + r) + h], axis=[r, h]), name="acc")
    return acc, row_scale


def w4a16_reference(x, w, w_scale, w_zero, group, bias=None, w_min=None) -> np.ndarray:
    n, k = w.shape
    s = np.repeat(w_scale.astype(np.float64), group, axis=1)
    z = np.repeat(w_zero.astype(np.float64), group, axis=1) if w_zero is not None else 0.0
    lo = np.repeat(w_min.astype(np.float64), group, axis=1) if w_min is not None else 0.0
    y = x.astype(np.float64) @ ((w.astype(np.float64) - z) * s + lo).T
    return y + bias.astype(np.float64)[None] if bias is not None else y


def w4a16_random(n, k, m, group, zero, act, bias, rng, minimum=False) -> dict[str, np.ndarray]:
    out = {
        "x": rng.standard_normal((m, k)).astype(act),
        "w": rng.integers(-8, 8, (n, k), dtype=np.int8),
        "w_scale": rng.uniform(0.005, 0.02, (n, k // group)).astype(np.float32),
    }
    if zero:
        out["w_zero"] = rng.uniform(-1.0, 1.0, (n, k // group)).astype(np.float32)
    if minimum:
        out["w_min"] = rng.uniform(-0.1, 0.1, (n, k // group)).astype(np.float32)
    if bias:
        out["bias"] = rng.standard_normal(n).astype(np.float32)
    return out


OPS = {"qgemm_w4a16": W4A16Gemm()}

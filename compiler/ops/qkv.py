"""Fused QKV projection: one quantized GEMM for Q, K and V, RoPE on Q and K, head-major outputs.

proj[m, :] = x[m] @ W^T (W = [Wq; Wk; Wv], (Hq + 2 Hkv) * D rows) in any of the quantized forms,
then q[h, m, :] = rope(proj[m, h*D : (h+1)*D], positions[m]) (rotate-half, theta given), likewise k,
and v copied, all written in the [heads, tokens, D] layout attention reads. With v=False the
projection has no V rows (a GGUF whose V weights are of another type than Q's and K's computes V
with a GEMM of its own).
The rotation angles are computed once per token (cos/sin table), so long positions lose no
precision: in float64 turns on CPUs (then cos and sin by float32 polynomials, no libm calls); on
GPUs (layout `rope_dtype` float32: mobile GPUs have no float64) as exact float32 turn counts, see
`_turns_float32`. Every head reuses the table.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from compiler.ops import fused_act, q8_act
from compiler.ops.base import Arg, OpDef, Option, Placeholders, check_divisible
from compiler.ops.qgemm_int import (
    int_gemm_arguments,
    int_gemm_random,
    int_gemm_reference_of,
    int_gemm_te,
)
from compiler.ops.gguf_forms import GGUF_FORMS
from compiler.ops.qgemm_gguf import gguf_arguments, gguf_random_inputs, gguf_reference_of, gguf_te, \
    validate_shape
from compiler.ops.qgemm_w8a16 import w8a16_arguments, w8a16_random, w8a16_reference, w8a16_te
from compiler.ops.qgemm_w4a16 import (
    w4a16_arguments,
    w4a16_random,
    w4a16_reference,
    w4a16_te,
)
from compiler.specs import KernelSpec

QUANT_FORMS = ("w8a8", "w4a8", "w4a16", "w8a16", "gguf")
FLOAT_ACT_FORMS = ("w4a16", "w8a16", "gguf")  # weight-only forms: float activations, norm fusion


class QKVProj(OpDef):
    def __init__(self):
        super().__init__("qkv_proj", ("hq", "hkv", "d", "k"), {
            "quant": Option("w8a8", QUANT_FORMS, tag=str),
            "type": Option("Q4_K", tuple(GGUF_FORMS), tag=lambda t: ""),  # quant="gguf": the GGUF type (ops/qgemm_gguf.py)
            "group": Option(128, (32, 64, 128), tag=lambda g: f"g{g}"),
            "zero": Option(False, tag=lambda z: "asym" if z else ""),
            # the block minimum of GGUF Q4_1: w4a16, or w4a8 with act=q8_1
            "min": Option(False, tag=lambda m: "min" if m else ""),
            "bias": Option(False),
            **q8_act.OPTIONS,  # int8-activation forms: quantised by the caller, or in the kernel (q8_0/q8_1)
            "rope": Option(True),
            "v": Option(True, tag=lambda v: "" if v else "nov"),  # False: Q and K rows only, no v output
            "rope_theta": Option(10000.0, tag=lambda t: ""),
            "norm": fused_act.OPTIONS["norm"],  # the attention block's RMSNorm (float activations in)
        })

    @staticmethod
    def n_total(spec: KernelSpec) -> int:
        return qkv_rows(spec)

    def spec_name(self, spec: KernelSpec) -> str:
        # The group only matters for int4 forms and theta only with RoPE: keep names short and stable.
        name = super().spec_name(spec)
        if spec.opt("quant") == "w8a8" and not q8_act.in_kernel(spec):  # per channel: no group
            name = name.replace(f"_g{spec.opt('group')}", "")
        if spec.opt("quant") == "gguf":  # the type's blocks, not the group, say what the weights are
            name = name.replace(f"_gguf_g{spec.opt('group')}", f"_gguf_{spec.opt('type').lower()}")
        if spec.opt("rope"):
            theta = spec.opt("rope_theta")
            name += f"_theta{int(theta)}" if float(theta).is_integer() else f"_theta{theta:g}".replace(".", "p")
        return name

    def validate(self, spec: KernelSpec) -> None:
        hq, hkv, d, k = (spec.dim(x) for x in ("hq", "hkv", "d", "k"))
        check_divisible(self.name, "hq", hq, hkv)
        check_divisible(self.name, "d", d, 2)
        check_divisible(self.name, "k", k, 4)
        if spec.opt("quant") == "gguf":
            validate_shape(self.name, spec.opt("type"), self.n_total(spec), k, gguf_act(spec))
        elif spec.opt("quant") != "w8a8" or q8_act.in_kernel(spec):
            check_divisible(self.name, "k", k, spec.opt("group"))
        if spec.opt("quant") not in FLOAT_ACT_FORMS:  # int8 weight tiles hold 4 output columns
            check_divisible(self.name, "(hq + 2 hkv) * d", self.n_total(spec), 4)
        if spec.opt("quant") == "gguf" and spec.opt("min"):
            raise ValueError("qkv_proj: min=True is W4A16's / W4A8's block minimum; a GGUF type's own terms come with "
                             "quant='gguf'")
        if spec.opt("zero") and spec.opt("quant") != "w4a16":
            raise ValueError("qkv_proj: zero=True (a per-group weight zero point) needs quant='w4a16'")
        float_act = spec.opt("quant") in FLOAT_ACT_FORMS
        if float_act and q8_act.in_kernel(spec) and spec.opt("quant") != "gguf":
            raise ValueError(f"qkv_proj: act={spec.opt('act')} quantises activations for an int8 form (w8a8, w4a8), "
                             f"not {spec.opt('quant')}")
        if not float_act:  # (quant="gguf" checks its own: validate_shape)
            q8_act.validate(self.name, spec, self.int_form(spec)[1], self.int_form(spec)[0])
            q8_act.validate_minimum(self.name, spec)
        if spec.opt("norm") and not (float_act or q8_act.in_kernel(spec)):
            raise ValueError(f"qkv_proj: norm (a fused RMSNorm) needs float activations: a form of {FLOAT_ACT_FORMS}, "
                             "or act=q8_0/q8_1")
        if not spec.opt("rope_theta") > 0:
            raise ValueError("qkv_proj: rope_theta must be positive")

    def tolerances(self, spec: KernelSpec, layout):
        exact_sums = spec.opt("quant") not in FLOAT_ACT_FORMS or gguf_act(spec) != "float32"
        return {name: (2e-5, 2e-5) if exact_sums else self.default_tolerance(layout) for name in ("q", "k", "v")
                if name != "v" or spec.opt("v")}

    @staticmethod
    def int_form(spec: KernelSpec) -> tuple[int, int]:
        """(weight bits, K group) of the int8-activation forms: W8A8 has one group spanning K
        (per-channel scales) unless its activations are block-quantised in the kernel (GGUF Q8_0)."""
        if spec.opt("quant") == "w8a8":
            return 8, spec.opt("group") if q8_act.in_kernel(spec) else spec.dim("k")
        return 4, spec.opt("group")

    @staticmethod
    def int_forms(spec: KernelSpec) -> dict:
        """Keyword arguments of the int GEMM functions for this spec's activation form."""
        return {"group_scales": spec.opt("quant") == "w4a8" or q8_act.in_kernel(spec), "act": spec.opt("act"),
                "minimum": spec.opt("min"), "norm": spec.opt("norm")}

    def _gemm_args(self, spec: KernelSpec, layout) -> list[Arg]:
        n, k, quant = self.n_total(spec), spec.dim("k"), spec.opt("quant")
        if quant == "w4a16":
            return w4a16_arguments(n, k, spec.opt("group"), spec.opt("zero"), "float32", spec.opt("bias"), layout,
                                   out="proj", minimum=spec.opt("min"), norm=spec.opt("norm"))
        if quant == "w8a16":
            return w8a16_arguments(n, k, spec.opt("group"), spec.opt("bias"), layout, "proj", norm=spec.opt("norm"))
        if quant == "gguf":
            return gguf_arguments(spec.opt("type"), n, k, spec.opt("bias"), layout, "proj", act=gguf_act(spec),
                                  norm=spec.opt("norm"))
        return int_gemm_arguments(n, k, *self.int_form(spec), spec.opt("bias"), layout, out="proj", **self.int_forms(spec))

    def arguments(self, spec: KernelSpec, layout) -> list[Arg]:
        hq, hkv, d = spec.dim("hq"), spec.dim("hkv"), spec.dim("d")
        args = [a for a in self._gemm_args(spec, layout) if a.role != "output"]
        for i, a in enumerate(args):
            if a.name == "w":
                parts = "Wq, then Wk, then Wv" if spec.opt("v") else "Wq, then Wk"
                args[i] = dataclasses.replace(a, doc=a.doc + f": rows are {parts}, concatenated")
        if spec.opt("rope"):
            args.append(Arg("positions", ("M",), "int32", "input", doc="token positions for RoPE"))
        args += [Arg("q", (hq, "M", d), "float32", "output"),
                 Arg("k", (hkv, "M", d), "float32", "output")]
        if spec.opt("v"):
            args.append(Arg("v", (hkv, "M", d), "float32", "output"))
        return args

    def build(self, spec: KernelSpec, layout):
        from tvm import te, tirx

        args = self.arguments(spec, layout)
        ph = Placeholders(args, layout)
        hq, hkv, d, k = (spec.dim(x) for x in ("hq", "hkv", "d", "k"))
        n, quant = self.n_total(spec), spec.opt("quant")
        if quant == "w4a16":
            proj = w4a16_te(ph, n, k, spec.opt("group"), layout, "proj", norm=spec.opt("norm"))
        elif quant == "w8a16":
            proj = w8a16_te(ph, n, k, spec.opt("group"), layout, "proj", norm=spec.opt("norm"))
        elif quant == "gguf":
            proj = gguf_te(ph, spec.opt("type"), n, k, layout, "proj", act=gguf_act(spec), recip=spec.opt("q8_recip"),
                           norm=spec.opt("norm"))
        else:
            proj = int_gemm_te(ph, n, k, *self.int_form(spec), layout, "proj", recip=spec.opt("q8_recip"),
                               **self.int_forms(spec))
        m = proj.shape[0]
        half = d // 2

        if spec.opt("rope"):
            pos = ph["positions"]
            log_theta = math.log(spec.opt("rope_theta"))

            if layout.rope_dtype == "float32":
                def angle(i, f):
                    return tirx.const(2 * math.pi, "float32") * _turns_float32(pos[i], f, half, log_theta, d)

                cos = te.compute((m, half), lambda i, f: te.cos(angle(i, f)).astype("float32"), name="rope_cos")
                sin = te.compute((m, half), lambda i, f: te.sin(angle(i, f)).astype("float32"), name="rope_sin")
            else:
                cos, sin = _cos_sin_float64_turns(pos, m, half, log_theta, d)

            def rotated(base):
                def f(h, i, c):
                    col = base + h * d
                    sign = te.if_then_else(c < half, tirx.const(-1.0, "float32"), tirx.const(1.0, "float32"))
                    partner = proj[i, col + (c + half) % d] * sign
                    return proj[i, col + c] * cos[i, c % half] + partner * sin[i, c % half]
                return f
        else:
            def rotated(base):
                return lambda h, i, c: proj[i, base + h * d + c]

        q = te.compute((hq, m, d), rotated(0), name="q_out")
        kk = te.compute((hkv, m, d), rotated(hq * d), name="k_out")
        outputs = {"q": q, "k": kk}
        if spec.opt("v"):
            outputs["v"] = te.compute((hkv, m, d), lambda h, i, c: proj[i, (hq + hkv) * d + h * d + c], name="v_out")
        return ph.prim_func(args, outputs)

    def flops(self, spec, sizes):
        return 2.0 * sizes["M"] * self.n_total(spec) * spec.dim("k")

    def reference(self, spec: KernelSpec, **inp: np.ndarray) -> dict[str, np.ndarray]:
        quant = spec.opt("quant")
        if quant == "gguf":
            proj = gguf_reference_of(spec.opt("type"), inp, spec.dim("k"), gguf_act(spec), spec.opt("q8_recip"),
                                     norm=spec.opt("norm"))
            return self._heads(spec, proj, inp)
        if quant not in FLOAT_ACT_FORMS:
            _, group = self.int_form(spec)
            forms = {key: v for key, v in self.int_forms(spec).items() if key != "group_scales"}
            proj = int_gemm_reference_of(inp, spec.dim("k"), group, recip=spec.opt("q8_recip"), **forms)
            return self._heads(spec, proj, inp)
        x = fused_act.reference_activation(inp["x"], spec.dim("k"), spec.opt("norm"), False, inp.get("norm_w"))
        if quant == "w8a16":
            proj = w8a16_reference(x, inp["w"], inp["w_scale"], spec.opt("group"), inp.get("bias"))
        else:
            proj = w4a16_reference(x, inp["w"], inp["w_scale"], inp.get("w_zero"), spec.opt("group"),
                                   inp.get("bias"), inp.get("w_min"))
        return self._heads(spec, proj, inp)

    def _heads(self, spec: KernelSpec, proj: np.ndarray, inp: dict) -> dict[str, np.ndarray]:
        """The projection [M, (Hq + 2 Hkv) D] as rotated Q, K and V heads."""
        hq, hkv, d = (spec.dim(x) for x in ("hq", "hkv", "d"))
        m = proj.shape[0]
        heads = proj.reshape(m, -1, d).transpose(1, 0, 2)
        q, kk, v = heads[:hq], heads[hq:hq + hkv], heads[hq + hkv:]
        if spec.opt("rope"):
            q, kk = (rope_reference(t, inp["positions"], spec.opt("rope_theta")) for t in (q, kk))
        return {"q": q, "k": kk, "v": v} if spec.opt("v") else {"q": q, "k": kk}

    def random_inputs(self, spec, sizes, rng):
        m, n, k, quant = sizes["M"], self.n_total(spec), spec.dim("k"), spec.opt("quant")
        if quant == "w8a16":
            out = w8a16_random(n, k, m, spec.opt("group"), spec.opt("bias"), rng)
        elif quant == "w4a16":
            out = w4a16_random(n, k, m, spec.opt("group"), spec.opt("zero"), "float32", spec.opt("bias"), rng,
                               minimum=spec.opt("min"))
        elif quant == "gguf":
            out = gguf_random_inputs(spec.opt("type"), n, k, m, spec.opt("bias"), rng)
        else:
            forms = self.int_forms(spec)
            out = int_gemm_random(n, k, m, *self.int_form(spec), spec.opt("bias"), rng,
                                  group_scales=forms["group_scales"], act=forms["act"], minimum=forms["minimum"])
        if spec.opt("rope"):
            out["positions"] = rng.integers(0, 8192, m).astype(np.int32)
        return fused_act.random_extras(out, k, n, m, spec.opt("norm"), False, False, rng)


def gguf_act(spec: KernelSpec) -> str:
    """quant="gguf": the GGUF form's activations, quantised in the kernel (act=q8_0 / q8_1) or float32
    (the default act, "int8", which for the int forms means quantised by the caller)."""
    return spec.opt("act") if q8_act.in_kernel(spec) else "float32"


def qkv_rows(spec: KernelSpec) -> int:
    """Rows of the fused projection: every head's of Q and K, and V's unless v=False."""
    return (spec.dim("hq") + (2 if spec.opt("v") else 1) * spec.dim("hkv")) * spec.dim("d")


def _split_bits(value: float, bits: int) -> float:
    """value rounded to `bits` significant bits (so a product with a < 2**(24 - bits) integer is exact in float32)."""
    if value == 0.0:
        return 0.0
    exponent = math.floor(math.log2(abs(value))) - bits + 1
    return round(value / 2.0**exponent) * 2.0**exponent


def _turns_float32(position, f, half: int, log_theta: float, d: int):
    """frac(position * inv_freq[f] / 2pi) in float32 to ~1e-7 for positions below 2**17, where a
    plain float32 product would be off by ~1e-3 rad at 8k: the per-frequency constant (computed in
    float64 here) is split into two 7-bit parts, whose products with the position are exact, and a
    remainder; each part's fraction is taken before adding."""
    from tvm import te, tirx

    parts = ([], [], [])
    for i in range(half):
        c = math.exp(-2.0 * log_theta * i / d) / (2 * math.pi)
        hi = _split_bits(c, 7)
        mid = _split_bits(c - hi, 7)
        for part, value in zip(parts, (hi, mid, c - hi - mid)):
            part.append(value)

    def table(values):
        expr = tirx.const(values[-1], "float32")
        for i in range(half - 2, -1, -1):
            expr = tirx.Select(f == i, tirx.const(values[i], "float32"), expr)
        return expr

    p = position.astype("float32")

    def fract(x):
        return x - te.floor(x)

    hi, mid, lo = (table(part) for part in parts)
    return fract(fract(p * hi) + fract(p * mid) + p * lo)


def _cos_sin_float64_turns(pos, m: int, half: int, log_theta: float, d: int):
    """The CPU table: each angle in float64 turns (position x frequency / 2 pi, one exp per
    frequency per call), reduced to a quarter turn and a quadrant there (exact), then cos and sin by
    float32 polynomials (fast_math): within ~2e-7 rad at any position below 2**31. libm's float64
    cos / sin / exp were four calls per (token, frequency)."""
    from tvm import te, tirx

    from compiler.ops.fast_math import fast_sin_turns

    turns_per_position = te.compute((half,), lambda f: te.exp(
        tirx.const(-2.0 * log_theta / d, "float64") * f.astype("float64")) * tirx.const(0.5 / math.pi, "float64"),
        name="rope_freq")

    def turns(i, f):
        return pos[i].astype("float64") * turns_per_position[f]

    # t = r + q / 4 with r in [-1/8, 1/8] (exact in float64), as a table of r and one of q
    quadrant = te.compute((m, half), lambda i, f: te.floor(
        turns(i, f) * tirx.const(4.0, "float64") + tirx.const(0.5, "float64")).astype("int32"), name="rope_quadrant")
    turn = te.compute((m, half), lambda i, f: (turns(i, f) - quadrant[i, f].astype("float64") * tirx.const(
        0.25, "float64")).astype("float32"), name="rope_turn")
    cos = te.compute((m, half), lambda i, f: fast_sin_turns(turn[i, f], quadrant[i, f] + 1), name="rope_cos")
    sin = te.compute((m, half), lambda i, f: fast_sin_turns(turn[i, f], quadrant[i, f]), name="rope_sin")
    return cos, sin


def rope_reference(t: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """Rotate-half RoPE of t [heads, M, D] in float64."""
    d = t.shape[-1]
    inv_freq = theta ** (-np.arange(0, d // 2, dtype=np.float64) * 2.0 / d)
    ang = positions.astype(np.float64)[:, None] * inv_freq[None]
    cos, sin = np.cos(ang), np.sin(ang)
    x1, x2 = t[..., : d // 2], t[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


OPS = {"qkv_proj": QKVProj()}

"""GGUF types on int8 activations (the q8 model path): their 4-, 5- and 6-bit values are W4A8's int4
nibbles (5 and 6 bits: plus a plane of the bits above), so the GEMM is W4A8's (ops/qgemm_int.py), with
each block's or sub-block's scale and minimum computed in the kernel from the type's own fields, so
the resident bytes stay the file's. Q5_0 x Q8_0 and Q5_1 x Q8_1 are llama.cpp's own arithmetic;
llama.cpp rounds the K-quants' activations to Q8_K blocks of 256, ours are finer (Q8_1 or Q8_0,
blocks of 32; Q6_K's offset of 32 is paid per sub-block of 16 from the activations' sums of 16, as
llama.cpp pays it from Q8_K's)."""

from __future__ import annotations

import numpy as np

from compiler.ops.base import Arg, Placeholders
from compiler.ops.gguf_forms import GGUFForm, scale_fields
from compiler.ops.qgemm_int import int_gemm_arguments, int_gemm_reference_of, int_gemm_te


def int8_arguments(form: GGUFForm, n, k, bias, layout, out, act, norm, swiglu, residual) -> list[Arg]:
    """W4A8's arguments (unsigned nibbles; 5 and 6 bits: and their high bits) with the type's scale fields,
    group-major [K/size, N] as W4A8's block scales are on the q8 path."""
    if not form.minimum and form.offset != 2 ** (form.bits - 1):  # W4A8's kernel subtracts half the range
        raise ValueError(f"a GGUF form of {form.bits}-bit values offset by {form.offset} has no int8 form")

    def per(size: int, name: str, dtype: str, doc: str) -> Arg:
        return Arg(name, (k // size, n), dtype, "weight", (n, k // size), dtype,
                   ({"op": "transpose", "axes": [1, 0]},), doc=doc)

    scales = [per(size, name, dtype, doc) for name, size, dtype, doc in scale_fields(form)]
    return int_gemm_arguments(n, k, form.bits, form.sub, bias, layout, out, group_scales=True, act=act,
                              minimum=bool(form.minimum), norm=norm, swiglu=swiglu, residual=residual, unsigned=True,
                              block_scales=scales)


def int8_te(ph: Placeholders, form: GGUFForm, n, k, layout, name, act, recip, norm, swiglu, residual):
    from tvm import te

    per = form.block // form.sub

    def block_scales(ngroups, n):  # d (s) and the minimum per (sub-)block, exact in float32 (11 x 6 bits)
        def field(arg, g, j):
            return ph[arg][g, j].astype("float32")

        def scale(g, j):
            return field("w_d", g // per, j) * field("w_sub", g, j) if form.sub_scales else field("w_d", g, j)

        def minimum(g, j):
            return -(field("w_dmin", g // per, j) * field("w_submin", g, j)) if form.minimum == "sub" \
                else field("w_m", g, j)

        low = te.compute((ngroups, n), minimum, name="w_min_f32") if form.minimum else None
        return te.compute((ngroups, n), scale, name="w_scale_f32"), low

    return int_gemm_te(ph, n, k, form.bits, form.sub, layout, name, group_scales=True, act=act, recip=recip,
                       minimum=bool(form.minimum), norm=norm, swiglu=swiglu, residual=residual,
                       block_scales=block_scales)


def int8_reference(form: GGUFForm, inp: dict, k: int, act, recip, norm, swiglu, residual) -> np.ndarray:
    """The int8 form's output from logical inputs: the activations quantised to Q8 blocks in numpy
    exactly as the kernel does, then W4A8's exact sums (ops/qgemm_int.py)."""
    per, half = form.block // form.sub, 2 ** (form.bits - 1)
    scale = np.repeat(inp["w_d"].astype(np.float32), per, axis=1)
    if form.sub_scales:
        scale = scale * inp["w_sub"].astype(np.float32)
    logical = {**inp, "w": (inp["w"].astype(np.int16) - half).astype(np.int8), "w_scale": scale}
    if form.minimum == "sub":
        low = -(np.repeat(inp["w_dmin"].astype(np.float32), per, axis=1) * inp["w_submin"].astype(np.float32))
    elif form.minimum == "block":
        low = inp["w_m"].astype(np.float32)
    if form.minimum:
        logical["w_min"] = low + half * scale
    return int_gemm_reference_of(logical, k, form.sub, act=act, recip=recip, minimum=bool(form.minimum),
                                 norm=norm, swiglu=swiglu, residual=residual, half=half)

"""Integer-activation GEMMs: W8A8 (per-channel weights) and W4A8 (group-wise int4 weights).

y[m, n] = x_scale[m] * sum_g w_scale[n, g] * (sum_{k in group g} x[m, k] * w[n, k]) + bias[n]
with the inner sums in int32, so dot-product instructions (SDOT, VRMPY, VNNI) do the work.
The weight is stored tiled [N/nt, K/kt, nt, kt] (int4: two k-neighbours per byte), the tile
(nt, kt) chosen by the target's schedule family to match its dot-product instruction.
"""

from __future__ import annotations


import numpy as np

from compiler.ops import fused_act, group_sums, q8_act
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
        options = {"bias": Option(False), **q8_act.OPTIONS}
        if weight_bits == 4:
            # min: GGUF Q4_1's additive block term (w_real = w * scale + min), with act=q8_1
            options = {"group": Option(128, (32, 64, 128), tag=lambda g: f"g{g}"),
                       "min": Option(False, tag=lambda m: "min" if m else ""), **options}
        else:  # 0: one scale per output channel; else per block of `group` k (GGUF's Q8_0 is 32)
            options = {"group": Option(0, (0, 32, 64, 128), tag=lambda g: f"g{g}" if g else ""), **options}
        options.update(fused_act.OPTIONS)  # with act=q8_0/q8_1 (float activations) only
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
        q8_act.validate(self.name, spec, self.group(spec), self.weight_bits)
        q8_act.validate_minimum(self.name, spec)
        fused = [name for name, value in fused_act.options(spec).items() if value]
        if fused and not q8_act.in_kernel(spec):
            raise ValueError(f"{self.name}: {', '.join(fused)} (fused float steps) need float activations: act=q8_0 or q8_1")

    def forms(self, spec: KernelSpec) -> dict:
        """The keyword arguments int_gemm_arguments / int_gemm_te / int_gemm_reference take for this spec."""
        return {"act": spec.opt("act"), "recip": spec.opt("q8_recip"), "minimum": spec.opt("min", False),
                **fused_act.options(spec)}

    def arguments(self, spec: KernelSpec, layout) -> list[Arg]:
        n, k = spec.dim("n"), spec.dim("k")
        forms = {key: v for key, v in self.forms(spec).items() if key != "recip"}
        return int_gemm_arguments(n, k, self.weight_bits, self.group(spec), spec.opt("bias"), layout, out="y",
                                  group_scales=self.group_scales(spec), **forms)

    def build(self, spec: KernelSpec, layout):
        args = self.arguments(spec, layout)
        ph = Placeholders(args, layout)
        y = int_gemm_te(ph, spec.dim("n"), spec.dim("k"), self.weight_bits, self.group(spec), layout, "y",
                        group_scales=self.group_scales(spec), **self.forms(spec))
        return ph.prim_func(args, {"y": y})

    def flops(self, spec, sizes):
        return 2.0 * sizes["M"] * spec.dim("n") * spec.dim("k")

    def reference(self, spec: KernelSpec, **inp: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": int_gemm_reference_of(inp, spec.dim("k"), self.group(spec), **self.forms(spec))}

    def random_inputs(self, spec, sizes, rng):
        n, k, m = spec.dim("n"), spec.dim("k"), sizes["M"]
        out = int_gemm_random(n, k, m, self.weight_bits, self.group(spec), spec.opt("bias"), rng,
                              group_scales=self.group_scales(spec), act=spec.opt("act"), minimum=spec.opt("min", False))
        return fused_act.random_extras(out, k, n, m, rng=rng, **fused_act.options(spec)) if q8_act.in_kernel(spec) else out


# -- shared with qkv_proj -------------------------------------------------------------------------

def int_gemm_arguments(n, k, bits, group, bias, layout, out, group_scales=None, act="int8", minimum=False,
                       norm=0.0, swiglu=False, residual=False, unsigned=False, block_scales=None) -> list[Arg]:
    """group_scales: w_scale per group [N, K/group] (default: for int4 weights) or per channel [N].
    act: "int8" takes x int8 + x_scale per token; "q8_0"/"q8_1" take float x (with the fused
    norm/swiglu/residual) and quantise it in the kernel (q8_act.py).
    unsigned: int4 weights given as unsigned nibbles in [0, 15] (GGUF's), their value minus 8 taken.
    bits=5: unsigned values in [0, 31] (GGUF's Q5 types), minus 16: their nibbles as int4's; in
    offset-binary halves of 8 k (the dot-product intrinsics' form) the fifth bits of each channel's k
    tile in one byte (w_high), else a plain plane of them, 8 values a byte (then the kernel makes each
    value signed before its dot product: GPUs' dot4, and the untensorized loop elsewhere).
    bits=6: values in [0, 63] (GGUF's Q6_K), minus 32: in offset-binary halves the two top bits of
    each channel's k tile in two bytes (w_high, packing.py high_bit_pairs), else a plane of 4 values
    a byte. group: 16 (Q6_K's sub-blocks) or a multiple of the activation blocks of 32.
    block_scales: Args replacing w_scale and w_min (a GGUF type's own scales, ops/qgemm_gguf.py)."""
    group_scales = bits == 4 if group_scales is None else group_scales
    nt, kt = layout.n_tile, layout.k_tile
    check_divisible("int gemm", "n", n, nt)
    check_divisible("int gemm", "k", k, kt)
    tile = [{"op": "reshape", "shape": [n // nt, nt, k // kt, kt]}, {"op": "transpose", "axes": [0, 2, 1, 3]}]
    if bits == 8:
        # the sign trick of byte products (x86's VPSIGNB) negates weights: -128 would wrap
        steps = ({"op": "check_range", "min": -127, "max": 127}, *tile) if layout.int8_dot == "avx2_sign_maddubs" else tile
        w = Arg("w", (n // nt, k // kt, nt, kt), "int8", "weight", (n, k), "int8", tuple(steps),
                doc="int8 weight [N, K]")
    else:
        if unsigned and layout.act_offset:  # w_offset_sums below sum the logical (signed) values
            raise ValueError(f"unsigned int4 weights on {layout.int8_dot}, which offsets activations: not supported")
        low = 0 if unsigned or bits > 4 else -8  # the logical values' least
        offset = (8 if layout.int4_unsigned else 0) - 8 - low if bits == 4 else 0  # stored: offset binary or two's complement
        steps = ({"op": "check_range", "min": low, "max": low + 2 ** bits - 1}, *tile,
                 {"op": "nibble_halves", "offset": offset} if layout.int4_halves
                 else {"op": "nibbles", **({"low_offset": offset, "high_offset": offset} if offset else {})})
        w = Arg("w", (n // nt, k // kt, nt, kt // 2), "int8", "weight", (n, k), "uint8" if low == 0 else "int8", steps,
                doc=f"unsigned weight values in [0, {2 ** bits - 1}] [N, K] (taken minus {2 ** (bits - 1)})" if low == 0
                else "int4 weight values in [-8, 7], given as int8 [N, K]")
    # With in-kernel block activations (GGUF weights) every group's scaling is a pass over columns:
    # its scales are stored group-major [K/group, N] (given [N, K/group]) so that pass runs on
    # contiguous vectors, and in float16 as the GGUF stores them (resident bytes = the file's).
    by_group = ({"op": "float16"}, {"op": "transpose", "axes": [1, 0]})
    if act != "int8":
        w_scale = Arg("w_scale", (k // group, n), "float16", "weight", (n, k // group), "float32", by_group,
                      doc="per-group weight scale [N, K/group], float16 values")
    elif group_scales:
        w_scale = Arg("w_scale", (n, k // group), "float32", "weight", doc="per-group weight scale")
    else:
        w_scale = Arg("w_scale", (n,), "float32", "weight", doc="per-output-channel weight scale")
    if act == "int8":
        args = [Arg("x", ("M", k), "int8", "input", doc="per-token quantized activations"),
                Arg("x_scale", ("M",), "float32", "input")]
        fused_weights = []
    else:
        fused_weights, fused_inputs = fused_act.extra_args(k, n, norm, residual)
        args = [fused_act.x_arg(k, swiglu), *fused_inputs]
    args += [w, *(block_scales if block_scales is not None else [w_scale])]
    if bits in (5, 6) and not (layout.int4_unsigned and kt == 8):  # a plane of the bits above the nibbles
        per_byte = 8 // (bits - 4)
        args.insert(args.index(w) + 1, Arg(
            "w_high", (n // nt, k // per_byte, nt), "int8", "weight", (n, k), "uint8",
            ({"op": "reshape", "shape": [n // nt, nt, k // per_byte, per_byte]}, {"op": "transpose", "axes": [0, 2, 1, 3]},
             {"op": "pack_bits", "shift": 4, "width": bits - 4}), source="w",
            doc=f"derived from w by pack: the bits above each value's nibble, {per_byte} values a byte"))
    elif bits in (5, 6):  # offset-binary nibble halves of 8 k: the high bits by the tile's lanes
        high = (Arg("w_high", (n // nt, k // kt, nt), "int8", "weight", (n, k), "uint8",
                    (*tile, {"op": "pack_bits", "shift": 4, "width": 1}), source="w",
                    doc="derived from w by pack: the fifth bits of each channel's k tile, bit i for its k i")
                if bits == 5 else
                Arg("w_high", (n // nt, k // kt, nt, 2), "int8", "weight", (n, k), "uint8",
                    (*tile, {"op": "high_bit_pairs"}), source="w",
                    doc="derived from w by pack: the top 2 bits of each channel's k tile, by nibble-halves lane"))
        args.insert(args.index(w) + 1, high)
    if minimum and block_scales is None:
        # stored as GGUF's Q4_1 minimum m = w_min - 8 w_scale (the term of its unsigned nibbles), float16
        args.append(Arg("w_min", (k // group, n), "float16", "weight", (n, k // group), "float32",
                        ({"op": "add_scaled", "source": "w_scale", "factor": -8.0}, *by_group),
                        doc="per-group additive term [N, K/group]: w_real = w * w_scale + w_min, "
                            "with w_min - 8 w_scale a float16 value"))
    if layout.act_offset:
        # Dot products on unsigned activations (VNNI) compute sum((x + o) w); this is -o sum(w)
        # per group and column, precomputed once from the weight, [K/group, N].
        args.append(Arg("w_offset_sums", (k // group, n), "int32", "weight", (n, k), "int8", (
            {"op": "group_sums", "group": group, "scale": -layout.act_offset},
            {"op": "transpose", "axes": [1, 0]}), source="w",
            doc="derived from w by pack: -offset * sum of each group's weights"))
    args += fused_weights
    if bias:
        args.append(Arg("bias", (n,), "float32", "weight"))
    args.append(Arg(out, ("M", n), "float32", "output"))
    return args


def int_gemm_te(ph: Placeholders, n, k, bits, group, layout, name, group_scales=None, act="int8", recip="127/amax",
                minimum=False, norm=0.0, swiglu=False, residual=False, block_scales=None):
    """y = x_scale * sum_g w_scale * int32-dot(x, w) + bias, as te stages acc -> (ysum) -> y; with
    block-quantised activations (act q8_0/q8_1) each group's sum is scaled by its block's d too,
    and the block minimum meets the block sums: (acc + 8 isum) d_w d_x + (w_min - 8 d_w) s_x,
    which is llama.cpp's d_w d_x sum(q_w q_x) + m_w s_x with its unsigned Q4_1 nibbles.
    block_scales(ngroups, n) -> (scale, minimum) stages [K/group, N] in float32 replace the widened
    w_scale / w_min (a GGUF type whose scales are computed from its own fields)."""
    from tvm import te, tirx

    group_scales = bits == 4 if group_scales is None else group_scales
    nt, kt = layout.n_tile, layout.k_tile
    w, ws = ph["w"], ph.tensors.get("w_scale")
    if act == "int8":
        x, xs, blocks = ph["x"], ph["x_scale"], None
    else:
        blocks = q8_act.Quantised(fused_act.activation(ph, k, norm, swiglu, cpu=not layout.threaded), k, act, recip,
                                  block_sums=minimum or layout.int4_unsigned, sum_span=min(group, q8_act.BLOCK))
        x, xs = blocks.q, None
    m = ph["x"].shape[0]
    ngroups = k // group

    def weight(j, kg):  # int32 value of W[j, kg]; int4 nibbles unpacked where they are used
        if bits == 8:
            return w[j // nt, kg // kt, j % nt, kg % kt].astype("int32")
        if layout.int4_unsigned:  # u = w + 8 in [0, 15], nibbles in halves (5 bits: u = w + 16 in [0, 31])
            byte = w[j // nt, kg // kt, j % nt, kg % kt % (kt // 2)].astype("int32")
            nibble = (byte >> (kg % kt // (kt // 2) * 4)) & 15
            if bits == 5:
                top = ph["w_high"][j // nt, kg // kt, j % nt].astype("int32")
                return nibble | (((top >> (kg % kt)) & 1) << 4)
            if bits == 6:  # lane i = kg % 4 of the tile: byte i % 2, nibble i // 2, bits 2 (kg % 8 // 4) up
                top = ph["w_high"][j // nt, kg // kt, j % nt, kg % 2].astype("int32")
                return nibble | (((top >> (kg % 4 // 2 * 4 + kg % kt // 4 * 2)) & 3) << 4)
            return nibble
        if layout.int4_halves:  # low nibbles: the tile's first kt/2 k, high: the rest
            byte, half_index = w[j // nt, kg // kt, j % nt, kg % kt % (kt // 2)], kg % kt // (kt // 2)
        else:
            byte, half_index = w[j // nt, kg // kt, j % nt, (kg % kt) // 2], kg % 2
        if bits in (5, 6):  # other layouts: the unsigned value from its nibble and the plain high-bit plane,
            # made signed here (no block sums needed); the dot product multiplies it as an int8
            width = bits - 4
            per_byte = 8 // width
            top = ph["w_high"][j // nt, kg // per_byte, j % nt].astype("int32")
            nibble = (byte.astype("int32") >> (half_index * 4)) & 15
            return (nibble | (((top >> (kg % per_byte * width)) & (2 ** width - 1)) << 4)) - 2 ** (bits - 1)
        return int4_nibble(byte, half_index)

    rows, row = padded_rows(m, layout.m_tile)
    half = 2 ** (bits - 1)  # an offset-binary weight's offset: 8 (int4), 16 (5 bits), 32 (6 bits)

    # Offset-binary weights' groups start at -half sum(x), so their sum is the signed one (with a
    # block minimum at 0: the unsigned sum is the one it needs); biased sums start at the bias (plus
    # that). The accumulators are set per group anyway, so this is free; a subtraction after the dot
    # products cost one per register.
    offset = layout.act_offset
    biased = layout.biased_sums and blocks is not None and not offset and group_sums.biased_sums_exact(group, bits)
    signed = layout.int4_unsigned and not minimum
    start = group_sums.starts(ph, rows, ngroups, nt if layout.lean_group_scaling else 1,
                              (lambda i, g: -half * blocks.isum[row(i), g]) if signed else None, biased)

    def acc_init(i, g, j):
        return start[i, g, j % start.shape[2]] if start is not None else tirx.const(0, "int32")

    if blocks is not None:  # the float16 block scales (and minimums), widened once per column tile by
        # the schedule (CPU: per column block, for every row tile) rather than at every row's use
        if block_scales is not None:
            ws, w_min = block_scales(ngroups, n)
        else:
            ws = te.compute((ngroups, n), lambda g, j: ph["w_scale"][g, j].astype("float32"), name="w_scale_f32")
        if minimum and block_scales is None:
            w_min = te.compute((ngroups, n), lambda g, j: ph["w_min"][g, j].astype("float32"), name="w_min_f32")

    if layout.int8_dot == "spirv_dot4" and group % 4 == 0:
        # GPUs with SPV_KHR_integer_dot_product: 4 products per instruction on packed int8
        # (compiler/backends/vulkan/glsl.py prints the extern as OpSDotKHR).
        kq = te.reduce_axis((0, group // 4), name="kq")

        def dot(i, g, j):
            base = g * group + kq * 4
            xs4 = [x[row(i), base + u] for u in range(4)]
            ws4 = [weight(j, base + u).astype("int8") for u in range(4)]
            return te.sum(tirx.call_pure_extern("int32", "ekc_sdot4", *xs4, *ws4), axis=kq, init=acc_init(i, g, j))
    else:
        kk = te.reduce_axis((0, group), name="kk")
        operand = weight

        def activation(i, kg):
            return x[row(i), kg]
        if layout.weights_unpacked and bits != 8:
            # one int8 byte per value, in the unpacked form's tiles (unpacked_k k per channel), made
            # once per column block by the schedule and read by every row tile
            run = layout.unpacked_k
            unpacked = te.compute((n // nt, k // run, nt, run),
                                  lambda t, q, c, e: weight(t * nt + c, q * run + e).astype("int8"), name="w_unpacked")

            def operand(j, kg):
                return unpacked[j // nt, kg // run, j % nt, kg % run].astype("int32")
            if layout.unpacked_rows > 1:
                # the activations in the same tiles, unpacked_rows token rows each (SMMLA's operand:
                # 2 rows x 8 k, contiguous), padded rows re-reading row m-1
                pairs = layout.unpacked_rows
                tiled = te.compute((rows // pairs, k // run, pairs, run),
                                   lambda p, q, r, e: x[row(p * pairs + r), q * run + e], name="x_tiles")

                def activation(i, kg):
                    return tiled[i // pairs, kg // run, i % pairs, kg % run]

        def dot(i, g, j):  # with an activation offset o (unsigned-activation instructions): sum((x + o) w)
            xv = activation(i, g * group + kk).astype("int32")
            return te.sum(((xv + offset) if offset else xv) * operand(j, g * group + kk), axis=kk, init=acc_init(i, g, j))

    # group before column: a dot-product instruction writes adjacent columns
    acc = te.compute((rows, ngroups, n), dot, name="acc")

    def group_sum(i, g, j):  # the exact int32 x . w of one group: minus o sum(w), precomputed by pack
        return acc[i, g, j] + ph["w_offset_sums"][g, j] if offset else acc[i, g, j]
    bias = ph.tensors.get("bias")

    def epilogue(i, j, value):
        if xs is not None:
            value = value * xs[i]
        value = value + bias[j] if bias is not None else value
        return value + ph["residual"][i, j] if residual else value

    def scale(j, g):  # per group [N, K/group] (group-major [K/group, N] with block activations), or per channel [N]
        if blocks is not None:
            return ws[g, j]
        return ws[j, g] if group_scales else ws[j]

    def block_d(i, g):  # the activation block's scale; groups of 16 (Q6_K) are halves of a block
        return blocks.d[row(i), g // (q8_act.BLOCK // group) if group < q8_act.BLOCK else g]

    def scaled(i, g, j):
        if blocks is None:
            return group_sum(i, g, j).astype("float32") * scale(j, g)
        if not minimum:
            return group_sums.scaled(group_sums.as_float(group_sum(i, g, j), biased), block_d(i, g), scale(j, g),
                                      layout.lean_group_scaling)
        # sum of llama.cpp's unsigned values times q_x (the signed sum plus half sum(x) otherwise)
        unsigned = acc[i, g, j] if layout.int4_unsigned else group_sum(i, g, j) + half * blocks.isum[row(i), g]
        block_min = w_min[g, j]  # GGUF's m: packed as w_min - 8 w_scale
        return group_sums.scaled(group_sums.as_float(unsigned, biased), blocks.d[row(i), g], scale(j, g),
                                 layout.lean_group_scaling) + block_min * blocks.s[row(i), g]

    if ngroups == 1 and blocks is None:
        return te.compute((m, n), lambda i, j: epilogue(i, j, scaled(i, 0, j)), name=name)
    g = te.reduce_axis((0, ngroups), name="g")
    ysum = te.compute((rows, n), lambda i, j: te.sum(scaled(i, g, j), axis=g), name="ysum")
    return te.compute((m, n), lambda i, j: epilogue(i, j, ysum[i, j]), name=name)


def _group_dots(x, w, group) -> np.ndarray:
    """Exact int64 dot products of int rows x [M, K] and w [N, K] per group of K: [M, N, K/group]."""
    (m, k), n = x.shape, w.shape[0]
    return np.einsum("mgk,ngk->mng", x.astype(np.int64).reshape(m, k // group, group),
                     w.astype(np.int64).reshape(n, k // group, group))


def int_gemm_reference(x, x_scale, w, w_scale, group, bias=None) -> np.ndarray:
    n = w.shape[0]
    acc = _group_dots(x, w, group)
    ws = w_scale.astype(np.float64).reshape(n, -1)
    y = (acc * ws[None]).sum(-1) * x_scale.astype(np.float64)[:, None]
    return y + bias.astype(np.float64)[None] if bias is not None else y


def int_gemm_reference_of(inp: dict, k: int, group: int, act="int8", recip="127/amax", minimum=False, norm=0.0,
                          swiglu=False, residual=False, half=8) -> np.ndarray:
    """The reference of any int GEMM form from its logical inputs: block-quantised activations
    are quantised in numpy exactly as the kernel does, then the int64 sums scaled in float64.
    half: the offset of the unsigned values a block minimum goes with (8 for int4, 16 for 5 bits)."""
    if act == "int8":
        return int_gemm_reference(inp["x"], inp["x_scale"], inp["w"], inp["w_scale"], group, inp.get("bias"))
    x = fused_act.reference_activation(inp["x"], k, norm, swiglu, inp.get("norm_w")).astype(np.float32)
    q, d, isum, s = q8_act.reference(x, act, recip)
    n = inp["w"].shape[0]
    acc = _group_dots(q, inp["w"], group)
    ws = inp["w_scale"].astype(np.float64).reshape(n, -1)
    if minimum:
        acc = acc + half * isum[:, None, :]
    d = np.repeat(d.astype(np.float64), max(1, q8_act.BLOCK // group), axis=1)  # groups of 16: a block's halves
    y = (acc * ws[None] * d[:, None, :]).sum(-1)
    if minimum:
        y += s.astype(np.float64) @ (inp["w_min"].astype(np.float64) - half * ws).T
    if inp.get("bias") is not None:
        y = y + inp["bias"].astype(np.float64)[None]
    return y + inp["residual"] if residual else y


def int_gemm_random(n, k, m, bits, group, bias, rng, group_scales=None, act="int8", minimum=False) -> dict[str, np.ndarray]:
    group_scales = bits == 4 if group_scales is None else group_scales
    lo, hi = (-127, 128) if bits == 8 else (-8, 8)
    out = {
        "w": rng.integers(lo, hi, (n, k), dtype=np.int8),
        "w_scale": rng.uniform(0.001, 0.01, (n, k // group) if group_scales else (n,)).astype(np.float32),
    }
    if act != "int8":  # GGUF's block scales: float16 values (the kernel stores them so)
        out["w_scale"] = out["w_scale"].astype(np.float16).astype(np.float32)
    if act == "int8":
        out["x"] = rng.integers(-127, 128, (m, k), dtype=np.int8)
        out["x_scale"] = rng.uniform(0.005, 0.02, m).astype(np.float32)
    else:  # float activations of a model's magnitude; a zero block exercises d = 0
        out["x"] = rng.standard_normal((m, k)).astype(np.float32)
        out["x"][:, :q8_act.BLOCK] = 0.0
    if minimum:  # Q4_1's float16 minimum m of the unsigned nibbles, given as m + 8 d (exact in float32)
        m16 = rng.uniform(-0.05, 0.05, (n, k // group)).astype(np.float16).astype(np.float32)
        out["w_min"] = m16 + 8 * out["w_scale"]
    if bias:
        out["bias"] = rng.standard_normal(n).astype(np.float32)
    return out


OPS = {"qgemm_w8a8": IntGemm("qgemm_w8a8", 8), "qgemm_w4a8": IntGemm("qgemm_w4a8", 4)}

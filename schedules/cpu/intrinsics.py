"""Our tensor intrinsics for int8 dot products: C[c] += sum_k A[k] * B[c, k] over a weight tile
B of nt channels x kt k (int8, contiguous), A the kt activations of one token, C int32.

- "sdot" (4 x 4): one SDOT (ARMv8.2 dot-product) per tile; int4 weights in halves (4 x 8) take two,
  and "sdot_unsigned" is that form on offset-binary nibbles (the q8 model path: AND and USHR unpack),
  also with a fifth bit (GGUF's Q5 types) or two top bits (Q6_K) per value: _HIGH_BIT_FORMS.
- "neon" (4 x 4): ARMv8.0 fallback, SMULL on two channels at a time, then pairwise adds.
- "avx2_madd" (8 x 2) / "avx512_madd" (16 x 2): sign-extend the tile to int16 and one VPMADDWD
  gives every channel's 2-k sum directly (no horizontal adds, no u8 x s8 saturation).
- "avx2_maddubs" / "avx512_maddubs" (8 / 16 x 8, int4 weights offset-binary in halves) and
  "avx2_sign_maddubs" (8 x 4, int8 weights): byte products with VPMADDUBSW, then VPMADDWD by ones
  (see _unsigned_maddubs, _sign_maddubs): 32 (64) products per instruction where VPMADDWD on
  sign-extended bytes does 16 (32). The q8 model path's x86 forms.
- "avx512_vnni" (16 x 4): VPDPBUSD on activations offset by +128 to unsigned bytes; the kernel's
  accumulators start from -128 x the weights' group sums (precomputed by `pack`), so one
  instruction per tile remains.
- "hvx_vrmpy" (32 x 4): Hexagon HVX VRMPY (signed bytes x signed bytes, accumulating): the 128-byte
  weight tile against the 4 activation bytes splatted to every lane, one instruction per tile.
- "smmla" (2 rows x 2 x 8, i8mm): on the unpacked scratch only (unpacked.py's UNPACKED_FORMS), the
  prefill GEMMs of the q8 model path on targets with i8mm.
The ARM implementations live in intrinsics_arm.py. Registered here rather than imported from tvm.s_tir.tensor_intrin, whose package import also
builds every CUDA intrinsic (~20 s), and which has no AVX2 int8 intrinsic.
"""

from __future__ import annotations

from schedules.cpu.intrinsic_parts import activations_x4, high_bits, high_plane_shape, high_value, impl_high_of, \
    impl_of, int16_weights, int8_weights
from schedules.cpu.intrinsics_half import half_intrinsic
from schedules.cpu.intrinsics_arm import neon_form, sdot_form, sdot_halves, sdot_halves_high
from schedules.cpu.unpacked import UNPACKED_FORMS, unpack_intrinsic, unpacked_intrinsic

_REGISTERED: dict[tuple[str, int], str] = {}


def _desc(nt: int, kt: int, bits: int, offset: int = 0, halves: bool = False, unsigned: bool = False):
    """C[c] += sum_k (A[k] + offset) * W[c, k]; W int8 [nt, kt], or int4 packed [nt, kt/2] (k pairs
    per byte, even k in the low nibble; with `halves`, k < kt/2 in the low nibbles and the rest in
    the high), written exactly as the ops' tensor expressions are."""
    from tvm.script import tirx as T

    def weight(B, c, k):
        if bits == 8:
            return T.Cast("int32", B[c, k])
        if unsigned:  # offset-binary nibbles (w + 8) in halves
            return T.bitwise_and(T.shift_right(T.Cast("int32", B[c, k % (kt // 2)]), k // (kt // 2) * 4), 15)
        if halves:
            return T.shift_right(T.shift_left(T.Cast("int32", B[c, k % (kt // 2)]), 28 - 4 * (k // (kt // 2))), 28)
        return T.shift_right(T.shift_left(T.Cast("int32", B[c, k // 2]), 28 - 4 * (k % 2)), 28)

    def activation(A, k):
        return T.Cast("int32", A[k]) + offset if offset else T.Cast("int32", A[k])

    b_cols = kt if bits == 8 else kt // 2

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (kt,), "int8", offset_factor=1)
        B = T.match_buffer(b, (nt, b_cols), "int8", offset_factor=1)
        C = T.match_buffer(c, (nt,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:kt], B[0:nt, 0:b_cols])
            T.writes(C[0:nt])
            for i, k in T.grid(nt, kt):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + activation(A, vk) * weight(B, vi, vk)

    return desc


def _desc_high(nt: int, kt: int, bits: int):
    """_desc's offset-binary halves with the bits above each nibble, from the tile's high-bit plane H
    (ops/qgemm_int.py): 5 bits, W[c, k] = nibble | ((H[c] >> k) & 1) << 4, one byte per channel
    (GGUF's Q5 types); 6 bits, W[c, k] = nibble | ((H[c, k % 2] >> (k % 4 // 2 * 4 + k // 4 * 2)) & 3)
    << 4, two bytes per channel (Q6_K; packing.py high_bit_pairs)."""
    from tvm.script import tirx as T

    shape = high_plane_shape(nt, bits)
    region = tuple(slice(0, e) for e in shape)

    def weight(B, H, c, k):
        return high_value(B, H, c, k, kt, bits)

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, h: T.handle, c: T.handle):
        A = T.match_buffer(a, (kt,), "int8", offset_factor=1)
        B = T.match_buffer(b, (nt, kt // 2), "int8", offset_factor=1)
        H = T.match_buffer(h, shape, "int8", offset_factor=1)
        C = T.match_buffer(c, (nt,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:kt], B[0:nt, 0:kt // 2], H[region])
            T.writes(C[0:nt])
            for i, k in T.grid(nt, kt):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * weight(B, H, vi, vk)

    return desc


def _madd(nt: int, llvm_name: str, bits: int):
    from tvm.script import tirx as T

    def update(A, B, C):
        # (a0, a1) sign-extended to int16, as one int32 broadcast: [a0, a1, a0, a1, ...].
        a_pair = T.reinterpret(T.Cast("int16x2", A.vload([0], "int8x2")), dtype="int32")
        a_vec = T.reinterpret(T.broadcast(a_pair, nt), dtype=f"int16x{2 * nt}")
        return C.vload([0], f"int32x{nt}") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id(llvm_name), a_vec, int16_weights(B, 2 * nt, bits), dtype=f"int32x{nt}")

    return impl_of(nt, 2, bits, update)


def _vnni(bits: int):
    from tvm.script import tirx as T

    def update(A, B, C):
        # x + 128 as unsigned bytes is x with its sign bit flipped: one XOR of the 4 bytes.
        a_u8 = T.bitwise_xor(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), T.int32(-2139062144))
        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), C.vload([0], "int32x16"),
            T.reinterpret(T.broadcast(a_u8, 16), dtype="int8x64"), int8_weights(B, 64, bits), dtype="int32x16")

    return impl_of(16, 4, bits, update)


def _sign_maddubs(bits: int):
    """x86 byte products for int8 weights in [-127, 127] (or int4), as llama.cpp's AVX2 dot products: VPSIGNB
    moves x's sign onto the weight, VPMADDUBSW multiplies |x| (unsigned) by it, adjacent pairs summed
    to int16 (|pair| <= 2 x 127 x 127: exact), VPMADDWD by ones sums a channel's two pairs: 8 x 4."""
    from tvm.script import tirx as T

    def call(name, dtype, *args):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)

    def update(A, B, C):
        x = activations_x4(A, 8, "int8x32")
        pairs = call("llvm.x86.avx2.pmadd.ub.sw", "int16x16", call("llvm.abs.v32i8", "int8x32", x, T.bool(False)),
                     call("llvm.x86.avx2.psign.b", "int8x32", int8_weights(B, 32, bits), x))
        return C.vload([0], "int32x8") + call("llvm.x86.avx2.pmadd.wd", "int32x8", pairs, T.broadcast(T.int16(1), 16))

    return impl_of(8, 4, bits, update)


def _unsigned_maddubs(nt: int, width: int, bits: int = 4):
    """x86 byte products for int4 weights stored offset-binary in halves (nt channels x 8 k per tile,
    4 bytes a channel): AND and a shift give the two halves' unsigned nibbles (k 0-3, k 4-7), the
    unsigned operand of VPMADDUBSW against the signed activations (|pair| <= 2 x 15 x 127), the two
    results added as int16 (<= 7620) and VPMADDWD by ones sums each channel's pairs to int32. bits
    5 or 6 (intrinsic_parts.high_bits ORed in; <= 15748 or 32004 as int16: activations
    are in [-127, 127], so still no saturation)."""
    from tvm.script import tirx as T

    lanes = 4 * nt
    madd_ub = "llvm.x86.avx2.pmadd.ub.sw" if width == 256 else "llvm.x86.avx512.pmaddubs.w.512"
    madd_wd = "llvm.x86.avx2.pmadd.wd" if width == 256 else "llvm.x86.avx512.pmaddw.d.512"

    def call(name, dtype, *args):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)

    def update(A, B, C, H=None):
        packed = B.vload([0, 0], f"int8x{lanes}")
        mask = T.Broadcast(T.int8(15), lanes)
        low = T.bitwise_and(packed, mask)
        high = T.bitwise_and(T.shift_right(packed, T.Broadcast(T.int8(4), lanes)), mask)
        if H is not None:
            top_low, top_high = high_bits(H, nt, bits)
            low, high = T.bitwise_or(low, top_low), T.bitwise_or(high, top_high)
        pairs = (call(madd_ub, f"int16x{2 * nt}", low, activations_x4(A, nt, f"int8x{lanes}"))
                 + call(madd_ub, f"int16x{2 * nt}", high, activations_x4(A, nt, f"int8x{lanes}", start=4)))
        return C.vload([0], f"int32x{nt}") + call(madd_wd, f"int32x{nt}", pairs, T.broadcast(T.int16(1), 2 * nt))

    return impl_high_of(nt, bits, lambda A, B, H, C: update(A, B, C, H)) if bits > 4 else impl_of(nt, 8, 4, update)


def _unsigned_vnni(bits: int = 4):
    """VPDPBUSD on int4 weights stored offset-binary in halves (16 channels x 8 k, 4 bytes a channel):
    the unsigned nibbles (AND; shift + AND) are its unsigned operand, the activations its signed one,
    so no activation offset is needed; two instructions per tile. bits 5 or 6: those values
    (intrinsic_parts.high_bits ORed in)."""
    from tvm.script import tirx as T

    def update(A, B, C, H=None):
        packed = B.vload([0, 0], "int8x64")
        mask = T.Broadcast(T.int8(15), 64)
        low = T.bitwise_and(packed, mask)
        high = T.bitwise_and(T.shift_right(packed, T.Broadcast(T.int8(4), 64)), mask)
        if H is not None:
            top_low, top_high = high_bits(H, 16, bits)
            low, high = T.bitwise_or(low, top_low), T.bitwise_or(high, top_high)
        first = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                                        C.vload([0], "int32x16"), low, activations_x4(A, 16, "int8x64"),
                                        dtype="int32x16")
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), first, high,
                                       activations_x4(A, 16, "int8x64", start=4), dtype="int32x16")

    return impl_high_of(16, bits, lambda A, B, H, C: update(A, B, C, H)) if bits > 4 else impl_of(16, 8, 4, update)


def _vrmpy(bits: int):
    from tvm.script import tirx as T

    def update(A, B, C):
        a_splat = T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 32)
        weights = T.reinterpret(int8_weights(B, 128, bits), dtype="int32x32")
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.hexagon.V6.vrmpybv.acc.128B"),
                                       C.vload([0], "int32x32"), a_splat, weights, dtype="int32x32")

    return impl_of(32, 4, bits, update)


# kind -> (channels per tile, k per tile, implementation factory taking the weight bits,
#          offset added to the activations: VNNI multiplies unsigned by signed bytes)
_KINDS = {
    "sdot": (4, 4, sdot_form, 0),
    "neon": (4, 4, neon_form, 0),
    "avx2_madd": (8, 2, lambda bits: _madd(8, "llvm.x86.avx2.pmadd.wd", bits), 0),
    "avx512_madd": (16, 2, lambda bits: _madd(16, "llvm.x86.avx512.pmaddw.d.512", bits), 0),
    "avx512_vnni": (16, 4, _vnni, 128),
    # the byte form of avx2_madd for int8 weights on the q8 model path (schedules/cpu layout() picks it)
    "avx2_sign_maddubs": (8, 4, _sign_maddubs, 0),
    "hvx_vrmpy": (32, 4, _vrmpy, 0),
}


# kind -> (channels, k per tile, implementation, offset-binary) of int4 forms with nibbles in halves
# (Layout.int4_halves): SDOT's, and x86's byte products for the q8 model path (int4 weights only)
_HALVES = {
    "sdot": (4, 8, lambda: sdot_halves(False), False),
    # SDOT's form for the q8 model path's int4 weights (schedules/cpu layout() picks it)
    "sdot_unsigned": (4, 8, lambda: sdot_halves(True), True),
    "avx2_maddubs": (8, 8, lambda: _unsigned_maddubs(8, 256), True),
    "avx512_maddubs": (16, 8, lambda: _unsigned_maddubs(16, 512), True),
    "avx512_vnni_unsigned": (16, 8, _unsigned_vnni, True),
}


def int4_halves_tile(kind: str) -> tuple[int, bool] | None:
    """(k per tile, offset-binary) when this instruction takes int4 weights packed in halves (None: pairs)."""
    return (_HALVES[kind][1], _HALVES[kind][3]) if kind in _HALVES else None


def dot_tile(kind: str) -> tuple[int, int]:
    """(channels, k) of the weight tile the intrinsic consumes; the portable 4 x 4 without one."""
    if kind not in _KINDS and kind in _HALVES:
        return _HALVES[kind][:2]
    nt, kt, _, _ = _KINDS.get(kind, (4, 4, None, 0))
    return nt, kt


def activation_offset(kind: str) -> int:
    """What the kernel adds to int8 activations for this instruction (its weights' sums pay it back)."""
    return _KINDS.get(kind, (0, 0, None, 0))[3]


# kind -> (channels, k per tile, implementation factory taking the bits) of 5- and 6-bit forms:
# offset-binary nibble halves plus a plane of the bits above them (GGUF's Q5 types and Q6_K on int8
# activations; intrinsic_parts.high_plane_shape)
_HIGH_BIT_FORMS = {"sdot_unsigned": (4, 8, sdot_halves_high),
                   "avx2_maddubs": (8, 8, lambda bits: _unsigned_maddubs(8, 256, bits)),
                   "avx512_maddubs": (16, 8, lambda bits: _unsigned_maddubs(16, 512, bits)),
                   "avx512_vnni_unsigned": (16, 8, _unsigned_vnni)}


def has_high_bit_form(kind: str) -> bool:
    """Whether this dot-product form multiplies 5- and 6-bit weights."""
    return kind in _HIGH_BIT_FORMS


def dot_intrinsic(kind: str, bits: int, halves: bool = False) -> str:
    """The registered name of the dot-product intrinsic for target fact `int8_dot` and int8 or int4
    weights (int4 packed in halves where Layout.int4_halves says so; bits 5 and 6: _HIGH_BIT_FORMS)."""
    if bits in (5, 6):
        if kind not in _HIGH_BIT_FORMS:
            raise ValueError(f"{bits}-bit weights on int8 activations need a {bits}-bit dot-product form; {kind} has "
                             f"none (those there are: {', '.join(_HIGH_BIT_FORMS)}): use float32 activations")
        if (kind, bits) not in _REGISTERED:
            from tvm.s_tir import TensorIntrin

            nt, kt, impl = _HIGH_BIT_FORMS[kind]
            name = f"ekc_dot_{nt}x{kt}_w{bits}h_{kind}"
            TensorIntrin.register(name, _desc_high(nt, kt, bits), impl(bits))
            _REGISTERED[(kind, bits)] = name
        return _REGISTERED[(kind, bits)]
    if halves:
        if (kind, "halves") not in _REGISTERED:
            from tvm.s_tir import TensorIntrin

            nt, kt, impl, unsigned = _HALVES[kind]
            name = f"ekc_dot_{nt}x{kt}_w4h_{kind}"
            TensorIntrin.register(name, _desc(nt, kt, 4, 0, halves=True, unsigned=unsigned), impl())
            _REGISTERED[(kind, "halves")] = name
        return _REGISTERED[(kind, "halves")]
    if (kind, bits) not in _REGISTERED:
        from tvm.s_tir import TensorIntrin

        nt, kt, impl, offset = _KINDS[kind]
        name = f"ekc_dot_{nt}x{kt}_w{bits}_{kind}"
        TensorIntrin.register(name, _desc(nt, kt, bits, offset), impl(bits))
        _REGISTERED[(kind, bits)] = name
    return _REGISTERED[(kind, bits)]


def has_dot_intrinsic(kind: str, bits: int = 8) -> bool:
    """Whether `kind` has an intrinsic for weights of `bits` (else the schedule's portable loop)."""
    if bits in (5, 6):
        return kind in _HIGH_BIT_FORMS
    return kind in _KINDS or kind in _HALVES


def register_all() -> None:
    """Register every intrinsic (traces in a tuning database name them and fail to parse otherwise)."""
    for kind in _KINDS:
        for bits in (8, 4):
            dot_intrinsic(kind, bits)
    for kind in _HALVES:
        dot_intrinsic(kind, 4, halves=True)
    for kind in _HIGH_BIT_FORMS:
        for bits in (5, 6):
            dot_intrinsic(kind, bits)
    for rows in (1, 2, 4, 8):  # every m_tile of the layout choices
        half_intrinsic(rows)
    for kind in UNPACKED_FORMS:
        unpacked_intrinsic(kind)
        for bits in UNPACKED_FORMS[kind].weight_bits:
            unpack_intrinsic(kind, bits)

"""Our tensor intrinsics for int8 dot products: C[c] += sum_k A[k] * B[c, k] over a weight tile
B of nt channels x kt k (int8, contiguous), A the kt activations of one token, C int32.

- "sdot" (4 x 4): one SDOT (ARMv8.2 dot-product) per tile; int4 weights in halves (4 x 8) take two,
  and "sdot_unsigned" is that form on offset-binary nibbles (the q8 model path: AND and USHR unpack).
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
Registered here rather than imported from tvm.s_tir.tensor_intrin, whose package import also
builds every CUDA intrinsic (~20 s), and which has no AVX2 int8 intrinsic.
"""

from __future__ import annotations

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


def _interleave(lo, hi, lanes: int):
    """[lo0, hi0, lo1, hi1, ...] of two `lanes`-wide vectors."""
    from tvm.script import tirx as T

    return T.Shuffle([lo, hi], [i // 2 + (i % 2) * lanes for i in range(2 * lanes)])


def _int8_weights(B, n: int, bits: int):
    """The weight tile as n int8 lanes in (channel, k) order; int4 nibbles unpacked in registers."""
    from tvm.script import tirx as T

    if bits == 8:
        return B.vload([0, 0], f"int8x{n}")
    packed = B.vload([0, 0], f"int8x{n // 2}")
    four = T.Broadcast(T.int8(4), n // 2)
    return _interleave(T.shift_right(T.shift_left(packed, four), four), T.shift_right(packed, four), n // 2)


def _int16_weights(B, n: int, bits: int):
    """The weight tile as n sign-extended int16 lanes in (channel, k) order."""
    from tvm.script import tirx as T

    if bits == 8:
        return T.Cast(f"int16x{n}", B.vload([0, 0], f"int8x{n}"))
    wide = T.Cast(f"int16x{n // 2}", B.vload([0, 0], f"int8x{n // 2}"))
    low = T.shift_right(T.shift_left(wide, T.Broadcast(T.int16(12), n // 2)), T.Broadcast(T.int16(12), n // 2))
    high = T.shift_right(T.shift_left(wide, T.Broadcast(T.int16(8), n // 2)), T.Broadcast(T.int16(12), n // 2))
    return _interleave(low, high, n // 2)


def _impl(nt: int, kt: int, bits: int, update):
    """The implementation of an nt x kt intrinsic: C[0:nt] = update(A, B, C) as one vector expression."""
    from tvm.script import tirx as T

    b_cols = kt if bits == 8 else kt // 2

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (kt,), "int8", offset_factor=1)
        B = T.match_buffer(b, (nt, b_cols), "int8", offset_factor=1)
        C = T.match_buffer(c, (nt,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:kt], B[0:nt, 0:b_cols])
            T.writes(C[0:nt])
            C[T.ramp(T.int32(0), 1, nt)] = update(A, B, C)

    return impl


def _activations_x4(A, copies: int, dtype: str, start: int = 0):
    """4 activation bytes (from `start`) as one int32, repeated `copies` times, reinterpreted as `dtype`."""
    from tvm.script import tirx as T

    return T.reinterpret(T.broadcast(T.reinterpret(A.vload([start], "int8x4"), dtype="int32"), copies), dtype=dtype)


def _sdot(bits: int):
    from tvm.script import tirx as T

    def update(A, B, C):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                                       C.vload([0], "int32x4"), _activations_x4(A, 4, "int8x16"),
                                       _int8_weights(B, 16, bits), dtype="int32x4")

    return _impl(4, 4, bits, update)


def _sdot_halves(unsigned: bool):
    """Two SDOTs on a 4-channel x 8-k int4 tile packed in halves: one 128-bit load, the low nibbles
    meet k 0-3, the high nibbles k 4-7. Signed nibbles take shl + sshr and sshr: 3 instructions of
    unpack per 2 SDOT. Offset-binary ones (w + 8 in [0, 15], the q8 model path, whose activation
    block sums pay the +8 back as on x86) take AND and USHR: 2."""
    from tvm.script import tirx as T

    def sdot(acc, a, b):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"), acc, a, b,
                                       dtype="int32x4")

    def update(A, B, C):
        if unsigned:
            packed = T.reinterpret(B.vload([0, 0], "int8x16"), dtype="uint8x16")
            low = T.reinterpret(T.bitwise_and(packed, T.Broadcast(T.uint8(15), 16)), dtype="int8x16")
            high = T.reinterpret(T.shift_right(packed, T.Broadcast(T.uint8(4), 16)), dtype="int8x16")
        else:
            packed = B.vload([0, 0], "int8x16")
            four = T.Broadcast(T.int8(4), 16)
            low, high = T.shift_right(T.shift_left(packed, four), four), T.shift_right(packed, four)
        # The activations of k 0-3 and 4-7 as the two 32-bit lanes of one 8-byte load, each lane
        # broadcast in the third operand, where LLVM folds it into SDOT's by-element form
        # (sdot v.4s, w.16b, x.4b[i]): one load per 2 SDOT instead of a broadcast load (LD1R) each.
        # MODELLED: SmolLM2's 3072 x 576 q8 prefill GEMM 1.17x (A76) / 1.20x (A55) fewer cycles.
        words = T.reinterpret(A.vload([0], "int8x8"), dtype="int32x2")

        def lane(index):
            return T.reinterpret(T.Shuffle([words, words], [index] * 4), dtype="int8x16")

        return sdot(sdot(C.vload([0], "int32x4"), low, lane(0)), high, lane(1))

    return _impl(4, 8, 4, update)


def _neon(bits: int):
    from tvm.script import tirx as T

    def smull(x, y):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"), x, y,
                                       dtype="int16x8")

    def pairwise(x):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"), x,
                                       dtype="int32x4")

    def update(A, B, C):
        # [a0..a3, a0..a3] against channels (0, 1) and (2, 3): products, then sums of pairs twice.
        a_vec = _activations_x4(A, 2, "int8x8")
        b_vec = _int8_weights(B, 16, bits)
        low = pairwise(smull(a_vec, T.vectorlow(b_vec, dtype="int8x8")))
        high = pairwise(smull(a_vec, T.vectorhigh(b_vec, dtype="int8x8")))
        return C.vload([0], "int32x4") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v4i32"), low, high, dtype="int32x4")

    return _impl(4, 4, bits, update)


def _madd(nt: int, llvm_name: str, bits: int):
    from tvm.script import tirx as T

    def update(A, B, C):
        # (a0, a1) sign-extended to int16, as one int32 broadcast: [a0, a1, a0, a1, ...].
        a_pair = T.reinterpret(T.Cast("int16x2", A.vload([0], "int8x2")), dtype="int32")
        a_vec = T.reinterpret(T.broadcast(a_pair, nt), dtype=f"int16x{2 * nt}")
        return C.vload([0], f"int32x{nt}") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id(llvm_name), a_vec, _int16_weights(B, 2 * nt, bits), dtype=f"int32x{nt}")

    return _impl(nt, 2, bits, update)


def _vnni(bits: int):
    from tvm.script import tirx as T

    def update(A, B, C):
        # x + 128 as unsigned bytes is x with its sign bit flipped: one XOR of the 4 bytes.
        a_u8 = T.bitwise_xor(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), T.int32(-2139062144))
        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), C.vload([0], "int32x16"),
            T.reinterpret(T.broadcast(a_u8, 16), dtype="int8x64"), _int8_weights(B, 64, bits), dtype="int32x16")

    return _impl(16, 4, bits, update)


def _sign_maddubs(bits: int):
    """x86 byte products for int8 weights in [-127, 127] (or int4), as llama.cpp's AVX2 dot products: VPSIGNB
    moves x's sign onto the weight, VPMADDUBSW multiplies |x| (unsigned) by it, adjacent pairs summed
    to int16 (|pair| <= 2 x 127 x 127: exact), VPMADDWD by ones sums a channel's two pairs: 8 x 4."""
    from tvm.script import tirx as T

    def call(name, dtype, *args):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)

    def update(A, B, C):
        x = _activations_x4(A, 8, "int8x32")
        pairs = call("llvm.x86.avx2.pmadd.ub.sw", "int16x16", call("llvm.abs.v32i8", "int8x32", x, T.bool(False)),
                     call("llvm.x86.avx2.psign.b", "int8x32", _int8_weights(B, 32, bits), x))
        return C.vload([0], "int32x8") + call("llvm.x86.avx2.pmadd.wd", "int32x8", pairs, T.broadcast(T.int16(1), 16))

    return _impl(8, 4, bits, update)


def _unsigned_maddubs(nt: int, width: int):
    """x86 byte products for int4 weights stored offset-binary in halves (nt channels x 8 k per tile,
    4 bytes a channel): AND and a shift give the two halves' unsigned nibbles (k 0-3, k 4-7), the
    unsigned operand of VPMADDUBSW against the signed activations (|pair| <= 2 x 15 x 127), the two
    results added as int16 (<= 7620) and VPMADDWD by ones sums each channel's pairs to int32."""
    from tvm.script import tirx as T

    lanes = 4 * nt
    madd_ub = "llvm.x86.avx2.pmadd.ub.sw" if width == 256 else "llvm.x86.avx512.pmaddubs.w.512"
    madd_wd = "llvm.x86.avx2.pmadd.wd" if width == 256 else "llvm.x86.avx512.pmaddw.d.512"

    def call(name, dtype, *args):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)

    def update(A, B, C):
        packed = B.vload([0, 0], f"int8x{lanes}")
        mask = T.Broadcast(T.int8(15), lanes)
        low = T.bitwise_and(packed, mask)
        high = T.bitwise_and(T.shift_right(packed, T.Broadcast(T.int8(4), lanes)), mask)
        pairs = (call(madd_ub, f"int16x{2 * nt}", low, _activations_x4(A, nt, f"int8x{lanes}"))
                 + call(madd_ub, f"int16x{2 * nt}", high, _activations_x4(A, nt, f"int8x{lanes}", start=4)))
        return C.vload([0], f"int32x{nt}") + call(madd_wd, f"int32x{nt}", pairs, T.broadcast(T.int16(1), 2 * nt))

    return _impl(nt, 8, 4, update)


def _unsigned_vnni():
    """VPDPBUSD on int4 weights stored offset-binary in halves (16 channels x 8 k, 4 bytes a channel):
    the unsigned nibbles (AND; shift + AND) are its unsigned operand, the activations its signed one,
    so no activation offset is needed; two instructions per tile."""
    from tvm.script import tirx as T

    def update(A, B, C):
        packed = B.vload([0, 0], "int8x64")
        mask = T.Broadcast(T.int8(15), 64)
        low = T.bitwise_and(packed, mask)
        high = T.bitwise_and(T.shift_right(packed, T.Broadcast(T.int8(4), 64)), mask)
        first = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                                        C.vload([0], "int32x16"), low, _activations_x4(A, 16, "int8x64"),
                                        dtype="int32x16")
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), first, high,
                                       _activations_x4(A, 16, "int8x64", start=4), dtype="int32x16")

    return _impl(16, 8, 4, update)


def _vrmpy(bits: int):
    from tvm.script import tirx as T

    def update(A, B, C):
        a_splat = T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 32)
        weights = T.reinterpret(_int8_weights(B, 128, bits), dtype="int32x32")
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.hexagon.V6.vrmpybv.acc.128B"),
                                       C.vload([0], "int32x32"), a_splat, weights, dtype="int32x32")

    return _impl(32, 4, bits, update)


# kind -> (channels per tile, k per tile, implementation factory taking the weight bits,
#          offset added to the activations: VNNI multiplies unsigned by signed bytes)
_KINDS = {
    "sdot": (4, 4, _sdot, 0),
    "neon": (4, 4, _neon, 0),
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
    "sdot": (4, 8, lambda: _sdot_halves(False), False),
    # SDOT's form for the q8 model path's int4 weights (schedules/cpu layout() picks it)
    "sdot_unsigned": (4, 8, lambda: _sdot_halves(True), True),
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


def dot_intrinsic(kind: str, bits: int, halves: bool = False) -> str:
    """The registered name of the dot-product intrinsic for target fact `int8_dot` and int8 or int4
    weights (int4 packed in halves where Layout.int4_halves says so)."""
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


def has_dot_intrinsic(kind: str) -> bool:
    return kind in _KINDS or kind in _HALVES


def register_all() -> None:
    """Register every intrinsic (traces in a tuning database name them and fail to parse otherwise)."""
    for kind in _KINDS:
        for bits in (8, 4):
            dot_intrinsic(kind, bits)
    for kind in _HALVES:
        dot_intrinsic(kind, 4, halves=True)

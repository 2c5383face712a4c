"""Our tensor intrinsics for int8 dot products: C[c] += sum_k A[k] * B[c, k] over a weight tile
B of nt channels x kt k (int8, contiguous), A the kt activations of one token, C int32.

- "sdot" (4 x 4): one SDOT (ARMv8.2 dot-product) per tile.
- "neon" (4 x 4): ARMv8.0 fallback, SMULL on two channels at a time, then pairwise adds.
- "avx2_madd" (8 x 2) / "avx512_madd" (16 x 2): sign-extend the tile to int16 and one VPMADDWD
  gives every channel's 2-k sum directly (no horizontal adds, no u8 x s8 saturation).
Registered here rather than imported from tvm.s_tir.tensor_intrin, whose package import also
builds every CUDA intrinsic (~20 s), and which has no AVX2 int8 intrinsic.
"""

from __future__ import annotations

_REGISTERED: dict[str, str] = {}


def _desc(nt: int = 4, kt: int = 4):
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (kt,), "int8", offset_factor=1)
        B = T.match_buffer(b, (nt, kt), "int8", offset_factor=1)
        C = T.match_buffer(c, (nt,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:kt], B[0:nt, 0:kt])
            T.writes(C[0:nt])
            for i, k in T.grid(nt, kt):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])

    return desc


def _sdot_impl():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (4,), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            # The 4 activation bytes as one int32, broadcast to all 4 lanes.
            a_vec = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4),
                                  dtype="int8x16")
            C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                C.vload([0], "int32x4"), a_vec, B.vload([0, 0], "int8x16"), dtype="int32x4")

    return impl


def _neon_impl():
    from tvm.script import tirx as T

    def smull(x, y):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"), x, y,
                                       dtype="int16x8")

    def pairwise(x):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"), x,
                                       dtype="int32x4")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (4,), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            # [a0..a3, a0..a3] against channels (0, 1) and (2, 3): products, then sums of pairs twice.
            a_vec = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 2),
                                  dtype="int8x8")
            b_vec = B.vload([0, 0], "int8x16")
            low = pairwise(smull(a_vec, T.vectorlow(b_vec, dtype="int8x8")))
            high = pairwise(smull(a_vec, T.vectorhigh(b_vec, dtype="int8x8")))
            C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], "int32x4") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v4i32"), low, high, dtype="int32x4")

    return impl


def _madd_impl(nt: int, llvm_name: str):
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (2,), "int8", offset_factor=1)
        B = T.match_buffer(b, (nt, 2), "int8", offset_factor=1)
        C = T.match_buffer(c, (nt,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:2], B[0:nt, 0:2])
            T.writes(C[0:nt])
            # (a0, a1) sign-extended to int16, as one int32 broadcast: [a0, a1, a0, a1, ...].
            a_pair = T.reinterpret(T.Cast("int16x2", A.vload([0], "int8x2")), dtype="int32")
            a_vec = T.reinterpret(T.broadcast(a_pair, nt), dtype=f"int16x{2 * nt}")
            b_vec = T.Cast(f"int16x{2 * nt}", B.vload([0, 0], f"int8x{2 * nt}"))
            C[T.ramp(T.int32(0), 1, nt)] = C.vload([0], f"int32x{nt}") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name), a_vec, b_vec, dtype=f"int32x{nt}")

    return impl


# kind -> (channels per tile, k per tile, implementation factory)
_KINDS = {
    "sdot": (4, 4, _sdot_impl),
    "neon": (4, 4, _neon_impl),
    "avx2_madd": (8, 2, lambda: _madd_impl(8, "llvm.x86.avx2.pmadd.wd")),
    "avx512_madd": (16, 2, lambda: _madd_impl(16, "llvm.x86.avx512.pmaddw.d.512")),
}


def dot_tile(kind: str) -> tuple[int, int]:
    """(channels, k) of the weight tile the intrinsic consumes; the portable 4 x 4 without one."""
    nt, kt, _ = _KINDS.get(kind, (4, 4, None))
    return nt, kt


def dot_intrinsic(kind: str) -> str:
    """The registered name of the int8 dot-product intrinsic for target fact `int8_dot`."""
    if kind not in _REGISTERED:
        from tvm.s_tir import TensorIntrin

        nt, kt, impl = _KINDS[kind]
        name = f"ekc_dot_{nt}x{kt}_i8i32_{kind}"
        TensorIntrin.register(name, _desc(nt, kt), impl())
        _REGISTERED[kind] = name
    return _REGISTERED[kind]


def has_dot_intrinsic(kind: str) -> bool:
    return kind in _KINDS

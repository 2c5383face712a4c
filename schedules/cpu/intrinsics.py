"""Our tensor intrinsics for 4-channel x 4-k int8 dot products on AArch64.

C[0:4] += sum_k A[k] * B[c, k]: A is 4 int8 activations, B a 16-byte weight tile (4 channels x 4 k).
- "sdot": one SDOT (ARMv8.2 dot-product) per tile.
- "neon": ARMv8.0 fallback, SMULL on two channels at a time, then pairwise adds.
Registered here rather than imported from tvm.s_tir.tensor_intrin, whose package import also
builds every CUDA intrinsic (~20 s).
"""

from __future__ import annotations

_REGISTERED: dict[str, str] = {}


def _desc():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (4,), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            for i, k in T.grid(4, 4):
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


_IMPLS = {"sdot": _sdot_impl, "neon": _neon_impl}


def dot_4x4_intrinsic(kind: str) -> str:
    """The registered name of the 4x4 int8 dot-product intrinsic for target fact `int8_dot`."""
    if kind not in _REGISTERED:
        from tvm.s_tir import TensorIntrin

        name = f"ekc_dot_4x4_i8i32_{kind}"
        TensorIntrin.register(name, _desc(), _IMPLS[kind]())
        _REGISTERED[kind] = name
    return _REGISTERED[kind]


def has_dot_4x4(kind: str) -> bool:
    return kind in _IMPLS

"""Intrinsics on the scratch of int8 bytes that a GEMM of several token rows unpacks its int4 /
5- / 6-bit weights into once per column block (Layout.weights_unpacked): SDOT's 4-channel steps,
or SMMLA's 2 x 2 x 8 tiles with i8mm, and the intrinsic that makes SMMLA's scratch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from schedules.cpu.intrinsic_parts import high_plane_shape, high_value
from schedules.cpu.intrinsics_arm import sdot_steps, smmla_tile, unpack_runs

_REGISTERED: dict[tuple, str] = {}


@dataclass(frozen=True)
class UnpackedForm:
    """An intrinsic on the scratch of int8 bytes that a GEMM of several token rows unpacks its
    weights into once per column block (Layout.weights_unpacked; 5- and 6-bit values too: they are
    bytes by then). The scratch is [N/nt, K/k_run, nt, k_run]: each channel's k_run values
    contiguous; with rows 2 the activations are copied in the same tiles, two token rows a tile
    (ops/qgemm_int.py), and the accumulators are laid out in 2 x 2 tiles (schedules/cpu/gemm_int.py)."""

    byte_form: str  # the layout's int8_dot whose weights it reads
    feature: str  # the CPU feature it needs ("": any target with the byte form)
    channels: int  # output channels per call
    rows: int  # token rows per call
    k: int  # k per call
    k_run: int  # k values of one channel contiguous in the scratch
    impl: Callable[[], object]
    weight_bits: tuple[int, ...] = (4, 5, 6)  # the weights whose scratch it is made for
    # an intrinsic (factory taking the weight bits) making 4 channels' runs of the scratch from
    # nibble halves, where the schedule's SIMD loop cannot (runs of 8 k from halves of 4: TVM's
    # vectoriser would gather byte by byte)
    unpack: Callable[[int], object] | None = None


# Byte forms whose weights a GEMM of several token rows unpacks once per column block, and the
# intrinsics that then run on the scratch, the preferred first where the target has its feature.
# MODELLED at M=128 on the A76, SmolLM2's GEMMs unpacked per row tile -> once: 3072 x 576 Q4_0 5.95
# -> 5.31 ms, Q5_0 8.96 -> 7.22, 576 x 1536 Q6_K 6.61 -> 4.88, Q4_K 4.37 -> 3.71. On the A55 the
# arm-a55 build's Q4_0 18.3 -> 16.4 ms (the A76-scheduled build 24.2 -> 26.0: its loads bunch up).
# x86's byte forms gained nothing from it: MEASURED at M=128 (AVX2, TVM_NUM_THREADS=1, a test run
# on the other core), five of SmolLM2's GEMMs 0.98-1.03x with VPMADDUBSW / VPDPBUSD on an unpacked
# scratch (session 15), so they keep unpacking in registers.
# SDOT's form: 4 channels x 8 k per call (two 4-k steps, the activations of both from one load).
# SMMLA's (i8mm): 2 rows x 2 channels x 8 k, 32 products per instruction.
UNPACKED_FORMS = {
    "smmla": UnpackedForm("sdot_unsigned", "i8mm", channels=2, rows=2, k=8, k_run=8, impl=smmla_tile,
                          unpack=unpack_runs),
    "sdot_unsigned": UnpackedForm("sdot_unsigned", "", channels=4, rows=1, k=8, k_run=4,
                                  impl=lambda: sdot_steps(2)),
    # W4A8 on per-token int8 activations (signed nibble halves, no q8 blocks): the same SDOT steps
    "sdot": UnpackedForm("sdot", "", channels=4, rows=1, k=8, k_run=4, impl=lambda: sdot_steps(2),
                         weight_bits=(4,)),
}


def unpacked_forms(int8_dot: str, cpu_features, bits: int) -> list[str]:
    """The unpacked forms a GEMM with byte form `int8_dot` and weights of `bits` may run on a CPU
    with these features, preferred first."""
    return [name for name, form in UNPACKED_FORMS.items() if form.byte_form == int8_dot and bits in form.weight_bits
            and (not form.feature or form.feature in cpu_features)]


def _desc_unpack(nt: int, kt: int, bits: int):
    """Out[c, k] = channel c's value k of a tile in offset-binary nibble halves W (the low nibble of
    W[c, k % (kt/2)] for the first half of k, the high for the second; 5 or 6 bits: with the bits
    above from the high-bit plane H), as the ops' tensor expression writes the unpacked scratch (kt:
    its run)."""
    from tvm.script import tirx as T

    half = kt // 2
    if bits == 4:
        @T.prim_func(s_tir=True)
        def desc(w: T.handle, out: T.handle):
            W = T.match_buffer(w, (nt, half), "int8", offset_factor=1)
            Out = T.match_buffer(out, (nt, kt), "int8", offset_factor=1)
            with T.sblock("root"):
                T.reads(W[0:nt, 0:half])
                T.writes(Out[0:nt, 0:kt])
                for c, k in T.grid(nt, kt):
                    with T.sblock("unpack"):
                        vc, vk = T.axis.remap("SS", [c, k])
                        Out[vc, vk] = T.Cast("int8", T.bitwise_and(
                            T.shift_right(T.Cast("int32", W[vc, vk % half]), vk // half * 4), 15))

        return desc
    shape = high_plane_shape(nt, bits)
    region = tuple(slice(0, e) for e in shape)

    @T.prim_func(s_tir=True)
    def desc_high(w: T.handle, h: T.handle, out: T.handle):
        W = T.match_buffer(w, (nt, half), "int8", offset_factor=1)
        H = T.match_buffer(h, shape, "int8", offset_factor=1)
        Out = T.match_buffer(out, (nt, kt), "int8", offset_factor=1)
        with T.sblock("root"):
            T.reads(W[0:nt, 0:half], H[region])
            T.writes(Out[0:nt, 0:kt])
            for c, k in T.grid(nt, kt):
                with T.sblock("unpack"):
                    vc, vk = T.axis.remap("SS", [c, k])
                    Out[vc, vk] = T.Cast("int8", high_value(W, H, vc, vk, kt, bits))

    return desc_high


def unpack_intrinsic(kind: str, bits: int) -> tuple[str, int] | None:
    """(registered name, channels) of the intrinsic that makes unpacked form `kind`'s scratch from
    weights of `bits` (None: the schedule's SIMD loop does)."""
    form = UNPACKED_FORMS[kind]
    if form.unpack is None:
        return None
    if (kind, "unpack", bits) not in _REGISTERED:
        from tvm.s_tir import TensorIntrin

        name = f"ekc_unpack_4x{form.k_run}_w{bits}_{kind}"
        TensorIntrin.register(name, _desc_unpack(4, form.k_run, bits), form.unpack(bits))
        _REGISTERED[(kind, "unpack", bits)] = name
    return _REGISTERED[(kind, "unpack", bits)], 4


def _desc_steps(nt: int, steps: int):
    """C[c] += sum_k A[k] * B[k // 4, c, k % 4]: int8 weights of `steps` consecutive k tiles of nt
    channels x 4 k (intrinsic_parts.impl_steps_of's view), as the ops' tensor expression reads the scratch."""
    from tvm.script import tirx as T

    kt = 4 * steps

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (kt,), "int8", offset_factor=1)
        B = T.match_buffer(b, (steps, nt, 4), "int8", offset_factor=1, strides=[T.int32(), 4, 1])
        C = T.match_buffer(c, (nt,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:nt], A[0:kt], B[0:steps, 0:nt, 0:4])
            T.writes(C[0:nt])
            for i, k in T.grid(nt, kt):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vk // 4, vi, vk % 4])

    return desc


def _desc_tile(rows: int, nt: int, kt: int):
    """C[i, c] += sum_k A[i, k] * B[c, k]: a tile of `rows` token rows x nt channels x kt k, each
    operand contiguous (the paired activations, the scratch, the accumulators' tiles)."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (rows, kt), "int8", offset_factor=1)
        B = T.match_buffer(b, (nt, kt), "int8", offset_factor=1)
        C = T.match_buffer(c, (rows, nt), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:rows, 0:nt], A[0:rows, 0:kt], B[0:nt, 0:kt])
            T.writes(C[0:rows, 0:nt])
            for i, j, k in T.grid(rows, nt, kt):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.Cast("int32", A[vi, vk]) * T.Cast("int32", B[vj, vk])

    return desc


def unpacked_intrinsic(kind: str) -> tuple[str, UnpackedForm]:
    """(registered name, form) of the intrinsic a weights_unpacked GEMM runs on unpacked form `kind`."""
    form = UNPACKED_FORMS[kind]
    if (kind, "unpacked") not in _REGISTERED:
        from tvm.s_tir import TensorIntrin

        if form.rows == 1:
            name = f"ekc_dot_{form.channels}x{form.k}_w8s_{kind}"
            desc = _desc_steps(form.channels, form.k // form.k_run)
        else:
            name = f"ekc_dot_{form.rows}x{form.channels}x{form.k}_w8t_{kind}"
            desc = _desc_tile(form.rows, form.channels, form.k)
        TensorIntrin.register(name, desc, form.impl())
        _REGISTERED[(kind, "unpacked")] = name
    return _REGISTERED[(kind, "unpacked")], form

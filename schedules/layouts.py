"""Layouts: the structural choices that shape an op's tensor expression and its packed weights,
made once per kernel variant by a schedule family from the target's facts (`layout()`), read by
the ops (ops/*.py build their tensor expressions from them) and recorded in the manifest.

Typed per family, so an op reads named fields instead of probing a dict: `threaded` says the
kernel is written as thread-bound TensorIR (GPU families) rather than for SIMD lanes (CPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Layout:
    family: ClassVar[str]
    threaded: ClassVar[bool] = False

    bucket: dict = field(default_factory=dict)  # the length bucket of the variant ({"M": 1}, {"L": [1, 512]}, {})
    int8_dot: str = "none"  # the int8 dot-product form the int GEMMs' weight tiles are made for
    n_tile: int = 4  # output channels per packed weight tile
    k_tile: int = 4  # reduction elements per packed weight tile
    act_offset: int = 0  # added to int8 activations (VNNI's unsigned bytes), subtracted via weight sums
    m_tile: int = 1  # token rows per accumulator tile (padded rows computed, never stored)
    rope_dtype: str = "float64"  # precision of RoPE's angles
    float_math: str = "float32"  # W4A16 products: "float16" where the device has fast fp16
    group_terms_in_sum: bool = False  # W4A16: group terms added where each group's sum is scaled
    # int8-activation GEMMs with int4 weights: a weight tile's low nibbles hold the first half of its
    # k, the high nibbles the second (a 128-bit AND-free unpack: shl+sshr and sshr), else adjacent k pairs
    int4_halves: bool = False
    # ... and stored offset-binary (u = w + 8 in [0, 15]): the unsigned operand of x86's byte
    # products (AND/USHR-unpacked for SDOT), activations the signed one; the kernel subtracts
    # 8 x (the block's sum of x)
    int4_unsigned: bool = False
    # ... and, in a GEMM of several token rows, unpacked once per column block into a scratch of one
    # int8 byte per value (the int8 dot form's tiles), which every row tile reads: no unpack per tile
    weights_unpacked: bool = False
    # ... and the intrinsic form whose tiles the scratch holds (schedules/cpu/unpacked.py
    # UNPACKED_FORMS: SDOT's, or SMMLA's with i8mm), its tile's k per channel run in the scratch
    # ([N/nt, K/unpacked_k, nt, unpacked_k]), and its token rows: with 2 (SMMLA) the activations are
    # copied in tiles of 2 rows x unpacked_k too
    unpacked_form: str = ""
    unpacked_k: int = 4
    unpacked_rows: int = 1
    # int GEMMs on q8 blocks: each group's int32 sum starts at the bits of 2^23 + 2^22 (12582912.0f), so
    # the sum's float value is those bits read as a float minus 12582912 (one FSUB; exact while |sum| <
    # 2^22), not a conversion (Target.slow_int_to_float)
    biased_sums: bool = False
    # ... and each group's accumulators set and scaled with the fewest SIMD ops and registers (NEON,
    # where a broadcast load and a register copy take a SIMD pipe): the starts stored once per column
    # of a weight tile, so each register is set by a vector load of its own (LLVM otherwise loads one
    # broadcast and copies it), and the sums scaled in place by the row's scale, then the channels'
    # (no product of the two held per register: 4 rows x 8 columns spilled without this)
    lean_group_scaling: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, **asdict(self)}


@dataclass(frozen=True)
class CpuLayout(Layout):
    family: ClassVar[str] = "cpu"

    kv_tile: int = 32  # attention: keys per online-softmax step
    q_rows: int = 4  # attention prefill: query positions per block (K/V rows loaded once for them)
    lanes: int = 1  # attention: SIMD lanes over the head dim
    split_len: int = 256  # attention decode: keys per split
    keys_in_lanes: bool = False  # attention: scores of VL keys at once, reduced together (ops/attention_tiles.py)
    query_dot: str = ""  # attention on an int8 cache: the int8_dot kind its scores use (query rounded to int8)
    key_fold: bool = False  # attention, per-key tile: 16 keys' partial sums folded at once (ops/attention_simd.py)


@dataclass(frozen=True)
class GpuLayout(Layout):
    family: ClassVar[str] = "gpu"
    threaded: ClassVar[bool] = True

    rope_dtype: str = "float32"  # mobile GPUs have no float64
    threads: int = 0  # attention: threads per workgroup
    kv_tile: int = 0  # attention prefill: keys staged in shared memory per step
    split_len: int = 0  # attention decode: keys per split


FAMILIES = {cls.family: cls for cls in (CpuLayout, GpuLayout)}


def from_json(data: dict[str, Any]) -> Layout:
    """A layout from its manifest form (fields a kernel-level entry leaves out take their defaults)."""
    fields = {k: v for k, v in data.items() if k != "family"}
    return FAMILIES[data["family"]](**fields)

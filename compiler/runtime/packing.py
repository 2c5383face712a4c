"""The numpy steps a manifest names to turn logical weights into a kernel's packed layout."""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.runtime.errors import LoaderError


def apply_step(name: str, array: np.ndarray, step: dict[str, Any], logical: dict[str, np.ndarray]) -> np.ndarray:
    """One step on `name`'s array; `logical` holds every logical weight (steps may read another)."""
    op = step["op"]
    if op == "check_range":
        if array.size and (array.min() < step["min"] or array.max() > step["max"]):
            raise ValueError(f"argument {name!r} has values outside [{step['min']}, {step['max']}] "
                             f"(found {array.min()}..{array.max()})")
        return array
    if op == "reshape":
        return array.reshape(step["shape"])
    if op == "transpose":
        return array.transpose(step["axes"])
    if op == "group_sums":  # int64 sums over groups of the last axis, times a constant
        grouped = array.astype(np.int64).reshape(*array.shape[:-1], -1, step["group"])
        return grouped.sum(-1) * step.get("scale", 1)
    if op == "nibbles":  # adjacent pairs of the last axis -> one byte, first element in the low nibble
        low = (array[..., 0::2].astype(np.int16) + step.get("low_offset", 0)).astype(np.uint8) & 0xF
        high = (array[..., 1::2].astype(np.int16) + step.get("high_offset", 0)).astype(np.uint8) & 0xF
        return (low | (high << 4)).view(np.int8)
    if op == "nibble_halves":  # the last axis' first half -> low nibbles, its second half -> high nibbles
        half, offset = array.shape[-1] // 2, step.get("offset", 0)  # offset: stored as value + offset
        low = (array[..., :half].astype(np.int16) + offset).astype(np.uint8) & 0xF
        high = (array[..., half:].astype(np.int16) + offset).astype(np.uint8) & 0xF
        return (low | (high << 4)).view(np.int8)
    if op == "pack_bits":  # the last axis' values, bits shift..shift+width each, packed into one byte from bit 0 up
        width = step["width"]
        fields = (array.astype(np.uint16) >> step["shift"]) & ((1 << width) - 1)
        places = (np.arange(array.shape[-1], dtype=np.uint16) * width)
        if array.shape[-1] * width != 8:
            raise LoaderError(f"pack_bits: {array.shape[-1]} values of {width} bits do not fill one byte")
        return (fields << places).sum(-1, dtype=np.uint16).astype(np.uint8).view(np.int8)
    if op == "high_bit_pairs":  # 6-bit values' top 2 bits, in the lanes of their nibble-halves tile
        return _high_bit_pairs(array)
    if op == "add_scaled":  # array + factor * another logical weight of the same shape (in float64)
        other = np.asarray(logical[step["source"]], dtype=np.float64)
        return array.astype(np.float64) + step["factor"] * other
    if op == "float16":  # stored as float16, as GGUF stores block scales: refuse what it would round
        half = array.astype(np.float16)
        changed = half.astype(np.float64) != array.astype(np.float64)
        if changed.any():
            bad = array[changed].flat[0]
            raise ValueError(f"argument {name!r} is stored as float16 (GGUF's block scales) but {changed.sum()} "
                             f"of its values are not float16 numbers (e.g. {bad!r}); round them to float16 first")
        return half
    raise LoaderError(f"manifest names an unknown packing step {op!r}")


def _high_bit_pairs(array: np.ndarray) -> np.ndarray:
    """[..., c, 8] 6-bit values of a tile's channels and 8 k -> [..., c, 2] bytes. In the tile's nibble
    halves, lane i of channel c holds k i (low nibble) and k 4 + i (high nibble); that lane's four top
    bits (k i's in bits 0-1, k 4 + i's in 2-3) are a nibble of byte i % 2, the low one for i < 2. So
    the kernel spreads byte i % 2 to lane i and shifts every other 16-bit pair by 4
    (schedules/cpu/intrinsic_parts.high_bit_pairs)."""
    if array.shape[-1] != 8:
        raise LoaderError(f"high_bit_pairs: a tile of {array.shape[-1]} k, not 8")
    top = (array.astype(np.uint8) >> 4) & 3
    lanes = top[..., :4] | (top[..., 4:] << 2)  # [..., c, 4]: lane i's nibble
    return (lanes[..., :2] | (lanes[..., 2:] << 4)).astype(np.uint8).view(np.int8)

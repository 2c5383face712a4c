"""The numpy steps a manifest names to turn logical weights into a kernel's packed layout."""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.runtime.errors import LoaderError


def apply_step(name: str, array: np.ndarray, step: dict[str, Any]) -> np.ndarray:
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
        high = array[..., 1::2].astype(np.uint8) & 0xF
        return (low | (high << 4)).view(np.int8)
    if op == "nibble_halves":  # the last axis' first half -> low nibbles, its second half -> high nibbles
        half, offset = array.shape[-1] // 2, step.get("offset", 0)  # offset: stored as value + offset
        low = (array[..., :half].astype(np.int16) + offset).astype(np.uint8) & 0xF
        high = (array[..., half:].astype(np.int16) + offset).astype(np.uint8) & 0xF
        return (low | (high << 4)).view(np.int8)
    raise LoaderError(f"manifest names an unknown packing step {op!r}")


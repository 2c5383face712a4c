"""Argument checks against the manifest: a caller's mistake is a ValueError naming the argument."""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.runtime.memory import DeviceView


def as_array(kernel: str, name: str, value: Any) -> np.ndarray:
    """A numpy array (or device array view) as is; any other DLPack tensor as a numpy view of it.
    A torch tensor with a lazy negation or conjugation bit (`t._neg_view()`, `t.conj()`) is
    resolved first (`resolve_neg()` / `resolve_conj()`, a copy): DLPack cannot carry those bits,
    and torch exports a negative view's data without its sign."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, DeviceView):
        return value.array()
    if hasattr(value, "__dlpack__"):
        value = _resolve_lazy_bits(value)
        try:
            return np.from_dlpack(value)
        except (TypeError, RuntimeError, BufferError) as err:
            raise ValueError(f"{kernel}: argument {name!r} is a DLPack tensor numpy cannot read "
                             f"(is it on the CPU?): {err}") from None
    raise ValueError(f"{kernel}: argument {name!r} must be a numpy array or a DLPack tensor, "
                     f"got {type(value).__name__}")


def _resolve_lazy_bits(tensor: Any) -> Any:
    """The tensor with torch's lazy negation/conjugation materialised (duck-typed: no torch import)."""
    for flag, resolve in (("is_neg", "resolve_neg"), ("is_conj", "resolve_conj")):
        is_set = getattr(tensor, flag, None)
        if callable(is_set) and is_set():
            tensor = getattr(tensor, resolve)()
    return tensor


def check_names(kernel: str, expected: list[str], given: dict[str, Any]) -> None:
    missing = [n for n in expected if n not in given]
    if missing:
        raise ValueError(f"{kernel}: missing argument(s) {', '.join(map(repr, missing))}")
    extra = [n for n in given if n not in expected]
    if extra:
        raise ValueError(f"{kernel}: unexpected argument(s) {', '.join(map(repr, extra))}; "
                         f"expected {', '.join(expected)}")


def bind_shape(kernel: str, name: str, array: np.ndarray, shape: list, dtype,
                sizes: dict[str, int]) -> None:
    if array.dtype != dtype:
        raise ValueError(f"{kernel}: argument {name!r} must have dtype {dtype}, got {array.dtype}")
    if array.ndim != len(shape):
        raise ValueError(f"{kernel}: argument {name!r} must have {len(shape)} dims {shape}, "
                         f"got shape {list(array.shape)}")
    for axis, (want, got) in enumerate(zip(shape, array.shape)):
        if isinstance(want, str):
            if got < 1:
                raise ValueError(f"{kernel}: argument {name!r}: {want} must be at least 1, got {got}")
            if sizes.setdefault(want, got) != got:
                raise ValueError(f"{kernel}: argument {name!r} axis {axis} has {want}={got}, "
                                 f"but another argument has {want}={sizes[want]}")
        elif want != got:
            raise ValueError(f"{kernel}: argument {name!r} must have shape {shape}, got {list(array.shape)}")


def check_dims_at_least(kernel: str, sizes: dict[str, int], at_least: dict[str, str]) -> None:
    """Runtime dims bound by the arguments that may not be smaller than another (attention
    prefill's cache of L keys holds its S new rows: L >= S)."""
    for dim, other in at_least.items():
        if dim in sizes and other in sizes and sizes[dim] < sizes[other]:
            raise ValueError(f"{kernel}: {dim}={sizes[dim]} must be at least {other}={sizes[other]}")


def check_layout(kernel: str, name: str, array: np.ndarray, strided: bool) -> None:
    """A non-C-contiguous argument passes only where the manifest allows a strided outer axis and
    the rest of the array is contiguous (a view of the first rows of a longer buffer)."""
    inner = array.strides[1:] == np.empty(array.shape[1:], array.dtype).strides and array.strides[0] > 0
    if not (strided and inner and array.strides[0] % array.itemsize == 0):
        allowed = " (only its outer axis may be strided)" if strided else ""
        raise ValueError(f"{kernel}: argument {name!r} is not C-contiguous{allowed}; "
                         "np.ascontiguousarray makes a contiguous copy")


def bucket_matches(bucket: dict[str, Any], sizes: dict[str, int]) -> bool:
    """Whether runtime lengths fall in a length bucket: {"M": 1} is exact, {"L": [1, 512]} an
    inclusive range, {} matches everything."""
    for dim, value in bucket.items():
        size = sizes.get(dim)
        if size is None or not (value[0] <= size <= value[1] if isinstance(value, list) else size == value):
            return False
    return True


"""Aligned host memory, and arrays that live where the kernels run (DeviceArray)."""

from __future__ import annotations

import ctypes
import math

import numpy as np

from compiler.runtime.errors import LoaderError

# TVM kernels assume 64-byte aligned data (they emit aligned vector loads); numpy promises only 16.
ALIGNMENT = 64


def _address(array: np.ndarray) -> int:
    if array.flags.writeable and array.flags.c_contiguous and array.size:  # 0.3 us, a third of the alternatives
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    return array.__array_interface__["data"][0]


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data is ALIGNMENT-aligned: kernels take it without a copy."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = (-_address(raw)) % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned(array: np.ndarray) -> np.ndarray:
    """`array` itself when its data is aligned, else an aligned copy."""
    if _address(array) % ALIGNMENT == 0:
        return array
    out = empty(array.shape, array.dtype)
    out[...] = array
    return out



def device_shape(shape) -> tuple[int, ...]:
    """A DeviceArray's shape as ints, checked: int() would turn 2.5 into 2 and "4" into 4, and a
    negative dim would size the allocation wrong instead of failing."""
    try:
        dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    except TypeError:
        raise ValueError(f"device_array: shape {shape!r} is neither an integer nor a sequence of them") from None
    for axis, dim in enumerate(dims):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 0:
            raise ValueError(f"device_array: shape {shape!r}: dim {axis} must be a non-negative integer, "
                             f"got {dim!r}")
    return tuple(int(d) for d in dims)


def device_dtype(dtype) -> np.dtype:
    """A DeviceArray's dtype, checked: kernels read integers and floats, so anything else (object,
    strings, records) or a name numpy does not know is the caller's mistake, said as a ValueError."""
    try:
        checked = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"device_array: dtype {dtype!r} is not a numpy dtype") from None
    if checked.kind not in "iuf":
        raise ValueError(f"device_array: dtype {checked} is not an integer or float dtype")
    return checked


class DeviceArray:
    """An array kept where the library's kernels run, for data that changes a little per call but
    is read whole (a KV cache): on a Vulkan device it lives in device memory, and kernels read views
    of it in place instead of receiving a copy per call; on CPU targets it is an aligned numpy
    array. Write with `arr[key] = values`, pass `arr[key]` (a view) to kernels, read with numpy()."""

    def __init__(self, driver, shape, dtype):
        self.shape, self.dtype = device_shape(shape), device_dtype(dtype)
        self._driver = driver
        allocate = getattr(driver, "allocate", None)
        self._storage = allocate(self.shape, self.dtype) if allocate else empty(self.shape, self.dtype)

    def _open(self) -> np.ndarray:
        if getattr(self._driver, "closed", False):
            raise LoaderError("the library this DeviceArray belongs to is closed")
        return self._storage

    def __setitem__(self, key, values) -> None:
        self._open()[key] = values

    def __getitem__(self, key) -> DeviceView:
        return DeviceView(self, key)

    def numpy(self) -> np.ndarray:
        """A copy of the values."""
        return self._open().copy()


class DeviceView:
    """`device_array[key]`: what kernels take; it resolves to the driver's memory at call time."""

    def __init__(self, parent: DeviceArray, key):
        self._parent, self._key = parent, key

    def array(self) -> np.ndarray:
        return self._parent._open()[self._key]


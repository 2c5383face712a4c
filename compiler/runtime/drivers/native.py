"""The native driver: the library dlopen-ed in this process through tvm_ffi, arrays passed by DLPack."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any

import numpy as np

from compiler.runtime.errors import LoaderError
from compiler.runtime.host import configure_thread_pool, native_ok
from compiler.runtime.manifest import artifact_path
from compiler.runtime.memory import ALIGNMENT, aligned, empty
from compiler.runtime.paths import tvm_runtime_path

_RUNTIME_LOADED = False


def _load_runtime():
    """tvm_ffi alone runs simple kernels, but kernels that allocate a workspace call
    TVMBackendAllocWorkspace, which only libtvm_runtime provides: load it globally first."""
    global _RUNTIME_LOADED
    import tvm_ffi

    configure_thread_pool()
    if not _RUNTIME_LOADED:
        path = tvm_runtime_path()
        if not path.is_file():
            raise LoaderError(f"the TVM runtime library {path} does not exist")
        ctypes.CDLL(str(path), ctypes.RTLD_GLOBAL)
        _RUNTIME_LOADED = True
    return tvm_ffi



def to_tensor(from_dlpack, array: np.ndarray):
    """`array` as a TVM tensor whose data is aligned (the kernels' vector loads assume it; a
    misaligned array is copied). A read-only array (np.frombuffer over bytes) is passed as well:
    numpy refuses it to the legacy DLPack export tvm_ffi asks for, since that cannot say
    "read-only"; kernels never write their inputs, so it goes as a versioned capsule, which can."""
    try:
        tensor = from_dlpack(array)
    except BufferError:
        if array.flags.writeable:
            raise
        tensor = from_dlpack(_read_only_capsule(array))
    if tensor.data_ptr() % ALIGNMENT:
        tensor = from_dlpack(aligned(array))  # a copy: writeable
    return tensor


def _read_only_capsule(array: np.ndarray):
    """A versioned DLPack capsule of a read-only array; numpy before 2.0 has none: a writeable
    aligned copy instead."""
    try:
        return array.__dlpack__(max_version=(1, 0))
    except TypeError:
        copy = empty(array.shape, array.dtype)
        copy[...] = array
        return copy.__dlpack__()


class NativeDriver:
    mode = "native"

    def __init__(self, library: Path):
        self._ffi = _load_runtime()
        self._module = self._ffi.load_module(str(library))
        self._functions: dict[str, Any] = {}

    def call(self, name: str, inputs: list[np.ndarray], out_specs) -> list[np.ndarray]:
        function = self._function(name)
        from_dlpack = self._ffi.from_dlpack
        tensors = [to_tensor(from_dlpack, array) for array in inputs]
        outputs = [empty(shape, dtype) for shape, dtype in out_specs]
        function(*tensors, *[from_dlpack(a) for a in outputs])
        return outputs

    def _function(self, name: str):
        """The exported function `name`, looked up once."""
        function = self._functions.get(name)
        if function is None:
            try:
                function = self._functions[name] = self._module[name]
            except AttributeError:  # tvm_ffi's answer for a name the library does not export
                raise LoaderError(f"the library does not export the kernel {name!r} its manifest names") from None
        return function

    def keep(self, count: int, resident: dict[int, np.ndarray]):
        """Argument list template with the (aligned) resident arrays converted once; None at the
        positions of per-call inputs. The arrays stay referenced by the template's owner."""
        template = [None] * count
        for position, array in resident.items():
            template[position] = to_tensor(self._ffi.from_dlpack, array)
        return template, list(resident.values())

    def call_kept(self, name: str, kept, slots: list[int], inputs: list[np.ndarray], out_specs) -> list[np.ndarray]:
        outputs = [empty(shape, dtype) for shape, dtype in out_specs]
        self.prepare_kept(name, kept, slots, inputs, outputs)()
        return outputs

    def prepare_kept(self, name: str, kept, slots: list[int], inputs: list[np.ndarray], outputs: list[np.ndarray]):
        """The call on these arrays, converted once and returned to run (call_kept runs it once; a
        prepared call, whose arrays are aligned so that none is copied, runs it again and again)."""
        function = self._function(name)
        from_dlpack = self._ffi.from_dlpack
        args = list(kept[0])
        for position, array in zip(slots, inputs):
            args[position] = to_tensor(from_dlpack, array)
        args += [from_dlpack(a) for a in outputs]
        return functools.partial(function, *args)

    def close(self) -> None:
        self._functions.clear()


def open_driver(directory: Path, manifest: dict[str, Any], emulate: bool | None):
    """This process when the machine runs the target's code, else a worker under its emulator."""
    target = manifest["target"]
    library = artifact_path(directory, manifest, "library")
    ok, reason = native_ok(target)
    if emulate is None:
        emulate = not ok
    if not emulate:
        if not ok:
            raise LoaderError(f"cannot run {target['name']} natively: {reason}")
        return NativeDriver(library)
    if not target.get("emulator"):
        raise LoaderError(f"target {target['name']} has no emulator here"
                          + (f" and cannot run natively: {reason}" if reason else ""))
    from compiler.runtime.drivers.emulated import EmulatedDriver

    return EmulatedDriver(library, target["isa"], target["emulator"])

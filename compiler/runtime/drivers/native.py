"""The native driver: the library dlopen-ed in this process through tvm_ffi, arrays passed by DLPack."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from compiler.runtime.errors import LoaderError
from compiler.runtime.host import native_ok, use_all_cores
from compiler.runtime.manifest import artifact_path
from compiler.runtime.memory import ALIGNMENT, aligned, empty
from compiler.runtime.paths import tvm_runtime_path

_RUNTIME_LOADED = False


def _load_runtime():
    """tvm_ffi alone runs simple kernels, but kernels that allocate a workspace call
    TVMBackendAllocWorkspace, which only libtvm_runtime provides: load it globally first."""
    global _RUNTIME_LOADED
    import tvm_ffi

    use_all_cores()
    if not _RUNTIME_LOADED:
        path = tvm_runtime_path()
        if not path.is_file():
            raise LoaderError(f"the TVM runtime library {path} does not exist")
        ctypes.CDLL(str(path), ctypes.RTLD_GLOBAL)
        _RUNTIME_LOADED = True
    return tvm_ffi



class NativeDriver:
    mode = "native"

    def __init__(self, library: Path):
        self._ffi = _load_runtime()
        self._module = self._ffi.load_module(str(library))
        self._functions: dict[str, Any] = {}

    def call(self, name: str, inputs: list[np.ndarray], out_specs) -> list[np.ndarray]:
        function = self._functions.get(name)
        if function is None:
            function = self._functions[name] = self._module[name]
        from_dlpack = self._ffi.from_dlpack
        tensors = []
        for array in inputs:
            tensor = from_dlpack(array)
            if tensor.data_ptr() % ALIGNMENT:  # the kernels' vector loads assume alignment: copy
                tensor = from_dlpack(aligned(array))
            tensors.append(tensor)
        outputs = [empty(shape, dtype) for shape, dtype in out_specs]
        function(*tensors, *[from_dlpack(a) for a in outputs])
        return outputs

    def keep(self, count: int, resident: dict[int, np.ndarray]):
        """Argument list template with the (aligned) resident arrays converted once; None at the
        positions of per-call inputs. The arrays stay referenced by the template's owner."""
        template = [None] * count
        for position, array in resident.items():
            template[position] = self._ffi.from_dlpack(aligned(array))
        return template, list(resident.values())

    def call_kept(self, name: str, kept, slots: list[int], inputs: list[np.ndarray], out_specs) -> list[np.ndarray]:
        function = self._functions.get(name)
        if function is None:
            function = self._functions[name] = self._module[name]
        from_dlpack = self._ffi.from_dlpack
        args = list(kept[0])
        for position, array in zip(slots, inputs):
            tensor = from_dlpack(array)
            args[position] = tensor if not tensor.data_ptr() % ALIGNMENT else from_dlpack(aligned(array))
        outputs = [empty(shape, dtype) for shape, dtype in out_specs]
        function(*args, *[from_dlpack(a) for a in outputs])
        return outputs

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

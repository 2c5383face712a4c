"""The small loader: run built kernels with numpy (or any DLPack) arrays.

Depends only on numpy and the TVM runtime (`tvm_ffi` + `libtvm_runtime.so`), never on the compiler,
so it runs on a board that has only those. The manifest is the contract: every argument is checked
against it before a call, so a mistake is a ValueError naming the argument, never a crash. The
target's backend (named in the manifest) picks the driver that runs the kernels:

    native   the library dlopen-ed here, or for another ISA in a worker under qemu-user
    hexagon  the build's runner program, under qemu-hexagon here or on the DSP
    vulkan   SPIR-V shaders dispatched on this machine's Vulkan device

    lib = load("build/arm")
    gemm = lib["qgemm_w8a8_n896_k896"]
    weights = gemm.pack(w=w_int8, w_scale=scales)
    y = gemm(x=x_int8, x_scale=x_scales, **weights)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from compiler.runtime.errors import LoaderError
from compiler.runtime.library import BoundKernel, Kernel, Library
from compiler.runtime.manifest import read_manifest
from compiler.runtime.memory import DeviceArray, aligned, empty

__all__ = ["load", "Library", "Kernel", "BoundKernel", "DeviceArray", "LoaderError", "read_manifest",
           "aligned", "empty"]

# backend name (target data, copied into the manifest) -> the module whose open() makes its driver
DRIVERS = {
    "native": "compiler.runtime.drivers.native",
    "hexagon": "compiler.runtime.drivers.runner",
    "vulkan": "compiler.runtime.drivers.vulkan",
}


def load(directory: str | os.PathLike, *, emulate: bool | None = None) -> Library:
    """Load a build directory. emulate=None runs natively when this machine can, else under the
    target's emulator; True forces the emulator; False refuses to emulate."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    backend = manifest["target"].get("backend")
    if backend not in DRIVERS:
        raise LoaderError(f"{directory}: the manifest names backend {backend!r}; this loader drives "
                          f"{', '.join(DRIVERS)}")
    driver = importlib.import_module(DRIVERS[backend]).open_driver(directory, manifest, emulate)
    return Library(directory, manifest, driver)

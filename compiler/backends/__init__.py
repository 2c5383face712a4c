"""Backends as plug-ins (see base.Backend): `native` (CPU libraries, run natively or under
qemu-user), `hexagon` (a runner program for the DSP, qemu-hexagon here) and `vulkan` (our
GLSL/SPIR-V codegen, the loader's dispatcher). Imported lazily, so a missing dependency of one
backend never breaks another. Adding a backend is a new folder and a line here."""

from __future__ import annotations

import importlib

_MODULES = {
    "native": "compiler.backends.native",
    "hexagon": "compiler.backends.hexagon",
    "vulkan": "compiler.backends.vulkan",
}


def names() -> list[str]:
    return list(_MODULES)


def by_name(name: str):
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name]).BACKEND


def get(target):
    """The backend the target's data names."""
    return by_name(target.backend)


def toolchain_for(target, *, cc: str | None = None, ndk: str | None = None, android_api: int = 28):
    """The toolchain the target's backend links with (None where it needs none: Vulkan)."""
    return get(target).toolchain(target, cc=cc, ndk=ndk, android_api=android_api)

"""Where the loader finds its helpers: the cache of emulator userlands and the TVM runtime library.

Environment: EKC_CACHE_DIR moves the cache (default ~/.cache/edge-kernel-compiler); EKC_TVM_RUNTIME
names the libtvm_runtime.so to load (the emulated worker points it at the target ISA's copy).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from compiler.runtime.errors import LoaderError



def cache_dir() -> Path:
    """Downloaded and built helpers (emulator userlands, model files): $EKC_CACHE_DIR, else a per-user
    cache outside any checkout, so a fresh clone reuses them."""
    if os.environ.get("EKC_CACHE_DIR"):
        return Path(os.environ["EKC_CACHE_DIR"])
    return Path.home() / ".cache" / "edge-kernel-compiler"


@contextmanager
def cache_lock(entry: str) -> Iterator[None]:
    """Hold one cache entry's lock while it is checked and made: two processes that need the same
    missing helper (a `bench` beside `run`, the test suite's parallel workers) make it once, the
    second waiting and then finding it, instead of both writing into the same folder. Not
    re-entrant: a holder must not take the same entry again."""
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / (re.sub(r"[^A-Za-z0-9.+-]", "_", entry) + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sysroot_dir(isa: str) -> Path:
    """Emulated userland for `isa`: root/ (libc, CPython) and site/ (numpy, tvm_ffi, the TVM runtime)."""
    return cache_dir() / "sysroot" / isa


def emulated_python(isa: str) -> Path:
    """The CPython of `isa`'s userland (run under its qemu-user)."""
    return sysroot_dir(isa) / "root" / "usr" / "bin" / "python3.11"


def emulated_environment(isa: str) -> dict[str, str]:
    """The environment that CPython runs with: the userland's libraries, packages and TVM runtime."""
    root = sysroot_dir(isa)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(root / "site"),
        "EKC_TVM_RUNTIME": str(root / "site" / "tvm_runtime" / "libtvm_runtime.so"),
        "QEMU_LD_PREFIX": str(root / "root"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def tvm_runtime_path() -> Path:
    if os.environ.get("EKC_TVM_RUNTIME"):
        return Path(os.environ["EKC_TVM_RUNTIME"])
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise LoaderError("the TVM runtime library was not found: install apache-tvm or set EKC_TVM_RUNTIME")
    return Path(spec.submodule_search_locations[0]) / "lib" / "libtvm_runtime.so"


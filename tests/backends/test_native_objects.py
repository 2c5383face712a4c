"""A native library's code is generated in parts on several threads (backends/native/objects.py)
and linked into one library: it must hold every kernel, and nothing a single build would not."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from conftest import assert_matches

import targets
from compiler import backends, build, runtime
from compiler.specs import make_spec

SPECS = [make_spec("quantize_per_token", k=37), make_spec("quantize_per_token", k=100),
         make_spec("qgemm_w8a8", n=64, k=128)]


@pytest.mark.native
def test_a_library_built_in_parts_holds_every_kernel_and_no_main(tmp_path):
    target = targets.get("x86")
    build.build(SPECS, target, tmp_path, toolchain=backends.toolchain_for(target), progress=lambda _: None)
    library = ctypes.CDLL(str(tmp_path / "kernels.so"))
    manifest = runtime.read_manifest(tmp_path)
    symbols = [v["symbol"] for entry in manifest["kernels"].values() for v in entry["variants"]]
    assert len(symbols) >= 4  # more than one part on two or more threads
    for symbol in symbols:
        assert hasattr(library, f"__tvm_ffi_{symbol}"), symbol
    # TVM names the function of a one-function module `main`; no part may be one function
    assert not hasattr(library, "__tvm_ffi_main")
    with runtime.load(tmp_path) as lib:
        for spec in SPECS:
            assert_matches(lib[spec.name], {"M": 3}, seed=int(np.uint8(len(spec.name))))

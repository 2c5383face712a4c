"""Shared fixtures: small libraries built once per session, per target, and opened through the loader."""

from __future__ import annotations

import functools
import os
import shutil

import numpy as np
import pytest

import targets
from compiler import build, loader, toolchain, verify
from compiler.specs import make_spec

# CI sets this so a missing emulator fails the run instead of skipping its tests.
REQUIRE_EMULATOR = os.environ.get("EKC_REQUIRE_EMULATOR") == "1"


def emulator_missing(isa: str) -> str | None:
    """Why foreign-ISA kernels cannot run here, or None when they can."""
    if isa == "spirv":
        return _vulkan_missing()
    emulator = {"aarch64": "qemu-aarch64", "hexagon": "qemu-hexagon"}[isa]
    if shutil.which(emulator) is None:
        return f"{emulator} is not installed (apt-get install qemu-user)"
    if isa == "aarch64" and not (loader.sysroot_dir(isa) / "READY.json").is_file():  # Hexagon needs no userland
        return f"no {isa} userland (python -m compiler setup-emulator --isa {isa})"
    return None


@functools.cache
def _vulkan_missing() -> str | None:
    """Why SPIR-V kernels cannot be built and run here (glslang, spirv-val, a Vulkan device such as lavapipe)."""
    from compiler.codegen import vulkan
    from compiler.vulkan_runtime import Device, VulkanError

    try:
        vulkan.require_tools()
    except RuntimeError as err:
        return str(err)
    try:
        Device().close()
    except VulkanError as err:
        return str(err)
    return None


def require_emulator(isa: str) -> None:
    reason = emulator_missing(isa)
    if reason:
        if REQUIRE_EMULATOR:
            pytest.fail(f"emulator required but unavailable: {reason}")
        pytest.skip(f"EMULATOR UNAVAILABLE, test not run: {reason}")


# Kernels whose shapes exercise every variant while staying fast under emulation.
def coverage_specs() -> list:
    return [
        make_spec("qgemm_w8a8", n=64, k=128),
        make_spec("qgemm_w8a8", n=96, k=192, bias=True),
        make_spec("qgemm_w8a8", n=64, k=256, group=32),  # block scales (GGUF Q8_0)
        make_spec("qgemm_w4a8", n=64, k=256, group=32),
        make_spec("qgemm_w4a8", n=32, k=256, group=128, bias=True),
        make_spec("qgemm_w4a8", n=16, k=64, group=64),  # one group: scales [N, 1]
        make_spec("qgemm_w4a16", n=64, k=256, group=64),
        make_spec("qgemm_w4a16", n=48, k=256, group=128, zero=True, bias=True),
        make_spec("qgemm_w4a16", n=32, k=64, group=32, act="float16"),
        make_spec("qgemm_w4a16", n=64, k=128, group=32, min=True),  # block minimum (GGUF Q4_1)
        make_spec("qgemm_w4a16", n=32, k=128, group=64, zero=True, min=True, bias=True),
        make_spec("qgemm_w8a16", n=64, k=128, group=32),  # GGUF Q8_0 with exact float activations
        make_spec("qgemm_w8a16", n=48, k=256, group=64, bias=True),
        # a decoder layer's fusions: RMSNorm before, SwiGLU input, residual add after
        make_spec("qgemm_w4a16", n=64, k=128, group=32, min=True, norm=1e-5),
        make_spec("qgemm_w4a16", n=32, k=64, group=32, min=True, swiglu=True, residual=True),
        make_spec("qgemm_w8a16", n=64, k=64, group=32, norm=1e-6, residual=True),
        make_spec("qgemm_w8a16", n=32, k=64, group=32, swiglu=True),
        make_spec("quantize_per_token", k=100),
        make_spec("quantize_per_token", k=37),
        make_spec("qkv_proj", hq=8, hkv=2, d=64, k=128, quant="w8a8", bias=True, rope_theta=500000.0),
        make_spec("qkv_proj", hq=4, hkv=4, d=128, k=128, quant="w4a8", group=64),
        make_spec("qkv_proj", hq=4, hkv=1, d=64, k=128, quant="w4a16", group=32, zero=True, rope=False),
        make_spec("qkv_proj", hq=2, hkv=2, d=64, k=64, quant="w4a16", group=32, bias=True),
        make_spec("qkv_proj", hq=9, hkv=3, d=64, k=128, quant="w4a16", group=32, min=True,
                  rope_theta=100000.0, norm=1e-5),  # SmolLM2's heads, GGUF Q4_1, the attention RMSNorm
        make_spec("qkv_proj", hq=4, hkv=2, d=32, k=64, quant="w8a16", group=32, norm=1e-5),  # GGUF Q8_0
        make_spec("attention_prefill", hq=4, hkv=4, d=64),
        make_spec("attention_prefill", hq=8, hkv=2, d=128),
        make_spec("attention_decode", hq=4, hkv=4, d=128),
        make_spec("attention_decode", hq=8, hkv=2, d=64),
    ]


@pytest.fixture(scope="session")
def build_library(tmp_path_factory):
    """build_library(target_name, specs) -> build directory (cached for the session)."""
    cache: dict = {}

    def _build(target_name: str, specs: list):
        key = (target_name, tuple(s.name for s in specs))
        if key not in cache:
            target = targets.get(target_name)
            out = tmp_path_factory.mktemp(f"build-{target_name}")
            build.build(specs, target, out, toolchain=toolchain.for_target(target), progress=lambda _: None)
            cache[key] = out
        return cache[key]

    return _build


def assert_matches(kernel, sizes: dict, seed: int = 0) -> None:
    checks = verify.check_kernel(kernel, sizes, np.random.default_rng(seed))
    failed = [str(c) for c in checks if not c.ok]
    assert not failed, "\n".join(failed)

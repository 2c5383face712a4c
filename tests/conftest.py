"""Shared fixtures: small libraries built once per session, per target, and opened through the loader."""

from __future__ import annotations

import functools
import os
import shutil

import numpy as np
import pytest

import targets
from compiler import backends, build, verify
from compiler.runtime.host import missing_emulator
from compiler.runtime.paths import sysroot_dir
from compiler.specs import make_spec

# CI sets this so a missing emulator fails the run instead of skipping its tests.
REQUIRE_EMULATOR = os.environ.get("EKC_REQUIRE_EMULATOR") == "1"
TIERS = ("unit", "compile", "native", "emulated", "e2e")  # pyproject.toml says what each means


def pytest_collection_modifyitems(config, items):
    """Every test is in exactly one tier, so `pytest -m <tier>` selections partition the suite."""
    wrong = []
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {tiers or 'no tier'}")
    if wrong:
        raise pytest.UsageError("tests must be in exactly one tier of " + ", ".join(TIERS) + ":\n" + "\n".join(wrong))


def emulator_missing(isa: str) -> str | None:
    """Why foreign-ISA kernels cannot run here, or None when they can."""
    if isa == "spirv":
        return _vulkan_missing()
    emulator = targets.emulator_for(isa)
    if shutil.which(emulator) is None:
        return missing_emulator(emulator)
    if isa == "aarch64" and not (sysroot_dir(isa) / "READY.json").is_file():  # Hexagon needs no userland
        return f"no {isa} userland (python -m compiler setup-emulator --isa {isa})"
    return None


@functools.cache
def _spirv_tools_missing() -> str | None:
    """Why SPIR-V kernels cannot be built here (glslang, spirv-val)."""
    from compiler.backends.vulkan import spirv

    try:
        spirv.require_tools()
    except RuntimeError as err:
        return str(err)
    return None


@functools.cache
def _vulkan_missing() -> str | None:
    """Why SPIR-V kernels cannot be built and run here (the tools, a Vulkan device such as lavapipe)."""
    from compiler.runtime.drivers.vulkan_device import Device, VulkanError

    if _spirv_tools_missing():
        return _spirv_tools_missing()
    try:
        Device().close()
    except VulkanError as err:
        return str(err)
    return None


def _require(reason: str | None, what: str) -> None:
    if reason:
        if REQUIRE_EMULATOR:
            pytest.fail(f"{what} required but unavailable: {reason}")
        pytest.skip(f"{what.upper()} UNAVAILABLE, test not run: {reason}")


def require_spirv_tools() -> None:
    """For compile-tier tests of Vulkan builds: glslang and spirv-val, no device."""
    _require(_spirv_tools_missing(), "SPIR-V tools")


def require_emulator(isa: str) -> None:
    _require(emulator_missing(isa), "emulator")


def require_cycle_model() -> None:
    """The ARM cycle model's tools: qemu-aarch64 and the pinned llvm-mca (a skip names what is missing)."""
    from compiler.backends.native.cycle_model import mca

    require_emulator("aarch64")
    try:
        mca.check_version()
    except mca.ModelError as err:
        pytest.skip(f"CYCLE MODEL UNAVAILABLE, test not run: {err}")


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
        # GGUF's 5/6-bit and K-quant blocks (the decoding of each type's bytes: tests/llm/test_gguf.py)
        make_spec("qgemm_gguf", n=64, k=512, type="Q4_K", norm=1e-5),
        make_spec("qgemm_gguf", n=32, k=256, type="Q5_K", swiglu=True, residual=True),
        make_spec("qgemm_gguf", n=48, k=256, type="Q6_K", bias=True),
        make_spec("qgemm_gguf", n=32, k=96, type="Q5_0"),
        make_spec("qgemm_gguf", n=64, k=64, type="Q5_1", residual=True),
        # Q4_K on int8 activations: W4A8's dot products on Q8_1 blocks, the type's own scales. (Not with
        # a fused SwiGLU here: a GPU's expf a last bit off flips a rounding to int8 now and then.)
        make_spec("qgemm_gguf", n=64, k=256, type="Q4_K", act="q8_1", norm=1e-5, residual=True),
        # ... and the 5- and 6-bit types: x86 and ARM SDOT intrinsics with the high bits ORed in, the
        # portable loop (Hexagon) or dot4 (Vulkan) on values made signed from a plain high-bit plane
        make_spec("qgemm_gguf", n=64, k=256, type="Q6_K", act="q8_0", residual=True),
        make_spec("qgemm_gguf", n=32, k=128, type="Q5_1", act="q8_1", norm=1e-5),
        # activations quantised inside the GEMM to llama.cpp's blocks (GGUF Q4_1 / Q8_0 / Q4_0, the q8 path)
        make_spec("qgemm_w4a8", n=64, k=128, group=32, act="q8_1", min=True, norm=1e-5),
        make_spec("qgemm_w8a8", n=64, k=128, group=32, act="q8_0", swiglu=True, residual=True),
        make_spec("qgemm_w4a8", n=32, k=96, group=32, act="q8_0", q8_recip="1/d", residual=True),
        make_spec("quantize_per_token", k=100),
        make_spec("quantize_per_token", k=37),
        make_spec("qkv_proj", hq=8, hkv=2, d=64, k=128, quant="w8a8", bias=True, rope_theta=500000.0),
        make_spec("qkv_proj", hq=4, hkv=4, d=128, k=128, quant="w4a8", group=64),
        make_spec("qkv_proj", hq=4, hkv=1, d=64, k=128, quant="w4a16", group=32, zero=True, rope=False),
        make_spec("qkv_proj", hq=2, hkv=2, d=64, k=64, quant="w4a16", group=32, bias=True),
        make_spec("qkv_proj", hq=9, hkv=3, d=64, k=128, quant="w4a16", group=32, min=True,
                  rope_theta=100000.0, norm=1e-5),  # SmolLM2's heads, GGUF Q4_1, the attention RMSNorm
        make_spec("qkv_proj", hq=4, hkv=2, d=32, k=64, quant="w8a16", group=32, norm=1e-5),  # GGUF Q8_0
        make_spec("qkv_proj", hq=4, hkv=2, d=32, k=256, quant="gguf", type="Q6_K", norm=1e-5),
        # Q and K only (a Q4_K_M layer whose V is another type): 96 rows, not a multiple of 64
        make_spec("qkv_proj", hq=2, hkv=1, d=32, k=64, quant="gguf", type="Q5_0", bias=True, v=False),
        make_spec("qkv_proj", hq=4, hkv=2, d=32, k=256, quant="gguf", type="Q4_K", act="q8_1", group=32, norm=1e-5),
        make_spec("qkv_proj", hq=9, hkv=3, d=64, k=128, quant="w4a8", group=32, act="q8_1", min=True,
                  rope_theta=100000.0, norm=1e-5),  # the same on the q8 path
        make_spec("attention_prefill", hq=4, hkv=4, d=64),
        make_spec("attention_prefill", hq=8, hkv=2, d=128),
        make_spec("attention_decode", hq=4, hkv=4, d=128),
        make_spec("attention_decode", hq=8, hkv=2, d=64),
        make_spec("attention_prefill", hq=9, hkv=3, d=64, kv="int8"),  # SmolLM2's heads on an int8 KV cache
        make_spec("attention_decode", hq=9, hkv=3, d=64, kv="int8"),
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
            build.build(specs, target, out, toolchain=backends.toolchain_for(target), progress=lambda _: None)
            cache[key] = out
        return cache[key]

    return _build


def assert_matches(kernel, sizes: dict, seed: int = 0) -> None:
    checks = verify.check_kernel(kernel, sizes, np.random.default_rng(seed))
    failed = [str(c) for c in checks if not c.ok]
    assert not failed, "\n".join(failed)

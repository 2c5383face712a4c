"""The Hexagon build: every kernel runs under qemu-hexagon (QEMU's v67 HVX model) through the loader's
runner and matches numpy; the int8 GEMMs run VRMPY inside their loops; builds for v68+ (which QEMU
cannot execute) compile, carry VRMPY, and refuse to load with a clear reason."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import assert_matches, coverage_specs, require_emulator
from kernel_cases import cases

import targets
from compiler import build, loader, toolchain
from compiler.specs import make_spec

pytestmark = pytest.mark.emulated

LENGTHS = {"M": (1, 5, 33), "S": (1, 37, 130), "L": (1, 33, 300)}
OBJDUMP = shutil.which("llvm-objdump")
INT8_KINDS = {"qgemm_w8a8", "qgemm_w4a8"}


@pytest.fixture(scope="module")
def hexagon(build_library):
    require_emulator("hexagon")
    library = loader.load(build_library("hexagon", coverage_specs()))
    assert library.mode == "emulated"
    yield library
    library.close()


@pytest.mark.parametrize("spec, sizes", cases(coverage_specs(), LENGTHS))
def test_hexagon_kernel_matches_numpy(hexagon, spec, sizes):
    assert_matches(hexagon[spec.name], sizes, seed=sum(sizes.values()))


def loop_ranges(library, mattr: str) -> dict[str, tuple[list[int], list[tuple[int, int]]]]:
    """symbol -> (addresses of VRMPY, (start, end) of its hardware loops and backward jumps)."""
    text = subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", f"--mattr={mattr}", str(library)],
                          capture_output=True, text=True, check=True).stdout
    out: dict[str, tuple[list, list]] = {}
    current, open_loops = None, {}
    for line in text.splitlines():
        header = re.match(r"^([0-9a-f]+) <(.+)>:$", line)
        if header:
            current, open_loops = out.setdefault(header.group(2), ([], [])), {}
            continue
        insn = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", line)
        if not insn or current is None:
            continue
        addr, body = int(insn.group(1), 16), insn.group(2)
        if "vrmpy" in body:
            current[0].append(addr)
        for level, start in re.findall(r"loop([01])\(0x([0-9a-f]+)", body):
            open_loops[level] = int(start, 16)
        for level in re.findall(r"endloop([01])", body):
            if level in open_loops:
                current[1].append((open_loops[level], addr))
        jump = re.search(r"jump(?::\w+)? 0x([0-9a-f]+)", body)
        if jump and int(jump.group(1), 16) < addr:
            current[1].append((int(jump.group(1), 16), addr))
    return out


def assert_vrmpy_in_loops(directory, target_name: str, specs):
    """Each int8 kernel whose shape fits VRMPY's 32-channel x 4-k tile (the manifest's layout says
    so; others take the portable tile) has VRMPY inside a loop of its body."""
    # VRMPY's encoding is the same in every version; Debian's LLVM 14 objdump knows HVX up to v69
    functions = loop_ranges(directory / "kernels.so", "+hvxv66,+hvx-length128b")
    manifest = loader.read_manifest(directory)["kernels"]
    specs = [s for s in specs if manifest[s.name]["layout"]["int8_dot"] == "hvx_vrmpy"]
    assert specs, "no kernel uses VRMPY"
    for spec in specs:
        for symbol, (hits, loops) in functions.items():
            if symbol.startswith(spec.name) and symbol.endswith("_compute_"):
                assert any(start <= hit <= end for hit in hits for start, end in loops), \
                    f"{symbol} on {target_name}: no vrmpy inside a loop"


@pytest.mark.skipif(OBJDUMP is None, reason="needs llvm-objdump (Debian llvm)")
def test_int8_kernels_run_vrmpy_in_loops(build_library):
    specs = [s for s in coverage_specs() if s.op in INT8_KINDS]
    assert_vrmpy_in_loops(build_library("hexagon", coverage_specs()), "hexagon", specs)


@pytest.mark.skipif(OBJDUMP is None, reason="needs llvm-objdump (Debian llvm)")
def test_newer_hexagon_versions_are_compile_only(tmp_path):
    specs = [make_spec("qgemm_w8a8", n=64, k=128), make_spec("qgemm_w4a8", n=64, k=256, group=32),
             make_spec("attention_decode", hq=4, hkv=2, d=64)]
    target = targets.get("hexagon-v73")
    out = tmp_path / "v73"
    build.build(specs, target, out, toolchain=toolchain.for_target(target), progress=lambda _: None)
    assert_vrmpy_in_loops(out, "hexagon-v73", specs[:2])
    with pytest.raises(loader.LoaderError, match="compile-only here"):
        loader.load(out)


def test_a_llama_gguf_runs_on_the_hexagon_build(tmp_path):
    """SmolLM2's first two layers (same weight types: Q4_1, Q8_0 head) on the Hexagon kernels under
    qemu-hexagon: the greedy tokens and logits of the x86 build."""
    require_emulator("hexagon")
    from gguf_variants import two_layer_greedy

    results = two_layer_greedy(tmp_path, ("x86", "hexagon"))
    assert results["hexagon"][0] == results["x86"][0]
    np.testing.assert_allclose(results["hexagon"][1], results["x86"][1], atol=1e-3, rtol=0)

"""The Hexagon build: every kernel runs under qemu-hexagon (QEMU's v67 HVX model) through the loader's
runner and matches numpy; the int8 GEMMs run VRMPY inside their loops; builds for v68+ (which QEMU
cannot execute) compile, run VRMPY and HVX qfloat inside their loops, and refuse to load with a
clear reason."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import assert_matches, coverage_specs, require_emulator
from kernel_cases import cases

import targets
from compiler import backends, build, runtime
from compiler.specs import make_spec

LENGTHS = {"M": (1, 5, 33), "S": (1, 37, 130), "L": (1, 33, 300), "prefix": ((1, 33), (5, 60))}
OBJDUMP = shutil.which("llvm-objdump")
INT8_KINDS = {"qgemm_w8a8", "qgemm_w4a8"}


@pytest.fixture(scope="module")
def hexagon(build_library):
    require_emulator("hexagon")
    library = runtime.load(build_library("hexagon", coverage_specs()))
    assert library.mode == "emulated"
    yield library
    library.close()


@pytest.mark.emulated
@pytest.mark.parametrize("spec, sizes", cases(coverage_specs(), LENGTHS))
def test_hexagon_kernel_matches_numpy(hexagon, spec, sizes):
    assert_matches(hexagon[spec.name], sizes, seed=sum(sizes.values()))


VRMPY = re.compile(r"\bvrmpy\(")
HVX_FLOAT = re.compile(r"\bv\d+(?::\d+)?\.(?:qf32|sf)\b")  # an HVX vector as qfloat or IEEE fp32 lanes


def loop_ranges(library, mattr: str, pattern) -> dict[str, tuple[list[int], list[tuple[int, int]]]]:
    """symbol -> (addresses of instructions matching `pattern`, (start, end) of its hardware loops
    and backward jumps)."""
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
        if pattern.search(body):
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


def assert_in_loops(functions, specs, what: str, target_name: str) -> None:
    """Each variant's compute function of each spec has a `what` instruction inside a loop."""
    for spec in specs:
        variants = [s for s in functions if s.startswith(spec.name) and s.endswith("_compute_")]
        assert variants, f"no compute function of {spec.name} in the library"
        for symbol in variants:
            hits, loops = functions[symbol]
            assert any(start <= hit <= end for hit in hits for start, end in loops), \
                f"{symbol} on {target_name}: no {what} inside a loop"


def vrmpy_specs(directory, specs):
    """The int8 kernels whose shape fits VRMPY's 32-channel x 4-k tile (the manifest's layout says
    so; others take the portable tile)."""
    manifest = runtime.read_manifest(directory)["kernels"]
    chosen = [s for s in specs if manifest[s.name]["layout"]["int8_dot"] == "hvx_vrmpy"]
    assert chosen, "no kernel uses VRMPY"
    return chosen


# VRMPY's encoding is the same in every version; Debian's LLVM 14 objdump knows HVX up to v69
V66_FEATURES = "+hvxv66,+hvx-length128b"
QFLOAT_FEATURES = "+hvxv69,+hvx-length128b,+hvx-qfloat"


@pytest.mark.compile
@pytest.mark.skipif(OBJDUMP is None, reason="needs llvm-objdump (Debian llvm)")
def test_int8_kernels_run_vrmpy_in_loops(build_library):
    directory = build_library("hexagon", coverage_specs())
    specs = vrmpy_specs(directory, [s for s in coverage_specs() if s.op in INT8_KINDS])
    assert_in_loops(loop_ranges(directory / "kernels.so", V66_FEATURES, VRMPY), specs, "vrmpy", "hexagon")


V68_INT8 = [make_spec("qgemm_w8a8", n=64, k=128), make_spec("qgemm_w4a8", n=64, k=256, group=32)]
V68_FLOAT = [make_spec("qgemm_w4a16", n=64, k=128, group=32, min=True), make_spec("qgemm_w8a16", n=32, k=64, group=32),
             make_spec("qkv_proj", hq=2, hkv=2, d=64, k=64, quant="w4a16", group=32, bias=True),
             make_spec("attention_prefill", hq=4, hkv=4, d=64), make_spec("attention_decode", hq=4, hkv=2, d=64)]


@pytest.mark.compile
@pytest.mark.skipif(OBJDUMP is None, reason="needs llvm-objdump (Debian llvm)")
@pytest.mark.parametrize("name, int8, floats", [
    ("hexagon-v68", V68_INT8, V68_FLOAT),
    # LLVM takes minutes over v73's float GEMMs: one of each kind keeps the test short
    ("hexagon-v73", V68_INT8[:1], V68_FLOAT[-1:]),
])
def test_newer_hexagon_versions_are_compile_only(tmp_path, name, int8, floats):
    """v68+ builds: int8 GEMMs run VRMPY and the float kernels (float-activation GEMMs, the fused
    QKV's RoPE, attention) HVX qfloat, inside their loops; loading says why they cannot run here."""
    target = targets.get(name)
    out = tmp_path / name
    build.build(int8 + floats, target, out, toolchain=backends.toolchain_for(target), progress=lambda _: None)
    library = out / "kernels.so"
    assert_in_loops(loop_ranges(library, V66_FEATURES, VRMPY), vrmpy_specs(out, int8), "vrmpy", name)
    assert_in_loops(loop_ranges(library, QFLOAT_FEATURES, HVX_FLOAT), floats, "HVX float", name)
    with pytest.raises(runtime.LoaderError, match="compile-only here"):
        runtime.load(out)


@pytest.mark.emulated
def test_a_library_whose_kernels_need_no_workspace_links_and_runs(tmp_path):
    """TVM defines its workspace hooks in the kernels' object only when a kernel uses them: the
    runner links without them (a W8A16 GEMM alone allocates nothing)."""
    require_emulator("hexagon")
    spec = make_spec("qgemm_w8a16", n=32, k=64, group=32)
    target = targets.get("hexagon")
    build.build([spec], target, tmp_path, toolchain=backends.toolchain_for(target), progress=lambda _: None)
    with runtime.load(tmp_path) as library:
        assert_matches(library[spec.name], {"M": 3}, seed=3)


@pytest.mark.emulated
def test_a_llama_gguf_runs_on_the_hexagon_build(tmp_path):
    """SmolLM2's first two layers (same weight types: Q4_1, Q8_0 head) on the Hexagon kernels under
    qemu-hexagon: the greedy tokens and logits of the x86 build."""
    require_emulator("hexagon")
    from gguf_variants import two_layer_greedy

    results = two_layer_greedy(tmp_path, ("x86", "hexagon"))
    assert results["hexagon"][0] == results["x86"][0]
    np.testing.assert_allclose(results["hexagon"][1], results["x86"][1], atol=1e-3, rtol=0)

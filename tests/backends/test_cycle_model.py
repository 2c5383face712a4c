"""The ARM cycle model's instruments: the block-counting plugin counts exactly, the model of a
library is deterministic, and only the pinned llvm-mca is used."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_cycle_model

import targets
from compiler import backends, build, runtime
from compiler.backends.native.cycle_model import mca, model_kernel
from compiler.backends.native.cycle_model.counts import program_blocks
from compiler.backends.native.cycle_model.plugin import plugin_path
from compiler.specs import make_spec

LOOP = "int main(int argc, char **argv) { volatile long s = 0; long n = 0; for (char *c = argv[1]; *c; c++) n = 10 * n + *c - '0'; for (long i = 0; i < n; i++) s += i; return (int)(s & 1); }\n"


def _counts(program: Path, trips: int, out: Path) -> list[tuple[int, int, int]]:
    subprocess.run(["qemu-aarch64", "-plugin", f"{plugin_path('qemu-aarch64')},out={out}", str(program), str(trips)],
                   check=False, timeout=120)
    return [(int(s, 16), int(n), int(c)) for s, _, n, c in (line.split() for line in out.read_text().splitlines())]


@pytest.mark.emulated
def test_the_plugin_counts_a_known_loop_exactly(tmp_path):
    """Independent count: the loop's trip count comes from argv, so between two runs the loop's
    block must run exactly the difference more often, and nothing else may change."""
    require_cycle_model()
    source, program = tmp_path / "loop.c", tmp_path / "loop"
    source.write_text(LOOP)
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-musl", "-O1", "-static",
                    str(source), "-o", str(program)], check=True, timeout=300)
    short, long = _counts(program, 1000, tmp_path / "a.txt"), _counts(program, 1777, tmp_path / "b.txt")
    before = {start: (n, c) for start, n, c in short}
    grown = [(start, n, c - before[start][1]) for start, n, c in long if start in before and c != before[start][1]]
    assert [delta for _, _, delta in grown] == [777], grown  # only the loop body's block, by the difference
    assert sum(n * c for _, n, c in long) - sum(n * c for _, n, c in short) == 777 * grown[0][1]


@pytest.mark.emulated
def test_one_call_of_a_program_is_the_difference_of_two_runs(tmp_path):
    """How llama.cpp's GEMV is counted: the loop runs 1000 x `calls` times, so one "call" is
    exactly 1000 runs of its block, whatever the program does around it."""
    require_cycle_model()
    source, program = tmp_path / "loop.c", tmp_path / "loop"
    source.write_text(LOOP)
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-musl", "-O1", "-static",
                    str(source), "-o", str(program)], check=True, timeout=300)
    blocks = program_blocks(program, lambda calls: [str(1000 * calls)])
    assert max(b.executions for b in blocks) == 1000
    assert all(b.executions <= 1000 for b in blocks)


@pytest.mark.emulated
def test_counted_runs_have_the_modelled_cores_sve_vectors(tmp_path):
    """A counted run sees 16-byte SVE vectors (cortex-a710's), not qemu-user's default 64: a
    vector-length-agnostic loop would otherwise run a quarter of its iterations. The program loops
    the vector length in bytes (prctl PR_SVE_GET_VL) times per call."""
    require_cycle_model()
    source, program = tmp_path / "vl.c", tmp_path / "vl"
    source.write_text("#include <sys/prctl.h>\nint main(int argc, char **argv) { volatile long s = 0; "
                      "long calls = argv[1][0] - '0', vl = prctl(51) & 0xffff; "
                      "for (long i = 0; i < calls * vl; i++) s += i; return (int)(s & 1); }\n")
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-musl", "-O1", "-static",
                    str(source), "-o", str(program)], check=True, timeout=300)
    blocks = program_blocks(program, lambda calls: [str(calls)])
    assert max(b.executions for b in blocks) == 16


@pytest.mark.emulated
def test_the_model_of_a_library_is_deterministic(tmp_path):
    require_cycle_model()
    target = targets.get("arm")
    spec = make_spec("qgemm_w8a8", n=64, k=256)
    build.build([spec], target, tmp_path, toolchain=backends.toolchain_for(target), progress=lambda _: None)
    manifest = runtime.read_manifest(tmp_path)
    core = targets.core("cortex-a76")
    first, second = (model_kernel(tmp_path, manifest, spec.name, {"M": 1}, core) for _ in range(2))
    assert first == second
    assert first.instructions > 0 and first.cycles > 0 and 0 < first.peak_share <= 1
    assert first.variant == f"{spec.name}__m1"
    # the in-order A55 needs more cycles than the A76 for the same instructions
    slow = model_kernel(tmp_path, manifest, spec.name, {"M": 1}, targets.core("cortex-a55"))
    assert slow.instructions == first.instructions and slow.cycles > first.cycles


@pytest.mark.unit
def test_only_the_pinned_llvm_mca_is_used(tmp_path, monkeypatch):
    fake = tmp_path / mca.LLVM_MCA
    fake.write_text("#!/bin/sh\necho 'LLVM (http://llvm.org/):'\necho '  LLVM version 18.1.8'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert shutil.which(mca.LLVM_MCA) == str(fake)
    with pytest.raises(mca.ModelError, match="pinned to 19.1.7"):
        mca.check_version()


@pytest.mark.unit
def test_objdump_lines_become_llvm_mca_assembly():
    assert mca.assembly("b.ne", "1568c <f+0x10c>  // b.any") == "b.ne\ttarget"
    assert mca.assembly("tbz", "w0, #3, 1234 <f+0x8>") == "tbz\tw0, #3, target"
    assert mca.assembly("sdot", "v1.4s, v25.16b, v26.16b") == "sdot\tv1.4s, v25.16b, v26.16b"
    assert mca.assembly("ldr", "q26, [x3, #19456]") == "ldr\tq26, [x3, #19456]"
    assert mca.assembly("mov", "w13, #0xc000                \t// #49152") == "mov\tw13, #0xc000"
    assert mca.assembly("ret", "") == "ret"
    assert mca.assembly("bl", "15970 <__extendhfsf2>") == "b\ttarget"  # a call costs as a branch


@pytest.mark.emulated
def test_a_block_ending_in_movprfx_is_modelled():
    """An SVE MOVPRFX that qemu's translated block ends on (a page boundary splits the pair) must not
    prefix the next region's first instruction: llvm-mca refuses that ("unpredictable"); arm-i8mm's
    cortex-a710 builds use SVE."""
    require_cycle_model()
    cycles = mca.cycles_per_run({"a": ["add\tx0, x0, #1", "movprfx\tz0, z1"],
                                 "b": ["add\tx22, sp, #0x440", "add\tx1, x1, #1"]}, "neoverse-n2")
    assert set(cycles) == {"a", "b"} and all(c > 0 for c in cycles.values())


@pytest.mark.unit
def test_the_modelled_chart_draws_kernels_and_the_model_row(tmp_path):
    """bench --core --plot: one bar per kernel variant and core, one per contestant and step."""
    from compiler.benchmarks import plots

    def kernel(variant, core, share):
        return {"variant": variant, "sizes": {"M": 1}, "core": core, "peak_share": share}

    def step(contestant, phase, core, rate):
        return {"contestant": contestant, "phase": phase, "core": core, "tokens_per_s": rate}

    result = {"target": "arm", "method": "qemu-aarch64 block counts x llvm-mca", "cores": {"cortex-a76": {}, "cortex-a55": {}},
              "rows": [kernel("gemv_a", "cortex-a76", 0.8), kernel("gemv_a", "cortex-a55", 0.2),
                       kernel("gemv_b", "cortex-a76", 0.3)],
              "model_row": {"gguf": "m.gguf", "prompt_tokens": 128,
                            "rows": [step("ours q8", "decode", "cortex-a76", 120.0), step("llama.cpp", "decode", "cortex-a76", 60.0),
                                     step("ours q8", "prefill", "cortex-a55", 40.0)]}}
    chart = plots.modelled_chart(result, tmp_path / "chart.png")
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    del result["model_row"]  # kernels only
    assert plots.modelled_chart(result, tmp_path / "kernels.png").stat().st_size > 5_000

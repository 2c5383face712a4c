"""The command line: the main job end to end, and clear errors (message + non-zero exit) for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_matches, coverage_specs, require_emulator

from compiler import models, runtime


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "compiler", *args], capture_output=True, text=True, timeout=900,
                          cwd=cwd)


@pytest.mark.unit
def test_list_names_targets_presets_and_ops():
    proc = run("list")
    assert proc.returncode == 0
    for word in ("arm", "arm-a53", "arm-i8mm", "x86", "qwen2.5-0.5b", "llama-3.2-1b", "mistral-7b", "attention_decode"):
        assert word in proc.stdout


@pytest.mark.unit
@pytest.mark.parametrize("args, message", [
    (["build", "--target", "nope"], "unknown target 'nope'"),
    (["build", "--target", "arm", "--model", "nope"], "unknown model preset 'nope'"),
    (["build", "--target", "arm", "--ops", "nope"], "unknown op 'nope'"),
    (["build", "--target", "arm", "--quant", "w3a3"], "unknown quantized form"),
    (["build", "--target", "arm", "--cc", "/nonexistent/aarch64-gcc"], "compiler '/nonexistent/aarch64-gcc' not found"),
    (["build", "--target", "arm", "--ndk", "/nonexistent/ndk"], "no NDK clang"),
    (["build", "--target", "arm", "--config", "/nonexistent.json"], "does not exist"),
    (["verify", "/nonexistent/dir"], "no manifest.json"),
    (["setup-emulator", "--isa", "mips"], "no emulated userland recipe"),
    (["verify", "/nonexistent/dir", "--size", "0"], "--size must be a length of at least 1"),
    (["run", "--target", "hexagon-v68", "--prompt", "hi"], "hexagon-v68 builds are compile-only here"),
    (["build", "--target", "x86", "--ops", ","], "names nothing"),
    (["tune", "--target", "x86", "--ops", "attention_decode", "--trials", "2", "--plot", "curves.xyz"],
     "--plot curves.xyz: give a file name ending in one of"),
])
def test_bad_input_is_a_clear_error(args, message):
    proc = run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.unit
def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`python -m compiler ... | head`: the closed pipe ends the command (141, as a shell tool's
    SIGPIPE), with no traceback."""
    proc = subprocess.run(f"{sys.executable} -m compiler list | head -c 5", shell=True, capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout == "targe" and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.unit
def test_output_files_are_checked_before_the_work(tmp_path):
    """--json / --record: a folder is refused at once; missing folders above the file are made."""
    from compiler import selection

    with pytest.raises(ValueError, match="--json .* is a folder"):
        selection.output_file(str(tmp_path), "--json")
    made = selection.output_file(str(tmp_path / "new" / "deeper" / "rows.json"), "--json")
    assert made.parent.is_dir() and not made.exists()
    proc = run("tune", "--target", "x86", "--ops", "attention_decode", "--trials", "2", "--record", str(tmp_path),
               "--tuning-logs", str(tmp_path / "logs"))
    assert proc.returncode == 2 and "is a folder" in proc.stderr, proc.stderr
    assert not (tmp_path / "logs").exists()


@pytest.mark.unit
def test_text_that_is_not_unicode_reaches_the_tokenizer_replaced():
    """Bytes that were not UTF-8 come from argv or a pipe as lone surrogates (surrogateescape); the
    tokenizer library refuses those, so they become U+FFFD instead of ending a chat."""
    from compiler.llm.tokenizer import valid_unicode

    assert valid_unicode(b"abc\xff\xfe d\xc3\xa9f".decode("utf-8", "surrogateescape")) == "abc\ufffd\ufffd d\u00e9f"
    assert valid_unicode("lone \ud800 surrogate") == "lone ? surrogate"
    assert valid_unicode("plain \u00e9") == "plain \u00e9"


@pytest.mark.unit
def test_bad_config_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{ hidden: ")
    proc = run("build", "--target", "x86", "--config", str(broken))
    assert proc.returncode == 2 and "is not valid JSON" in proc.stderr
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"hidden": 64, "heads": 2, "kv_heads": 1, "head_dim": 32, "ffn": 128, "depth": 2}))
    proc = run("build", "--target", "x86", "--config", str(odd))
    assert proc.returncode == 2 and "unknown field(s) ['depth']" in proc.stderr
    indivisible = tmp_path / "indivisible.json"
    indivisible.write_text(json.dumps({"hidden": 96, "heads": 3, "kv_heads": 2, "head_dim": 32, "ffn": 128}))
    proc = run("build", "--target", "x86", "--config", str(indivisible))
    assert proc.returncode == 2 and "hq=3 must be a multiple of 2" in proc.stderr


@pytest.mark.unit
def test_config_without_group_picks_one_that_divides(tmp_path):
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"hidden": 576, "heads": 9, "kv_heads": 3, "head_dim": 64, "ffn": 1536}))
    assert models.from_config(config).group == 64  # 576 is not a multiple of 128


@pytest.mark.unit
def test_hugging_face_config_is_understood(tmp_path):
    hf = {"model_type": "qwen2", "hidden_size": 896, "num_attention_heads": 14, "num_key_value_heads": 2,
          "intermediate_size": 4864, "rope_theta": 1000000.0, "vocab_size": 151936, "torch_dtype": "bfloat16"}
    config = tmp_path / "config.json"
    config.write_text(json.dumps(hf))
    shape = models.from_config(config)
    assert (shape.hidden, shape.heads, shape.kv_heads, shape.head_dim, shape.ffn) == (896, 14, 2, 64, 4864)
    assert shape.qkv_bias and shape.rope_theta == 1e6 and shape.group == 128
    assert {s.name for s in models.kernel_specs(shape)} == {
        s.name for s in models.kernel_specs(models.preset("qwen2.5-0.5b"))}


@pytest.mark.e2e
def test_build_from_config_and_verify(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text('hidden = 128\nheads = 4\nkv_heads = 2\nhead_dim = 32\nffn = 192\ngroup = 32\nqkv_bias = true\n')
    out = tmp_path / "out"
    proc = run("build", "--target", "x86", "--config", str(config), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "[1/" in proc.stdout  # progress
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["name"] == "tiny" and manifest["schema_version"] == 2
    for entry in manifest["kernels"].values():
        assert all(v["tuning"] == "default" for v in entry["variants"])
        assert any(isinstance(d, str) for a in entry["args"] for d in a["shape"])  # symbolic dims named
    proc = run("verify", str(out), "--size", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all kernels match numpy" in proc.stdout


@pytest.mark.emulated
def test_default_arm_build_runs_under_emulation(tmp_path):
    """The README's main job: `build --target arm` on the default preset, then the loader runs it."""
    out = tmp_path / "arm"
    proc = run("build", "--target", "arm", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    expected = {s.name for s in models.kernel_specs(models.preset(models.DEFAULT_PRESET))}
    require_emulator("aarch64")
    with runtime.load(out) as lib:
        assert set(lib.kernels) == expected and lib.mode == "emulated"
        for name in lib.kernels:
            if name.startswith(("qkv_proj_w8a8", "qgemm_w4a16", "attention_decode", "quantize")):
                sizes = {"L": 130} if name.startswith("attention") else {"M": 2}
                assert_matches(lib[name], sizes)


@pytest.mark.native
def test_verify_reports_a_wrong_kernel(build_library, tmp_path, monkeypatch):
    """`verify` must be able to fail: with a corrupted reference the same kernels mismatch."""
    from compiler.ops import qgemm_int

    monkeypatch.setattr(qgemm_int, "int_gemm_reference", lambda *a, **k: np.zeros((1, 1)) + 1e9)
    from compiler import verify

    with runtime.load(build_library("x86", coverage_specs())) as lib:
        checks = verify.check_kernel(lib["qgemm_w8a8_n64_k128"], {"M": 2}, np.random.default_rng(0))
    assert not any(c.ok for c in checks)


@pytest.mark.e2e
def test_bench_quick_writes_well_formed_json(tmp_path):
    """Not a speed test: bench must run side by side with its contenders and write every row."""
    config = tmp_path / "tiny.toml"
    config.write_text('hidden = 128\nheads = 4\nkv_heads = 2\nhead_dim = 32\nffn = 192\ngroup = 32\nlayers = 2\n')
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    proc = run("bench", "--target", "x86", "--config", str(config), "--quick", "--no-tuning", "--quant", "w8a8",
               "--json", str(out), "--plot", str(chart))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["machine"]["memory_bandwidth_gbs"] > 0 and result["target"] == "x86"
    assert chart.read_bytes().startswith(b"\x89PNG")
    qkv = [r["contestant"] for r in result["rows"] if r["kernel"].startswith("qkv_proj")]
    assert "ours: 3 separate GEMMs + RoPE" in qkv  # the fused kernel races its unfused form
    assert any(g["goal"].startswith("fused QKV") for g in result["goals"])
    (estimate,) = result["model_estimates"]  # w8a8 only; --quick has no prefill chunk, so decode only
    assert estimate["quant"] == "w8a8" and estimate["decode_tokens_per_s"] > 0
    kernels = {r["kernel"] for r in result["rows"]}
    assert any(k.startswith("qgemm_w8a8") for k in kernels) and any(k.startswith("attention") for k in kernels)
    for kernel in kernels:  # each of our kernels ran alongside at least one contender
        contestants = [r["contestant"] for r in result["rows"] if r["kernel"] == kernel]
        assert "ours" in contestants and len(contestants) >= 2
    for row in result["rows"]:
        assert row["median_ms"] > 0 and row["min_ms"] <= row["median_ms"] <= row["max_ms"]

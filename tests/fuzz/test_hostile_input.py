"""The fuzz corpus: hostile configs, GGUFs, manifests, tuning databases and command lines, each a
line of data (name, builder, expectation), all generated in tmp_path. Every case must end in a
clear error (a ValueError or LoaderError whose message is one line and matches the expectation) or
a right answer (the expectation is then a check of the result); any other exception is a bug.

Cases that still fail in code this corpus may not change are listed in KNOWN with the reason: they
run as non-strict xfails, so the corpus shows them and says when they are fixed."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from hostile_files import DROP, HIDDEN, VOCAB, write_gguf, write_json, write_text

from compiler import cli, models, runtime
from compiler.llm import model_kernels
from compiler.llm.gguf import GGUFModel
from compiler.llm.tokenizer import GGUFTokenizer

pytestmark = pytest.mark.unit

CLEAR = (ValueError, runtime.LoaderError)  # GGUFError is a ValueError; the CLI prints these as one line

KNOWN: dict = {}  # case -> (why it still fails, the exception it raises): none today


def ends_clearly(action, expect):
    """Run `action`: with a check (callable) it must succeed and pass it; with a pattern it must
    raise one of CLEAR with a one-line message matching it."""
    if callable(expect):
        result = action()
        assert expect(result), f"wrong answer: {result!r:.300}"
        return
    with pytest.raises(CLEAR) as info:
        action()
    message = str(info.value)
    assert "\n" not in message, f"a multi-line message: {message!r}"
    assert re.search(expect, message), f"{message!r} does not say {expect!r}"


def cases(table):
    """pytest params of a corpus table, ids from its names, KNOWN failures as xfails."""
    def marks(name):
        if name not in KNOWN:
            return []
        reason, raises = KNOWN[name]
        return [pytest.mark.xfail(reason=reason, raises=raises)]

    return [pytest.param(*row, id=row[0], marks=marks(row[0])) for row in table]


# --- configs (--config): models.from_config, then the kernel specs a build would make ------------------

BASE = {"hidden": 128, "heads": 4, "kv_heads": 2, "head_dim": 32, "ffn": 192}
HF = {"hidden_size": 896, "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864}

CONFIGS = [  # (name, file name, content: text, bytes or a JSON value, expectation)
    ("valid-json", "tiny.json", BASE, lambda s: (s.hidden, s.group, s.name) == (128, 64, "tiny")),
    ("valid-toml", "tiny.toml", "hidden = 128\nheads = 4\nkv_heads = 2\nhead_dim = 32\nffn = 192\n",
     lambda s: s.kv_heads == 2),
    ("valid-hf", "config.json", HF, lambda s: (s.head_dim, s.kv_heads) == (64, 2)),
    ("json-number", "c.json", "5", r"must hold a table of fields \(a JSON object\), not a number"),
    ("json-list", "c.json", [1, 2], r"not a list"),
    ("json-null", "c.json", "null", r"not a null"),
    ("json-string", "c.json", '"hidden"', r"not a string"),
    ("json-empty", "c.json", "", r"is not valid JSON"),
    ("json-truncated", "c.json", '{"hidden": 12', r"is not valid JSON"),
    ("json-not-utf8", "c.json", b'{"hidden": "\xff\xfe"}', r"is not valid JSON.*utf-8"),
    ("toml-not-utf8", "c.toml", b"hidden = 128\n\xff", r"is not valid TOML"),
    ("toml-broken", "c.toml", "hidden = = 128", r"is not valid TOML"),
    ("toml-string-dim", "c.toml", 'hidden = "128"\nheads = 4\nkv_heads = 2\nhead_dim = 32\nffn = 192\n',
     r"field 'hidden' must be a positive integer .*got '128'"),
    ("zero-heads", "c.json", {**BASE, "heads": 0}, r"field 'heads' must be a positive integer.*got 0"),
    ("negative-ffn", "c.json", {**BASE, "ffn": -192}, r"field 'ffn' must be a positive integer.*got -192"),
    ("float-dim", "c.json", {**BASE, "hidden": 128.5}, r"field 'hidden' .*got 128.5"),
    ("bool-dim", "c.json", {**BASE, "heads": True}, r"field 'heads' .*got True"),
    ("null-dim", "c.json", {**BASE, "head_dim": None}, r"field 'head_dim' .*got None"),
    ("list-dim", "c.json", {**BASE, "ffn": [192]}, r"field 'ffn' .*got \[192\]"),
    ("huge-dim", "c.json", {**BASE, "hidden": 10**12}, r"field 'hidden' must be a positive integer of at most"),
    ("huge-int-literal", "c.json", '{"hidden": 1' + "0" * 5000 + "}", r"not valid JSON|field 'hidden'"),
    ("missing-ffn", "c.json", {k: v for k, v in BASE.items() if k != "ffn"}, r"missing field\(s\) \['ffn'\]"),
    ("unknown-field", "c.json", {**BASE, "depth": 2}, r"unknown field\(s\) \['depth'\]"),
    ("nan-theta", "c.json", '{"hidden": 128, "heads": 4, "kv_heads": 2, "head_dim": 32, "ffn": 192, '
     '"rope_theta": NaN}', r"field 'rope_theta' must be a positive finite number, got nan"),
    ("negative-theta", "c.json", {**BASE, "rope_theta": -1.0}, r"field 'rope_theta' .*got -1.0"),
    ("string-bias", "c.json", {**BASE, "qkv_bias": "yes"}, r"field 'qkv_bias' must be true or false"),
    ("number-name", "c.json", {**BASE, "name": 5}, r"field 'name' must be a string"),
    ("odd-group", "c.json", {**BASE, "group": 48}, r"option 'group' must be one of \[32, 64, 128\], got 48"),
    ("kv-not-dividing", "c.json", {**BASE, "kv_heads": 3}, r"hq=4 must be a multiple of 3"),
    ("negative-layers", "c.json", {**BASE, "layers": -1}, r"field 'layers' must be a non-negative integer"),
    ("hf-zero-heads", "config.json", {**HF, "num_attention_heads": 0},
     r"'num_attention_heads' must be a positive integer, got 0"),
    ("hf-string-hidden", "config.json", {**HF, "hidden_size": "896"}, r"'hidden_size' must be a positive integer"),
    ("hf-missing-ffn", "config.json", {k: v for k, v in HF.items() if k != "intermediate_size"},
     r"lacks 'intermediate_size'"),
    ("hf-indivisible", "config.json", {**HF, "num_attention_heads": 13}, r"hidden_size 896 is not a multiple of"),
    ("hf-null-layers", "config.json", {**HF, "num_hidden_layers": None}, r"field 'layers'"),
    ("hf-odd-name", "config.json", {**HF, "_name_or_path": 7}, lambda s: s.name == "config"),
    ("hf-string-theta", "config.json", {**HF, "rope_theta": "1e6"}, r"field 'rope_theta' .*got '1e6'"),
]


@pytest.mark.parametrize("name, filename, content, expect", cases(CONFIGS))
def test_hostile_configs(tmp_path, name, filename, content, expect):
    path = tmp_path / filename
    write_text(path, content) if isinstance(content, (str, bytes)) else write_json(path, content)

    def read():
        shape = models.from_config(path)
        models.kernel_specs(shape)
        return shape

    ends_clearly(read, expect)


# --- GGUF files: everything `run` reads before it builds, and the weights it packs after --------------

def read_gguf(path):
    """What `run` does with a GGUF short of building: shape, kernel specs, every weight in logical
    form, the tokenizer, a chat prompt encoded, its embedding rows. Returns (model, tokenizer, ids)."""
    model = GGUFModel(path)
    model_kernels.kernel_specs(model)
    for layer in range(model.shape.layers):
        for role in model_kernels.layer_parts(model, layer):
            model_kernels.logical_weights(model, role, layer)
    model_kernels.logical_weights(model, "head", None)
    tokenizer = GGUFTokenizer(model)
    ids = tokenizer.encode(tokenizer.chat_prompt("hi there"))
    model.embedding_rows(ids)
    return model, tokenizer, ids


def _reads_right(result) -> bool:
    model, tokenizer, ids = result
    return (model.shape.hidden, model.vocab_size) == (HIDDEN, VOCAB) and abs(model.rms_eps - 1e-5) < 1e-12 and \
        tokenizer.decode(ids).endswith("<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n")


def meta(key, value):
    return lambda p: write_gguf(p, meta={key: value})


def tensor(name, shape, kind="Q8_0"):
    return lambda p: write_gguf(p, tensors={name: DROP if shape is DROP else (shape, kind)})


def raw(content: bytes):
    return lambda p: write_text(p, content)


GGUFS = [  # (name, builder(path) -> path, expectation)
    ("valid", write_gguf, _reads_right),
    ("valid-untied-head", tensor("output.weight", (VOCAB, HIDDEN), "Q4_0"), _reads_right),
    ("empty-file", raw(b""), r"is not a readable GGUF file"),
    ("not-a-gguf", raw(b"GGML" + bytes(range(256)) * 4), r"is not a readable GGUF file"),
    ("header-only", lambda p: write_gguf(p, truncate=24), r"is not a readable GGUF file"),
    ("cut-in-metadata", lambda p: write_gguf(p, truncate=400), r"is not a readable GGUF file"),
    ("cut-in-tensors", lambda p: write_gguf(p, truncate=3000), r"is not a readable GGUF file"),
    ("cut-last-byte", lambda p: write_gguf(p.with_suffix(".full")) and
     write_text(p, p.with_suffix(".full").read_bytes()[:-1]), r"is not a readable GGUF file"),
    ("other-architecture", lambda p: write_gguf(p, arch="gpt2"), r"architecture 'gpt2' is not supported"),
    ("no-embedding-length", meta("llama.embedding_length", DROP), r"llama.embedding_length'? is missing"),
    ("no-block-count", meta("llama.block_count", DROP), r"llama.block_count'? is missing"),
    ("no-ffn", meta("llama.feed_forward_length", DROP), r"llama.feed_forward_length'? is missing"),
    ("zero-heads", meta("llama.attention.head_count", 0), r"llama.attention.head_count must be a positive .*got 0"),
    ("zero-blocks", meta("llama.block_count", 0), r"llama.block_count must be a positive integer.*got 0"),
    ("zero-kv-heads", meta("llama.attention.head_count_kv", 0), r"head_count_kv must be a positive .*got 0"),
    ("zero-embedding", meta("llama.embedding_length", 0), r"llama.embedding_length must be a positive .*got 0"),
    ("zero-ffn", meta("llama.feed_forward_length", 0), r"llama.feed_forward_length must be a positive .*got 0"),
    ("negative-heads", meta("llama.attention.head_count", -2), r"head_count must be a positive integer.*got -2"),
    ("huge-block-count", meta("llama.block_count", 10**9), r"llama.block_count must be .*at most"),
    ("more-blocks-than-tensors", meta("llama.block_count", 3), r"tensor 'blk.1.attn_norm.weight' is missing"),
    ("string-heads", meta("llama.attention.head_count", "2"), r"head_count must be a positive integer.*got '2'"),
    ("array-heads", meta("llama.attention.head_count", [2, 2]), r"head_count must be a positive .*got \[2, 2\]"),
    ("float-heads", meta("llama.attention.head_count", 2.0), r"head_count must be a positive integer.*got 2.0"),
    ("kv-not-dividing", meta("llama.attention.head_count_kv", 3), r"head_count_kv 3 does not divide .*head_count 2"),
    ("wrong-embedding-length", meta("llama.embedding_length", 96),
     r"token_embd.weight has shape \[64, 70\], but llama.embedding_length makes it \[96, \*\]"),
    ("embedding-not-multiple", lambda p: write_gguf(p, meta={"llama.embedding_length": 63},
                                                    tensors={"token_embd.weight": ((VOCAB, 63), "F32")}),
     r"llama.embedding_length 63 is not a multiple of llama.attention.head_count 2"),
    ("zero-epsilon", meta("llama.attention.layer_norm_rms_epsilon", 0.0),
     r"layer_norm_rms_epsilon must be a positive number, got 0.0"),
    ("negative-epsilon", meta("llama.attention.layer_norm_rms_epsilon", -1e-5), r"epsilon must be a positive"),
    ("nan-epsilon", meta("llama.attention.layer_norm_rms_epsilon", float("nan")), r"epsilon .*got nan"),
    ("string-epsilon", meta("llama.attention.layer_norm_rms_epsilon", "1e-5"), r"epsilon .*got '1e-5'"),
    ("zero-rope-theta", meta("llama.rope.freq_base", 0.0), r"llama.rope.freq_base must be a positive number"),
    ("inf-rope-theta", meta("llama.rope.freq_base", float("inf")), r"llama.rope.freq_base .*got inf"),
    ("partial-rope", meta("llama.rope.dimension_count", 16), r"RoPE over 16 of 32 head dimensions"),
    ("odd-key-length", meta("llama.attention.key_length", 31), r"31 key and 31 value dimensions are not supported"),
    ("value-length-differs", meta("llama.attention.value_length", 16), r"32 key and 16 value dimensions"),
    ("no-token-embedding", tensor("token_embd.weight", DROP), r"tensor 'token_embd.weight' is missing"),
    ("no-down-projection", tensor("blk.0.ffn_down.weight", DROP), r"tensor 'blk.0.ffn_down.weight' is missing"),
    ("no-output-norm", tensor("output_norm.weight", DROP), r"tensor 'output_norm.weight' is missing"),
    ("q-wrong-rows", tensor("blk.0.attn_q.weight", (32, HIDDEN)),
     r"blk.0.attn_q.weight has shape \[64, 32\], but the metadata makes it \[64, 64\]"),
    ("ffn-wrong-width", tensor("blk.0.ffn_up.weight", (96, HIDDEN), "Q4_1"), r"blk.0.ffn_up.weight has shape"),
    ("untied-head-wrong-vocab", tensor("output.weight", (32, HIDDEN)), r"output.weight has shape \[64, 32\]"),
    ("norm-2d", tensor("blk.0.ffn_norm.weight", (1, HIDDEN)), r"blk.0.ffn_norm.weight has shape \[64, 1\]"),
    ("norm-quantized", tensor("blk.0.attn_norm.weight", (HIDDEN,)), r"blk.0.attn_norm.weight is Q8_0, expected"),
    ("norm-f16", tensor("output_norm.weight", (HIDDEN,), "F16"), _reads_right),
    ("weight-f32", tensor("blk.0.attn_output.weight", (HIDDEN, HIDDEN), "F32"), r"weight type F32 has no kernel"),
    ("weight-q5_0", tensor("blk.0.ffn_down.weight", (HIDDEN, 64), "Q5_0"), _reads_right),
    ("weight-iq4_nl", tensor("blk.0.ffn_down.weight", (HIDDEN, 64), "IQ4_NL"),
     r"IQ4_NL.*supported: Q4_0, Q4_1, Q8_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"),
    ("v-own-type", tensor("blk.0.attn_v.weight", (32, HIDDEN), "Q4_0"), _reads_right),  # V apart from Q, K
    ("q-k-types-differ", tensor("blk.0.attn_k.weight", (32, HIDDEN), "Q4_0"),
     r"blk.0.attn_q is Q8_0 but blk.0.attn_k is Q4_0"),
    ("gate-up-types-differ", tensor("blk.0.ffn_up.weight", (64, HIDDEN), "Q8_0"),
     r"fuses ffn_gate, ffn_up into one GEMM but their types differ"),
    ("bias-on-q-only", tensor("blk.0.attn_q.bias", (HIDDEN,), "F32"), r"tensor 'blk.0.attn_k.bias' is missing"),
    ("tokens-fewer-than-rows", meta("tokenizer.ggml.tokens", ["a", "b"]),
     r"tokenizer.ggml.tokens has 2 tokens but token_embd.weight has 70 rows"),
    ("tokens-not-strings", meta("tokenizer.ggml.tokens", list(range(VOCAB))), r"tokens must be a list of strings"),
    ("token-types-short", meta("tokenizer.ggml.token_type", [1, 1]), r"token_type must hold one integer per token"),
    ("merges-not-pairs", meta("tokenizer.ggml.merges", ["hi"]), r"merges must be a list of 'left right' pairs"),
    ("eos-out-of-range", meta("tokenizer.ggml.eos_token_id", 10**6), r"eos_token_id must be a token id in \[0, 70\)"),
    ("bos-a-string", meta("tokenizer.ggml.bos_token_id", "1"), r"bos_token_id must be a token id"),
    ("no-tokenizer-model", meta("tokenizer.ggml.model", DROP), r"tokenizer.ggml.model'? is missing"),
    ("sentencepiece-tokenizer", meta("tokenizer.ggml.model", "llama"), r"tokenizer model 'llama' is not supported"),
    ("unknown-pre-tokenizer", meta("tokenizer.ggml.pre", "klingon"), r"pre-tokenizer 'klingon' is not supported"),
    ("no-chat-template", meta("tokenizer.chat_template", DROP), r"has no tokenizer.chat_template"),
    ("template-syntax-error", meta("tokenizer.chat_template", "{% for m in messages %}{{ m"),
     r"chat template \(tokenizer.chat_template\) failed"),
    ("template-unclosed-block", meta("tokenizer.chat_template", "{% if add_generation_prompt %}x"),
     r"chat template .*failed"),
    ("template-divides-by-zero", meta("tokenizer.chat_template", "{{ 1 / 0 }}"),
     r"chat template .*failed: ZeroDivisionError"),
    ("template-type-error", meta("tokenizer.chat_template", "{{ messages + 1 }}"), r"chat template .*TypeError"),
    ("template-raises", meta("tokenizer.chat_template", "{{ raise_exception('no\nsystem\nrole') }}"),
     r"chat template .*failed: no system role"),
    ("template-escape", meta("tokenizer.chat_template", "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
     r"tried an unsafe operation"),
    ("template-recursion", meta("tokenizer.chat_template", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"),
     r"chat template .*failed"),
    ("template-not-a-string", meta("tokenizer.chat_template", 5), r"chat template .*failed|chat_template"),
]


@pytest.mark.parametrize("name, builder, expect", cases(GGUFS))
def test_hostile_ggufs(tmp_path, name, builder, expect):
    path = tmp_path / f"{name}.gguf"
    builder(path)
    ends_clearly(lambda: read_gguf(path), expect)


# --- manifests: compiler.runtime.load on a folder; refused before any library is opened ---------------

LIBRARY = b"\x7fELF not a library"  # never opened: every case is refused before that


def manifest_folder(folder, change=None, *, content: bytes | None = None):
    """A build folder with a junk kernels.so whose sha256 the manifest records; `change` edits the
    manifest (returning a replacement, or None to keep the edited one); `content` replaces the file."""
    import targets

    folder.mkdir()
    (folder / "kernels.so").write_bytes(LIBRARY)
    manifest = {"schema_version": 2, "target": targets.get("x86").to_json(), "library": "kernels.so",
                "artifacts": {"kernels.so": hashlib.sha256(LIBRARY).hexdigest()}, "kernels": {}}
    if change is not None:
        manifest = change(manifest) or manifest
    (folder / "manifest.json").write_bytes(content if content is not None else json.dumps(manifest).encode())
    return folder


def without(key):
    return lambda m: {k: v for k, v in m.items() if k != key}


def setting(**values):
    return lambda m: {**m, **values}


MANIFESTS = [  # (name, builder(folder) -> folder, expectation)
    ("no-manifest", lambda f: f.mkdir() or f, r"no manifest.json in"),
    ("manifest-a-folder", lambda f: (f / "manifest.json").mkdir(parents=True) or f, r"no manifest.json in"),
    ("manifest-empty", lambda f: manifest_folder(f, content=b""), r"is not valid JSON"),
    ("manifest-not-utf8", lambda f: manifest_folder(f, content=b'{"target": "\xff"}'), r"is not valid JSON"),
    ("manifest-a-list", lambda f: manifest_folder(f, content=b"[1, 2]"), r"is not a JSON object \(it is a list\)"),
    ("manifest-a-number", lambda f: manifest_folder(f, content=b"5"), r"is not a JSON object"),
    ("manifest-null", lambda f: manifest_folder(f, content=b"null"), r"is not a JSON object"),
    ("manifest-deeply-nested", lambda f: manifest_folder(f, content=b"[" * 100000), r"not valid JSON|nests JSON too deeply"),
    ("no-schema-version", lambda f: manifest_folder(f, without("schema_version")), r"schema version None"),
    ("other-schema-version", lambda f: manifest_folder(f, setting(schema_version=1)), r"schema version 1"),
    ("no-artifacts", lambda f: manifest_folder(f, without("artifacts")), r"lacks 'artifacts'"),
    ("no-kernels", lambda f: manifest_folder(f, without("kernels")), r"lacks 'kernels'"),
    ("no-target", lambda f: manifest_folder(f, without("target")), r"lacks 'target'"),
    ("no-library", lambda f: manifest_folder(f, without("library")), r"the manifest names no library"),
    ("library-null", lambda f: manifest_folder(f, setting(library=None)), r"the manifest names no library"),
    ("library-a-number", lambda f: manifest_folder(f, setting(library=5)), r"'library' names 5, which is not"),
    ("library-not-an-artifact", lambda f: manifest_folder(f, setting(library="other.so")), r"'other.so', which is"),
    ("artifacts-empty", lambda f: manifest_folder(f, setting(artifacts={})), r"'artifacts' must map"),
    ("artifacts-a-list", lambda f: manifest_folder(f, setting(artifacts=["kernels.so"])), r"'artifacts' must map"),
    ("artifact-hash-wrong", lambda f: manifest_folder(f, setting(artifacts={"kernels.so": "0" * 64})),
     r"does not match the sha256"),
    ("artifact-hash-a-number", lambda f: manifest_folder(f, setting(artifacts={"kernels.so": 5})),
     r"does not match the sha256"),
    ("artifact-missing", lambda f: manifest_folder(f, lambda m: {**m, "artifacts": {**m["artifacts"], "x.so": "0"}}),
     r"artifact .*x.so named in the manifest is missing"),
    ("artifact-outside", lambda f: manifest_folder(f, setting(artifacts={"../kernels.so": "0"})),
     r"must be a relative path inside the build folder"),
    ("unknown-backend", lambda f: manifest_folder(f, lambda m: {**m, "target": {**m["target"], "backend": "tpu"}}),
     r"the manifest names backend 'tpu'"),
    ("manifest-target-a-string", lambda f: manifest_folder(f, setting(target="x86")), r"target"),
    ("manifest-target-a-list", lambda f: manifest_folder(f, setting(target=["x86"])), r"target"),
    ("cpu-features-a-number", lambda f: manifest_folder(f, lambda m: {**m, "target": {**m["target"], "cpu_features": 5}}),
     r"'cpu_features' must be a list of CPU flag names"),
]


@pytest.mark.parametrize("name, builder, expect", cases(MANIFESTS))
def test_hostile_manifests(tmp_path, name, builder, expect):
    folder = builder(tmp_path / "build")
    ends_clearly(lambda: runtime.load(folder), expect)


# --- tuning databases: open_database ends in a clear error or a database ------------------------------

WORKLOAD = '["abc", {"x": 1}]'
DATABASES = [  # (name, database_workload.json content, database_tuning_record.json content)
    ("records-empty-files", "", ""),
    ("records-garbage", "not json\n", "also not json\n"),
    ("records-not-utf8", b"\xff\xfe\x00\n", b"\x00\x01\xff\n"),
    ("records-workload-a-list", "[1, 2, 3]\n", ""),
    ("records-index-out-of-range", WORKLOAD + "\n", "[5, [[], [1.0]]]\n"),
    ("records-negative-index", WORKLOAD + "\n", "[-1, [[], [1.0]]]\n"),
    ("records-bad-trace", WORKLOAD + "\n", "[0, [1, 2]]\n"),
    ("records-nan-timing", WORKLOAD + "\n", "[0, [[[], []], [NaN], null, null]]\n"),
    ("records-cut-line", WORKLOAD, '[0, [[[], []], [1.0'),
    ("records-carriage-returns", "\r\r" + WORKLOAD + "\r\n", "\r\n"),
    ("records-deeply-nested-json", "[" * 100000 + "\n", ""),
]


@pytest.mark.parametrize("name, workloads, records", cases(DATABASES))
def test_hostile_tuning_databases(tmp_path, name, workloads, records):
    from compiler.tuning.database import RECORDS, WORKLOADS, open_database

    write_text(tmp_path / WORKLOADS, workloads)
    write_text(tmp_path / RECORDS, records)
    try:
        database = open_database(tmp_path, warn=lambda _: None)
    except ValueError as err:  # a clear error is fine too
        assert "\n" not in str(err)
        return
    list(database.get_all_tuning_records())  # a database MetaSchedule can read


# --- the command line: one `error: ...` line and exit code 2, before any build -----------------------

def _config(text):
    return lambda tmp: ["build", "--target", "x86", "--config", str(write_text(tmp / "c.json", text))]


def _run(*flags, builder=write_gguf):
    return lambda tmp: ["run", "--gguf", str(builder(tmp / "m.gguf")), "--prompt", "hi", "--no-tuning", *flags]


COMMANDS = [  # (name, argv builder(tmp_path), what the error line says)
    ("config-a-number", _config("5"), r"must hold a table of fields"),
    ("config-hf-zero-heads", _config(json.dumps({**HF, "num_attention_heads": 0})), r"'num_attention_heads' must"),
    ("config-toml-string", lambda tmp: ["build", "--target", "x86", "--config", str(write_text(
        tmp / "c.toml", 'hidden = "128"\nheads = 4\nkv_heads = 2\nhead_dim = 32\nffn = 192\n'))], r"field 'hidden'"),
    ("out-an-existing-file", lambda tmp: ["build", "--target", "x86", "--ops", "quantize_per_token", "--out",
                                          str(write_text(tmp / "f", "mine"))], r"is an existing file"),
    ("run-seed-negative", _run("--seed", "-1"), r"seed must be a non-negative integer, got -1"),
    ("run-temperature-nan", _run("--temperature", "nan"), r"temperature must be a finite number >= 0, got nan"),
    ("run-top-p-zero", _run("--top-p", "0"), r"top_p must be in \(0, 1\], got 0.0"),
    ("run-max-tokens-zero", _run("--max-tokens", "0"), r"--max-tokens must be at least 1, got 0"),
    ("run-max-context-zero", _run("--max-context", "0"), r"max_context must be a positive integer, got 0"),
    ("run-max-context-huge", _run("--max-context", "1000000000000"),
     r"KV cache of max_context=1000000000000 tokens needs 238,418\.6 GiB .* this machine has [\d,.]+ GiB"),
    ("run-gguf-zero-heads", _run(builder=meta("llama.attention.head_count", 0)), r"head_count must be a positive"),
    ("run-gguf-zero-blocks", _run(builder=meta("llama.block_count", 0)), r"block_count must be a positive"),
    ("run-gguf-zero-epsilon", _run(builder=meta("llama.attention.layer_norm_rms_epsilon", 0.0)), r"epsilon"),
    ("run-gguf-bad-template", _run("--chat", builder=meta("tokenizer.chat_template", "{% for %}")),
     r"chat template"),
    ("run-gguf-missing", lambda tmp: ["run", "--gguf", str(tmp / "none.gguf"), "--prompt", "hi"], r"does not exist"),
    ("run-empty-prompt", lambda tmp: ["run", "--gguf", str(write_gguf(tmp / "m.gguf")), "--prompt", ""],
     r"the prompt is empty"),
]


@pytest.mark.parametrize("name, argv, expect", cases(COMMANDS))
def test_hostile_command_lines(tmp_path, capsys, name, argv, expect):
    code = cli.main(argv(tmp_path))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(expect, errors[0]), errors[0]

"""The fuzz corpus's loaded-kernel half: hostile arrays to one small x86 kernel (called directly,
packed, bound) and manifests that are valid JSON but lie about a real library's kernels. Each case
is one line of data and must end in a clear error (ValueError / LoaderError, one-line message
matching the expectation) or a right answer (the output equals numpy's reference).

Cases that still fail in compiler/runtime/ (which this corpus may not change) are listed in KNOWN
with the reason and run as non-strict xfails of that exception."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from compiler import ops, runtime, verify
from compiler.specs import make_spec

pytestmark = pytest.mark.native

SPEC = make_spec("qgemm_w8a8", n=64, k=128)
NAME = SPEC.name
M = 3
CLEAR = (ValueError, runtime.LoaderError)
RIGHT = "right answer"  # the expectation of a case whose output must equal the reference
DROP = object()  # an argument a case leaves out

KNOWN: dict = {}  # case -> (why it still fails, the exception it raises): none today


def marks(name):
    if name not in KNOWN:
        return []
    reason, raises = KNOWN[name]
    return [pytest.mark.xfail(reason=reason, raises=raises)]


def cases(table):
    return [pytest.param(*row, id=row[0], marks=marks(row[0])) for row in table]


@pytest.fixture(scope="module")
def build_dir(build_library):
    return build_library("x86", [SPEC])


@pytest.fixture(scope="module")
def lib(build_dir):
    with runtime.load(build_dir) as library:
        yield library


@pytest.fixture(scope="module")
def valid():
    """Valid logical inputs of the kernel (M rows): x, x_scale, w, w_scale."""
    return ops.get(SPEC.op).random_inputs(SPEC, {"M": M}, np.random.default_rng(0))


def reference(inputs: dict) -> np.ndarray:
    return ops.get(SPEC.op).reference(verify.spec_of({"spec": SPEC.to_json()}), **inputs)["y"]


def ends_clearly(action, expect, inputs=None):
    """A right answer (the output equals numpy's reference on `inputs`), or an error of CLEAR whose
    one-line message matches `expect`."""
    if expect == RIGHT:
        out = action()
        ref = reference(inputs)
        assert out.shape == ref.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.nanmax(np.abs(ref)), equal_nan=True)
        return
    with pytest.raises(CLEAR) as info:
        action()
    message = str(info.value)
    assert "\n" not in message and re.search(expect, message), message


def misaligned(array: np.ndarray) -> np.ndarray:
    """The same values at an address one byte off any alignment the kernels assume."""
    buffer = np.empty(array.nbytes + 1, np.uint8)[1:]
    view = buffer.view(array.dtype).reshape(array.shape)
    view[...] = array
    return view


def read_only(array: np.ndarray) -> np.ndarray:
    view = array.copy()
    view.flags.writeable = False
    return view


class BadDLPack:
    """An object that claims DLPack but fails to export."""

    def __dlpack__(self, *args, **kwargs):
        raise TypeError("no export today")

    def __dlpack_device__(self):
        return (1, 0)


# (name, change of the valid logical inputs: {argument: new value, or DROP to leave it out}, expectation)
CALLS = [
    ("valid", lambda v: {}, RIGHT),
    ("x-misaligned", lambda v: {"x": misaligned(v["x"])}, RIGHT),
    ("x-read-only", lambda v: {"x": read_only(v["x"])}, RIGHT),
    ("x-scale-nan", lambda v: {"x_scale": np.array([np.nan, 1, 0.5], np.float32)}, RIGHT),
    ("x-scale-zero", lambda v: {"x_scale": np.zeros(M, np.float32)}, RIGHT),
    ("m-large", lambda v: {"x": np.resize(v["x"], (1000, 128)), "x_scale": np.resize(v["x_scale"], 1000)}, RIGHT),
    ("x-float32", lambda v: {"x": v["x"].astype(np.float32)}, r"argument 'x' must have dtype int8, got float32"),
    ("x-int16", lambda v: {"x": v["x"].astype(np.int16)}, r"argument 'x' must have dtype int8"),
    ("x-bool", lambda v: {"x": v["x"] > 0}, r"argument 'x' must have dtype int8, got bool"),
    ("x-object", lambda v: {"x": v["x"].astype(object)}, r"argument 'x' must have dtype int8, got object"),
    ("x-uint8", lambda v: {"x": v["x"].view(np.uint8)}, r"argument 'x' must have dtype int8, got uint8"),
    ("x-1d", lambda v: {"x": v["x"][0]}, r"argument 'x' must have 2 dims"),
    ("x-3d", lambda v: {"x": v["x"][None]}, r"argument 'x' must have 2 dims"),
    ("x-0d", lambda v: {"x": np.array(5, np.int8)}, r"argument 'x' must have 2 dims"),
    ("x-wrong-k", lambda v: {"x": np.ascontiguousarray(v["x"][:, :127])}, r"argument 'x' must have shape"),
    ("m-zero", lambda v: {"x": v["x"][:0], "x_scale": v["x_scale"][:0]}, r"argument 'x': M must be at least 1"),
    ("m-mismatch", lambda v: {"x_scale": v["x_scale"][:2]}, r"argument 'x_scale' axis 0 has M=2, but another"),
    ("x-fortran-order", lambda v: {"x": np.asfortranarray(v["x"])}, r"argument 'x' is not C-contiguous"),
    ("x-reversed-rows", lambda v: {"x": v["x"][::-1]}, r"argument 'x' is not C-contiguous"),
    ("x-every-other-row", lambda v: {"x": np.repeat(v["x"], 2, axis=0)[::2]}, r"argument 'x' is not C-contiguous"),
    ("x-a-list", lambda v: {"x": v["x"].tolist()}, r"argument 'x' must be a numpy array or a DLPack tensor"),
    ("x-none", lambda v: {"x": None}, r"argument 'x' must be a numpy array or a DLPack tensor, got NoneType"),
    ("x-a-string", lambda v: {"x": "int8"}, r"argument 'x' must be a numpy array"),
    ("x-scalar", lambda v: {"x": 5}, r"argument 'x' must be a numpy array"),
    ("x-bad-dlpack", lambda v: {"x": BadDLPack()}, r"argument 'x' is a DLPack tensor numpy cannot read"),
    ("x-scale-float64", lambda v: {"x_scale": v["x_scale"].astype(np.float64)}, r"'x_scale' must have dtype float32"),
    ("missing-x-scale", lambda v: {"x_scale": DROP}, r"missing argument\(s\) 'x_scale'"),
    ("extra-argument", lambda v: {"bias": np.zeros(64, np.float32)}, r"unexpected argument\(s\) 'bias'"),
]


def call_inputs(valid, change):
    inputs = {**valid, **change(valid)}
    return {k: v for k, v in inputs.items() if v is not DROP}


@pytest.mark.parametrize("name, change, expect", cases(CALLS))
def test_hostile_arrays_to_a_call(lib, valid, name, change, expect):
    kernel = lib[NAME]
    inputs = call_inputs(valid, change)
    weights = kernel.pack(w=valid["w"], w_scale=valid["w_scale"])
    activations = {k: v for k, v in inputs.items() if k not in ("w", "w_scale")}
    ends_clearly(lambda: kernel(**activations, **weights), expect, inputs)


@pytest.mark.parametrize("name, change, expect", cases(CALLS))
def test_hostile_arrays_to_a_bound_kernel(lib, valid, name, change, expect):
    kernel = lib[NAME]
    inputs = call_inputs(valid, change)
    bound = kernel.bind(**kernel.pack(w=valid["w"], w_scale=valid["w_scale"]))
    bound(x=valid["x"], x_scale=valid["x_scale"])  # a first call plans the valid shapes: the cache must not mask
    activations = {k: v for k, v in inputs.items() if k not in ("w", "w_scale")}
    ends_clearly(lambda: bound(**activations), expect, inputs)


PACKS = [  # (name, logical weights given to pack, expectation)
    ("w-float32", lambda v: {"w": v["w"].astype(np.float32), "w_scale": v["w_scale"]}, r"'w' must have dtype int8"),
    ("w-wrong-shape", lambda v: {"w": v["w"][:32], "w_scale": v["w_scale"]}, r"argument 'w' must have shape"),
    ("w-transposed", lambda v: {"w": np.ascontiguousarray(v["w"].T), "w_scale": v["w_scale"]}, r"'w' must have shape"),
    ("w-scale-short", lambda v: {"w": v["w"], "w_scale": v["w_scale"][:10]}, r"'w_scale' must have shape"),
    ("w-a-list", lambda v: {"w": v["w"].tolist(), "w_scale": v["w_scale"]}, r"'w' must be a numpy array"),
    ("w-missing", lambda v: {"w_scale": v["w_scale"]}, r"missing argument\(s\) 'w'"),
    ("w-packed-given", lambda v: {"w": v["w"], "w_scale": v["w_scale"], "w_offset_sums": v["w_scale"]},
     r"unexpected argument\(s\) 'w_offset_sums'"),
]


@pytest.mark.parametrize("name, weights, expect", cases(PACKS))
def test_hostile_weights_to_pack(lib, valid, name, weights, expect):
    ends_clearly(lambda: lib[NAME].pack(**weights(valid)), expect)


def test_bound_kernels_refuse_weights_and_unpacked_weights(lib, valid):
    kernel = lib[NAME]
    packed = kernel.pack(w=valid["w"], w_scale=valid["w_scale"])
    bound = kernel.bind(**packed)
    ends_clearly(lambda: bound(x=valid["x"], x_scale=valid["x_scale"], **packed), r"unexpected argument\(s\) 'w'")
    ends_clearly(lambda: kernel.bind(w=valid["w"], w_scale=valid["w_scale"]), r"argument 'w' must have")


# --- manifests that lie about a real library (only its manifest.json changed) ------------------------

def entry(change):
    """A manifest change applied to the kernel's entry."""
    return lambda m: change(m["kernels"][NAME])


def first_arg(**values):
    return entry(lambda e: e["args"][0].update(values))


LIES = [  # (name, change of the parsed manifest (in place, or a replacement returned), expectation)
    ("unchanged", lambda m: None, RIGHT),
    ("no-variants", entry(lambda e: e.update(variants=[])), r"'variants' must be a list"),
    ("bucket-never-matches", entry(lambda e: [v.update(bucket={"M": 7}) for v in e["variants"]]), r"no variant serves"),
    ("argument-shape-a-lie", first_arg(shape=["M", 64]), r"argument 'x' must have shape \['M', 64\]"),
    ("argument-dtype-a-lie", first_arg(dtype="float32"), r"argument 'x' must have dtype float32"),
    ("kernels-a-list", lambda m: m.update(kernels=[NAME]), r"kernels"),
    ("kernels-a-string", lambda m: m.update(kernels=NAME), r"kernels"),
    ("kernel-entry-a-list", lambda m: m["kernels"].update({NAME: [1]}), NAME),
    ("kernel-without-args", entry(lambda e: e.pop("args")), r"args"),
    ("argument-dtype-unknown", first_arg(dtype="int9"), r"int9"),
    ("argument-without-name", entry(lambda e: e["args"][0].pop("name")), r"name"),
    ("kernel-without-variants", entry(lambda e: e.pop("variants")), r"variants"),
    ("variant-symbol-not-in-library", entry(lambda e: [v.update(symbol="nope") for v in e["variants"]]), r"nope"),
    ("pack-step-malformed", entry(lambda e: e["args"][2].update(pack=[["reshape"]])), r"pack"),
]


@pytest.mark.parametrize("name, change, expect", cases(LIES))
def test_manifests_that_lie_about_the_library(build_dir, tmp_path, valid, name, change, expect):
    folder = tmp_path / "build"
    shutil.copytree(build_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    replaced = change(manifest)
    manifest = replaced if isinstance(replaced, dict) else manifest
    (folder / "manifest.json").write_text(json.dumps(manifest))

    def call():
        with runtime.load(folder) as library:
            kernel = library[NAME]
            return kernel(x=valid["x"], x_scale=valid["x_scale"], **kernel.pack(w=valid["w"], w_scale=valid["w_scale"]))

    ends_clearly(call, expect, valid)

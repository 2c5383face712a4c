"""Arrays a caller may hand the loader that are not plain writeable numpy arrays, and a library used
after close(): read-only buffers (np.frombuffer over bytes) give the right answer on every path,
a torch tensor with its negative bit set is read with its sign, and once a library is closed every
call into its driver and every use of its device arrays is the same LoaderError (native driver
here; tests/runtime/test_close_everywhere.py checks Vulkan and Hexagon)."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import runtime
from compiler.runtime.memory import ALIGNMENT
from compiler.specs import make_spec

pytestmark = pytest.mark.native

SPEC = make_spec("qgemm_w8a8", n=64, k=128)
GEMM = SPEC.name


@pytest.fixture(scope="module")
def build_dir(build_library):
    return build_library("x86", [SPEC])


@pytest.fixture(scope="module")
def lib(build_dir):
    with runtime.load(build_dir) as library:
        yield library


@pytest.fixture
def closed_lib(build_dir):
    """A library of its own, closed by the test (the shared one stays open)."""
    return runtime.load(build_dir)


@pytest.fixture
def logical():
    rng = np.random.default_rng(7)
    return {"w": rng.integers(-127, 128, (64, 128), dtype=np.int8),
            "w_scale": rng.uniform(0.005, 0.02, 64).astype(np.float32)}


@pytest.fixture
def activations():
    rng = np.random.default_rng(8)
    return {"x": rng.integers(-127, 128, (3, 128), dtype=np.int8),
            "x_scale": rng.uniform(0.01, 0.03, 3).astype(np.float32)}


def frombuffer(array: np.ndarray, placement: str) -> np.ndarray:
    """`array`'s values as a read-only np.frombuffer: over a bytes object ("bytes", wherever it
    lands), or over a read-only memoryview whose data is 64-byte aligned ("aligned": the loader
    passes it without a copy) or deliberately not ("misaligned")."""
    if placement == "bytes":
        view = np.frombuffer(array.tobytes(), array.dtype).reshape(array.shape)
    else:
        raw = runtime.empty((array.nbytes + ALIGNMENT,), np.uint8)
        start = 0 if placement == "aligned" else array.itemsize
        raw[start:start + array.nbytes] = np.frombuffer(array.tobytes(), np.uint8)
        view = np.frombuffer(memoryview(raw).toreadonly(), array.dtype, array.size, start).reshape(array.shape)
        assert (view.ctypes.data % ALIGNMENT == 0) == (placement == "aligned")
    assert not view.flags.writeable
    return view


PLACEMENTS = ["bytes", "aligned", "misaligned"]


# -- read-only inputs ---------------------------------------------------------------------------

@pytest.mark.parametrize("placement", PLACEMENTS)
def test_read_only_inputs_of_a_plain_call(lib, logical, activations, placement):
    kernel = lib[GEMM]
    packed = kernel.pack(**logical)
    expected = kernel(**activations, **packed)
    hostile = {name: frombuffer(a, placement) for name, a in {**activations, **packed}.items()}
    np.testing.assert_array_equal(kernel(**hostile), expected)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_read_only_logical_weights_pack_and_bind(lib, logical, activations, placement):
    kernel = lib[GEMM]
    expected = kernel(**activations, **kernel.pack(**logical))
    packed = kernel.pack(**{name: frombuffer(a, placement) for name, a in logical.items()})
    np.testing.assert_array_equal(kernel(**activations, **packed), expected)
    bound = kernel.bind(**packed)
    np.testing.assert_array_equal(bound(**activations), expected)
    hostile = {name: frombuffer(a, placement) for name, a in activations.items()}
    np.testing.assert_array_equal(bound(**hostile), expected)


def test_read_only_packed_weights_bind(lib, logical, activations):
    kernel = lib[GEMM]
    packed = kernel.pack(**logical)
    expected = kernel(**activations, **packed)
    bound = kernel.bind(**{name: frombuffer(a, "aligned") for name, a in packed.items()})
    out = bound(**activations)
    np.testing.assert_array_equal(out, expected)
    assert out.flags.writeable  # outputs are always fresh arrays


# -- torch views whose bits DLPack cannot carry --------------------------------------------------

def test_a_negative_view_is_read_with_its_sign(lib, logical, activations):
    torch = pytest.importorskip("torch")
    kernel = lib[GEMM]
    packed = kernel.pack(**logical)
    negated = torch.from_numpy(activations["x_scale"].copy())._neg_view()
    assert negated.is_neg()
    expected = kernel(x=activations["x"], x_scale=-activations["x_scale"], **packed)
    np.testing.assert_array_equal(kernel(x=activations["x"], x_scale=negated, **packed), expected)
    bound = kernel.bind(**packed)
    np.testing.assert_array_equal(bound(x=activations["x"], x_scale=negated), expected)
    x_negated = torch.from_numpy(activations["x"].copy())._neg_view()
    np.testing.assert_array_equal(kernel(x=x_negated, x_scale=activations["x_scale"], **packed),
                                  kernel(x=-activations["x"], x_scale=activations["x_scale"], **packed))
    w_negated = torch.from_numpy(logical["w"].copy())._neg_view()  # pack reads it with its sign too
    np.testing.assert_array_equal(kernel.pack(w=w_negated, w_scale=logical["w_scale"])["w"],
                                  kernel.pack(w=-logical["w"], w_scale=logical["w_scale"])["w"])


def test_conjugate_views_are_plain_for_real_dtypes_and_refused_by_dtype_for_complex(lib, logical, activations):
    """A real tensor's conj() is the tensor itself; a complex one is refused as the wrong dtype
    (naming the argument), not as an unreadable DLPack tensor."""
    torch = pytest.importorskip("torch")
    kernel = lib[GEMM]
    packed = kernel.pack(**logical)
    real = torch.from_numpy(activations["x_scale"].copy()).conj()
    np.testing.assert_array_equal(kernel(x=activations["x"], x_scale=real, **packed),
                                  kernel(**activations, **packed))
    complex_view = torch.ones(3, dtype=torch.complex64).conj()
    assert complex_view.is_conj()
    with pytest.raises(ValueError, match="'x_scale' must have dtype float32, got complex64"):
        kernel(x=activations["x"], x_scale=complex_view, **packed)


# -- close() ------------------------------------------------------------------------------------

def test_after_close_kernels_and_device_arrays_raise_loader_error(closed_lib, logical, activations):
    kernel = closed_lib[GEMM]
    packed = kernel.pack(**logical)
    bound = kernel.bind(**packed)
    prepared = bound.prepare(**{name: runtime.aligned(a) for name, a in activations.items()})
    cache = closed_lib.device_array((2, 4), np.float32)
    cache[...] = 1.0
    view = cache[0]
    closed_lib.close()
    closed_lib.close()  # twice is harmless
    with pytest.raises(runtime.LoaderError, match="closed"):
        kernel(**activations, **packed)
    with pytest.raises(runtime.LoaderError, match="closed"):
        bound(**activations)
    with pytest.raises(runtime.LoaderError, match="closed"):
        prepared()
    with pytest.raises(runtime.LoaderError, match="closed"):
        kernel.bind(**packed)
    np.testing.assert_array_equal(kernel.pack(**logical)["w"], packed["w"])  # pure numpy: still fine
    with pytest.raises(runtime.LoaderError, match="closed"):
        closed_lib.device_array((2, 4), np.float32)
    with pytest.raises(runtime.LoaderError, match="closed"):
        cache[0, 0] = 2.0
    with pytest.raises(runtime.LoaderError, match="closed"):
        cache.numpy()
    with pytest.raises(runtime.LoaderError, match="closed"):
        view.array()


def test_leaving_a_with_block_after_close_is_harmless(build_dir, activations, logical):
    with runtime.load(build_dir) as library:
        library.close()
    with pytest.raises(runtime.LoaderError, match="closed"):
        library[GEMM](**activations, **library[GEMM].pack(**logical))


@pytest.mark.parametrize("shape, dtype, message", [
    ((-1, 4), np.float32, r"dim 0 .*-1"),
    ((2, 2.5), np.float32, r"dim 1 .*2\.5"),
    ((2, "4"), np.float32, r"dim 1 .*'4'"),
    ((2, True), np.float32, r"dim 1 .*True"),
    (2.5, np.float32, r"shape 2\.5 is neither"),
    ((2, 4), "float99", r"dtype 'float99'"),
    ((2, 4), object, r"dtype object"),
])
def test_device_array_refuses_bad_shapes_and_dtypes(lib, shape, dtype, message):
    with pytest.raises(ValueError, match=message):
        lib.device_array(shape, dtype)


def test_device_array_takes_integer_dims_of_any_integer_type(lib):
    array = lib.device_array((np.int64(2), 0, 3), "float32")
    assert array.shape == (2, 0, 3) and array.numpy().shape == (2, 0, 3)
    assert lib.device_array(5, np.int8).shape == (5,)

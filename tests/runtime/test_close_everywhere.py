"""close() is one behaviour on every backend: after `lib.close()` a call into the driver (a kernel,
a bound kernel) and any use of a device array raise LoaderError saying the library is closed, and a
second close is harmless. The native driver's case in full is in test_hostile_arrays.py; here the
drivers whose own failure after close differed: Vulkan (lavapipe) and the Hexagon runner
(qemu-hexagon)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_emulator

from compiler import runtime
from compiler.specs import make_spec

pytestmark = pytest.mark.emulated

SPEC = make_spec("qgemm_w8a8", n=64, k=128)


@pytest.mark.parametrize("target, isa", [("vulkan", "spirv"), ("hexagon", "hexagon")])
def test_calls_after_close_raise_loader_error(build_library, target, isa):
    require_emulator(isa)
    library = runtime.load(build_library(target, [SPEC]))
    kernel = library[SPEC.name]
    rng = np.random.default_rng(0)
    packed = kernel.pack(w=rng.integers(-127, 128, (64, 128), dtype=np.int8), w_scale=np.full(64, 0.01, np.float32))
    inputs = {"x": rng.integers(-127, 128, (2, 128), dtype=np.int8), "x_scale": np.full(2, 0.02, np.float32)}
    bound = kernel.bind(**packed)
    expected = kernel(**inputs, **packed)
    np.testing.assert_array_equal(bound(**inputs), expected)
    prepared = bound.prepare(**{name: runtime.aligned(a) for name, a in inputs.items()})
    prepared()  # this driver's prepared call: a call and a copy into its output
    np.testing.assert_array_equal(prepared.outputs[0], expected)
    cache = library.device_array((2, 8), np.float32)
    library.close()
    library.close()  # twice is harmless
    for call in (lambda: kernel(**inputs, **packed), lambda: bound(**inputs), prepared, lambda: kernel.bind(**packed),
                 lambda: cache.numpy(), lambda: library.device_array((2, 8), np.float32)):
        with pytest.raises(runtime.LoaderError, match="closed"):
            call()
    assert kernel.pack(w=np.zeros((64, 128), np.int8), w_scale=np.ones(64, np.float32))  # plain numpy

"""A reduction that starts from a computed stage (ops/reduction_start.py): TE drops a te.sum's init,
with_start puts it back, and the compiled function adds the start to the sum."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.ops.reduction_start import with_start

pytestmark = pytest.mark.unit


def _sum_from(start_scale: int):
    from tvm import te

    a = te.placeholder((4, 8), "int32", name="A")
    b = te.placeholder((4,), "int32", name="B")
    start = te.compute((4,), lambda i: b[i] * start_scale, name="S")
    k = te.reduce_axis((0, 8), name="k")
    c = te.compute((4,), lambda i: te.sum(a[i, k], axis=k, init=start[i]), name="C")
    return te.create_prim_func([a, b, c])


def test_the_start_is_added_to_the_sum():
    import tvm

    func = with_start(_sum_from(-8), "C", "S")
    library = tvm.compile(func, target="llvm")
    a = np.arange(32, dtype=np.int32).reshape(4, 8)
    b = np.array([3, -1, 0, 7], np.int32)
    out = tvm.runtime.tensor(np.zeros(4, np.int32))
    library(tvm.runtime.tensor(a), tvm.runtime.tensor(b), out)
    np.testing.assert_array_equal(out.numpy(), a.sum(1) - 8 * b)


def test_a_start_repeats_over_its_last_dimension():
    """A start stored once per column of a tile (qgemm_int's repeated starts): C[i, j] starts at
    S[i, j % 2]."""
    import tvm
    from tvm import te

    a = te.placeholder((3, 6, 4), "int32", name="A")
    b = te.placeholder((3, 2), "int32", name="B")
    start = te.compute((3, 2), lambda i, c: b[i, c] + 1000, name="S")
    k = te.reduce_axis((0, 4), name="k")
    c = te.compute((3, 6), lambda i, j: te.sum(a[i, j, k], axis=k, init=start[i, j % 2]), name="C")
    library = tvm.compile(with_start(te.create_prim_func([a, b, c]), "C", "S"), target="llvm")
    rng = np.random.default_rng(0)
    av, bv = rng.integers(-50, 50, (3, 6, 4), dtype=np.int32), rng.integers(-50, 50, (3, 2), dtype=np.int32)
    out = tvm.runtime.tensor(np.zeros((3, 6), np.int32))
    library(tvm.runtime.tensor(av), tvm.runtime.tensor(bv), out)
    np.testing.assert_array_equal(out.numpy(), av.sum(2) + np.tile(bv, 3) + 1000)


def test_unknown_block_or_buffer_is_named():
    with pytest.raises(ValueError, match="no block named 'D'"):
        with_start(_sum_from(2), "D", "S")
    with pytest.raises(ValueError, match="no intermediate buffer named 'T'"):
        with_start(_sum_from(2), "C", "T")

"""Inputs for timing a tuning candidate, made where it is timed (on an RPC device too), from
MetaSchedule's argument descriptions: random data need not cross the network."""

from __future__ import annotations

import numpy as np


def random_arguments(args_info: list, seed: int = 0) -> list[np.ndarray]:
    """One array per ["TENSOR", dtype, shape]: small non-negative integers (valid indices, no
    overflow) or standard-normal floats."""
    rng = np.random.default_rng(seed)
    arrays = []
    for _, dtype, shape in args_info:
        if dtype.startswith(("int", "uint")):
            arrays.append(rng.integers(0, 8, size=shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays

"""bench's cold rows: each carries the copy bandwidth timed among its own contestants."""

import numpy as np
import pytest

import targets
from compiler import backends, build, runtime
from compiler.benchmarks.bench import COPY_PROBE, bench_library
from compiler.specs import make_spec


@pytest.mark.native
def test_a_cold_row_has_its_share_against_the_copy_timed_in_its_rounds(tmp_path):
    target = targets.get("x86")
    spec = make_spec("qgemm_w8a8", n=256, k=256)
    build.build([spec], target, tmp_path, toolchain=backends.toolchain_for(target), progress=lambda _: None)
    result = bench_library(runtime.load(tmp_path), quick=False, progress=lambda _: None)
    rows = result["rows"]
    assert all(row["contestant"] != COPY_PROBE for row in rows)  # the probe is the yardstick, not a contestant
    cold = [row for row in rows if row["cache"] == "cold"]
    assert cold and all(row["sizes"] == {"M": 1} for row in cold)  # decode GEMV: memory-bound
    for row in rows:
        assert row["copy_gbs"] > 0
        assert np.isclose(row["bandwidth_fraction"], row["gbs"] / row["copy_gbs"])
    hot = {row["copy_gbs"] for row in rows if row["cache"] == "hot"}
    assert len(hot) == 1  # hot rows: against the start-up measurement

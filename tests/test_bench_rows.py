"""bench's cold rows: each carries the copy bandwidth and the read floor timed among its own
contestants, and its shares are per-round ratios against them."""

import statistics
import threading
import time

import numpy as np
import pytest

import targets
from compiler import backends, build, runtime
from compiler.benchmarks import contenders
from compiler.benchmarks.bench import bench_library
from compiler.benchmarks.roofline import COPY_ALIGNMENT, COPY_PROBE, READ_FLOOR, ColdCopies, ReadFloor
from compiler.runtime.memory import ALIGNMENT
from compiler.specs import make_spec


@pytest.mark.native
def test_a_cold_row_has_its_shares_against_the_yardsticks_timed_in_its_rounds(tmp_path):
    target = targets.get("x86")
    spec = make_spec("qgemm_w8a8", n=256, k=256)
    build.build([spec], target, tmp_path, toolchain=backends.toolchain_for(target), progress=lambda _: None)
    result = bench_library(runtime.load(tmp_path), quick=False, progress=lambda _: None)
    rows = result["rows"]
    assert all(row["contestant"] not in (COPY_PROBE, READ_FLOOR) for row in rows)  # yardsticks, not contestants
    cold = [row for row in rows if row["cache"] == "cold"]
    assert cold and all(row["sizes"] == {"M": 1} for row in cold)  # decode GEMV: memory-bound
    for row in cold:
        rounds = row["round_ms"]
        assert len(rounds) == len(row["copy_gbs_rounds"]) == 9
        nbytes = row["gbs"] * row["median_ms"] * 1e6  # bytes moved per call
        per_round = [nbytes / (t * 1e6) / copy for t, copy in zip(rounds, row["copy_gbs_rounds"])]
        assert np.isclose(row["bandwidth_fraction"], statistics.median(per_round))
        assert row["copy_gbs"] == pytest.approx(statistics.median(row["copy_gbs_rounds"]), rel=1e-3)
        assert row["read_floor_fraction"] > 0 and row["read_floor_ms"] > 0
    hot = [row for row in rows if row["cache"] == "hot"]
    for row in hot:
        assert np.isclose(row["bandwidth_fraction"], row["gbs"] / row["copy_gbs"])
        assert row["read_floor_fraction"] is None
    assert len({row["copy_gbs"] for row in hot}) == 1  # hot rows: against the start-up measurement


@pytest.mark.native
def test_cold_copies_lie_in_one_allocation_and_the_floor_reads_all_of_each():
    target = targets.get("x86")
    floor = ReadFloor(target.llvm, target.vector_bits)
    rng = np.random.default_rng(1)
    sets = [{"w": rng.integers(-128, 128, (37, 3), dtype=np.int8), "x": rng.random((5, 61), dtype=np.float32)}
            for _ in range(3)]
    copies = ColdCopies(sets, floor.granule)
    assert copies.span % floor.granule == 0
    base = copies.region(0).__array_interface__["data"][0]
    for index, (placed, original) in enumerate(zip(copies.sets, sets)):
        assert copies.region(index).__array_interface__["data"][0] == base + index * COPY_ALIGNMENT
        for name, array in original.items():
            assert placed[name].dtype == array.dtype and np.array_equal(placed[name], array)
            assert placed[name].__array_interface__["data"][0] % ALIGNMENT == 0
            assert np.shares_memory(placed[name], copies.region(index))
    read = floor.over(copies)  # checks its sums of copy 0 against numpy's
    for _ in range(4):
        read()


@pytest.mark.unit
def test_settle_waits_for_a_spinning_thread_and_not_for_an_idle_process():
    assert contenders.settle() < 0.5  # idle: a window or a few

    def spin(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    worker = threading.Thread(target=spin, args=(0.3,))
    worker.start()
    waited = contenders.settle()
    worker.join()
    assert waited >= 0.2

"""The memory yardsticks of bench's cold rows, timed among each row's contestants: a copy on every
core (the bandwidth), and the read floor, a kernel that only reads the row's own bytes where they
lie. The cold copies of a row's inputs live in one allocation (ColdCopies), as a model's KV cache
and weights do.

Why the read floor: this VM's memory speed drifts from minute to minute (the copy read 25-51 GB/s
within one session), and a 3 MiB decode read is not a 512 MiB copy. The floor reads exactly what
the kernel reads, from the same pages, in the same rounds, so its time is what any kernel that
must read those bytes needs at that moment: a kernel at 1.0x its floor is at the memory limit,
whatever the copy said."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import numpy as np

from compiler import runtime
from compiler.runtime.memory import ALIGNMENT

COPY_PROBE = "copy bandwidth probe"
READ_FLOOR = "read floor"
PROBE_BYTES = 512 << 20  # a 128 MiB copy read 32 GB/s where this one read 44 (same minute, 2 cores)
# Each cold copy starts on a fresh 64 KiB boundary (a stream of its own for the hardware prefetcher).
COPY_ALIGNMENT = 64 << 10
# int32 vectors of the target's width the read floor sums per step (independent add chains).
FLOOR_VECTORS = 4


class CopyProbe:
    """A large copy (read + write) split over every core, the roofline of memory-bound kernels
    (numpy's copy releases the GIL, so the threads run in parallel). Callable, so that it can run
    among a cold row's contestants: that row's bandwidth share is then against the bandwidth of
    the same moments. This shared VM's copy bandwidth drifted from 27 to 52 GB/s within an hour,
    so a share against one measurement at start-up said as much about the moment as the kernel."""

    def __init__(self, nbytes: int):
        from concurrent.futures import ThreadPoolExecutor

        threads = os.cpu_count() or 1
        src = np.ones(nbytes // 4, np.float32)
        dst = np.empty_like(src)
        bounds = np.linspace(0, src.size, threads + 1).astype(int)
        self._chunks = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        self._pool = ThreadPoolExecutor(threads)
        self.nbytes = src.nbytes

    def __call__(self):
        list(self._pool.map(lambda pair: np.copyto(*pair), self._chunks))

    def gbs(self, seconds: float) -> float:
        """GB/s of one copy that took `seconds`."""
        return 2 * self.nbytes / seconds / 1e9

    def close(self):
        self._pool.shutdown()


def memory_bandwidth(probe: CopyProbe, repeats: int = 5) -> float:
    """GB/s of the fastest of `repeats` of the probe's copies."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        probe()
        best = min(best, time.perf_counter() - start)
    return probe.gbs(best)


def last_level_cache_bytes() -> int:
    """The largest CPU cache the OS reports (32 MiB if it reports none)."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip()
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KM")) * scale)
    return max(sizes, default=32 << 20)


class ColdCopies:
    """Copies of a row's arrays (packed weights, inputs), each copy's arrays side by side in one
    allocation. A model's KV cache is one allocation for all layers (llm/decoder.py) and its weights
    are large arrays, which Linux backs with huge pages (numpy asks for them from 4 MiB up); a
    1.5 MiB array of its own is not, so copies allocated one by one paid page walks and 4 KiB
    prefetch restarts that the model does not (decode at L=2048, side by side: 0.92-1.03x the
    time on separate arrays)."""

    def __init__(self, sets: list[dict[str, np.ndarray]], granule: int):
        """sets: per copy, named arrays; granule: the read floor's unit of bytes (its used span is
        rounded up to it)."""
        offsets, end = {}, 0
        for name, array in sets[0].items():
            offsets[name] = end
            end += -(-array.nbytes // ALIGNMENT) * ALIGNMENT
        self.span = -(-end // granule) * granule
        stride = -(-self.span // COPY_ALIGNMENT) * COPY_ALIGNMENT
        self._slab = runtime.empty((len(sets), stride), np.uint8)
        self._slab[:, end:self.span] = 0
        self.sets = []
        for index, arrays in enumerate(sets):
            placed = {}
            for name, array in arrays.items():
                view = self._slab[index, offsets[name]:offsets[name] + array.nbytes].view(array.dtype)
                view = view.reshape(array.shape)
                view[...] = array
                placed[name] = view
            self.sets.append(placed)

    def region(self, index: int) -> np.ndarray:
        """Copy `index`'s bytes (its arrays and their padding) as uint32 words."""
        return self._slab[index, :self.span].view(np.uint32)


def _floor_func(parts: int, lanes: int):
    """TVMScript: each of `parts` threads sums a contiguous 1/parts of the words in
    FLOOR_VECTORS independent vector chains, and writes its sums (so the reads are not dead)."""
    from tvm.script import tirx as T

    W = FLOOR_VECTORS * lanes

    @T.prim_func(s_tir=True)
    def read_floor(x_h: T.handle, o_h: T.handle):
        T.func_attr({"tirx.noalias": True, "global_symbol": "read_floor"})
        n = T.int32()
        X = T.match_buffer(x_h, (n,), "uint32")
        O = T.match_buffer(o_h, (parts, W), "uint32")
        for p in T.parallel(parts):
            with T.sblock("part"):
                vp = T.axis.remap("S", [p])
                acc = T.sblock_alloc_buffer((W,), "uint32", scope="global")
                for u in T.vectorized(W):
                    acc[u] = T.uint32(0)
                for i in range(n // (parts * W)):
                    for u in T.vectorized(W):
                        acc[u] = acc[u] + X[(vp * (n // (parts * W)) + i) * W + u]
                for u in T.vectorized(W):
                    O[vp, u] = acc[u]

    return read_floor


class ReadFloor:
    """The read floor, compiled once for the host: `over(copies)` gives a callable that reads the
    next copy's region once per call, over every thread of TVM's pool (the pool our kernels run on)."""

    def __init__(self, llvm_target: dict, vector_bits: int):
        import tvm

        from compiler.runtime import host

        host.configure_thread_pool()
        self.parts = int(os.environ["TVM_NUM_THREADS"])
        self.words = FLOOR_VECTORS * max(1, vector_bits // 32)
        self.granule = self.parts * self.words * 4  # bytes: ColdCopies rounds each copy's span up to it
        self._read = tvm.compile(_floor_func(self.parts, self.words // FLOOR_VECTORS),
                                 tvm.target.Target(dict(llvm_target)))["read_floor"]

    def over(self, copies: ColdCopies):
        """A callable reading copies' regions in turn, checked once against numpy: a floor that read
        less than it was given would mislabel the memory limit."""
        import tvm

        if copies.span % self.granule:
            raise ValueError(f"read floor: copies of {copies.span} bytes are not whole {self.granule}-byte units")
        out = tvm.runtime.tensor(np.zeros((self.parts, self.words), np.uint32))
        regions = [tvm.runtime.from_dlpack(copies.region(i)) for i in range(len(copies.sets))]
        self._read(regions[0], out)
        expected = copies.region(0).reshape(self.parts, -1, self.words).sum(axis=1, dtype=np.uint64) % (1 << 32)
        if not np.array_equal(out.numpy().astype(np.uint64), expected):
            raise RuntimeError("read floor: its sums do not match the bytes it was given")
        turn = itertools.cycle(regions)
        return lambda: self._read(next(turn), out)

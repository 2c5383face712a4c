"""compiler.llm.q8_blocks against ggml itself: the CPU backend's own Q8_0 / Q8_1 activation quantiser
(llama-cpp-python's libggml-cpu, through ctypes), the repacked paths' 4-row quantiser, and
ggml_quantize_chunk's reference functions, bit for bit on rows built to hit every rounding edge."""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import platform
from pathlib import Path

import numpy as np
import pytest

from compiler.llm.q8_blocks import QK, quantize_q8_0, quantize_q8_1

F = np.float32
K = 256
GGML_TYPE_Q8_0, GGML_TYPE_Q8_1 = 8, 9  # enum ggml_type (ggml.h)
BLOCK_Q8_0 = np.dtype([("d", "<u2"), ("qs", "i1", QK)])  # ggml-common.h: 34 bytes
BLOCK_Q8_1 = np.dtype([("d", "<u2"), ("s", "<u2"), ("qs", "i1", QK)])  # 36 bytes
BLOCK_Q8_0X4 = np.dtype([("d", "<u2", 4), ("qs", "i1", 4 * QK)])  # repack.h block<8, 4>: 136 bytes
FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class Ggml:
    """llama-cpp-python's ggml shared libraries: the CPU backend's quantisers and ggml-base's _ref ones."""

    def __init__(self, lib: Path):
        self.base = ctypes.CDLL(str(lib / "libggml-base.so"))
        self.cpu = ctypes.CDLL(str(lib / "libggml-cpu.so"))
        self.cpu.ggml_cpu_init()
        # ggml-cpu.h: struct ggml_type_traits_cpu { ggml_from_float_t from_float; ...}: the first field
        self.cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(ctypes.c_void_p)
        self.cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
        self.base.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.base.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                  ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]

    def has(self, feature: str) -> bool:
        fn = getattr(self.cpu, f"ggml_cpu_has_{feature}", None)  # compile-time: what the library was built for
        return bool(fn and fn())

    def live_flavour(self) -> str | None:
        """The flavour of the CPU backend's quantize_row_q8_0 / _q8_1 in this build on this machine."""
        machine = platform.machine().lower()
        if machine in ("x86_64", "amd64"):
            return "x86" if self.has("avx") else "reference"  # without AVX: the scalar _ref fallback
        if machine in ("aarch64", "arm64"):
            return "arm" if self.has("neon") else "reference"
        return None

    def from_float(self, x: np.ndarray, ggml_type: int) -> np.ndarray:
        out = np.zeros((x.shape[0], x.shape[1] // QK), BLOCK_Q8_0 if ggml_type == GGML_TYPE_Q8_0 else BLOCK_Q8_1)
        fn = FROM_FLOAT(self.cpu.ggml_get_type_traits_cpu(ggml_type)[0])
        fn(x.ctypes.data, out.ctypes.data, x.size)  # rows are contiguous and blocks independent: one call
        return out

    def quantize_chunk_q8_0(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], x.shape[1] // QK), BLOCK_Q8_0)
        self.base.ggml_quantize_chunk(GGML_TYPE_Q8_0, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], None)
        return out

    def quantize_row_q8_1_ref(self, x: np.ndarray) -> np.ndarray:
        # ggml_quantize_chunk has no Q8_1 (not a storage type): ggml-base's exported _ref function itself
        out = np.zeros((x.shape[0], x.shape[1] // QK), BLOCK_Q8_1)
        self.base.quantize_row_q8_1_ref.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        self.base.quantize_row_q8_1_ref(x.ctypes.data, out.ctypes.data, x.size)
        return out

    def quantize_mat(self, name: str, x4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ggml_quantize_mat_q8_0_4xN on 4 rows, de-interleaved back to (q [4, K], d [4, K/32])."""
        fn = getattr(self.cpu, name)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        k = x4.shape[1]
        out = np.zeros(k // QK, BLOCK_Q8_0X4)
        fn(x4.ctypes.data, out.ctypes.data, k)
        lane = 8 if name.endswith("4x8") else 4  # qs: per block, chunks of `lane` values of rows 0..3 in turn
        q = out["qs"].reshape(k // QK, QK // lane, 4, lane).transpose(2, 0, 1, 3).reshape(4, k)
        return q, _half(out["d"]).T


@functools.cache
def _ggml() -> Ggml | str:
    spec = importlib.util.find_spec("llama_cpp")  # its libraries, without importing (and loading libllama)
    if spec is None or not spec.submodule_search_locations:
        return "llama-cpp-python is not installed (the project's `bench` extra)"
    lib = Path(spec.submodule_search_locations[0]) / "lib"
    if not (lib / "libggml-cpu.so").is_file() or not (lib / "libggml-base.so").is_file():
        return f"no libggml-cpu.so / libggml-base.so in {lib}"
    try:
        return Ggml(lib)
    except (OSError, AttributeError) as err:
        return f"llama-cpp-python's ggml libraries in {lib} cannot be used: {err}"


@pytest.fixture(scope="module")
def ggml() -> Ggml:
    found = _ggml()
    if isinstance(found, str):
        pytest.skip(f"LLAMA.CPP UNAVAILABLE, test not run: {found}")
    return found


def _half(bits: np.ndarray) -> np.ndarray:
    return bits.view(np.float16).astype(np.float32)


def _id_flip_rows(n: int) -> np.ndarray:
    """Rows whose blocks each hold an element x with rint(x * 127/amax) != rint(x * 1/(amax/127)).

    127/amax (x86) and 1/(amax/127) (arm, reference) differ by an ulp for about a quarter of amax values;
    x is chosen next to (j + 0.5)/id so that the ulp moves x * id across, or onto, a rounding tie.
    """
    rng = np.random.default_rng(7)
    amax = rng.uniform(0.5, 1.0, 4096).astype(F)
    id_x86, id_arm = F(127) / amax, F(1) / (amax / F(127))
    amax, id_x86, id_arm = amax[id_x86 != id_arm], id_x86[id_x86 != id_arm], id_arm[id_x86 != id_arm]
    half = np.arange(127, dtype=F)[None, :] + F(0.5)
    centre = (half / id_x86[:, None]).astype(F)
    picks = {}  # one x per amax
    for step in (0, -1, 1):
        x = np.nextafter(centre, np.where(step < 0, F(0), F(np.inf)).astype(F)) if step else centre
        flips = (np.rint(x * id_x86[:, None]) != np.rint(x * id_arm[:, None])) & (np.abs(x) <= amax[:, None])
        for r, c in zip(*np.nonzero(flips)):
            picks.setdefault(r, (amax[r], x[r, c]))
    picks = [picks[r] for r in sorted(picks)]
    assert len(picks) >= n * (K // QK), "too few id flips found"
    blocks = rng.uniform(-1, 1, (n * (K // QK), QK)).astype(F)
    for b, (a, x) in enumerate(picks[: len(blocks)]):
        blocks[b] *= a
        blocks[b, 0], blocks[b, 1 + b % (QK - 1)] = -a if b % 2 else a, -x if b % 3 == 0 else x
    return blocks.reshape(n, K)


def _near_tie_rows(n: int) -> np.ndarray:
    """Blocks of random amax whose values all sit within an ulp or two of x * id = j + 0.5, j = 0..126:
    an ulp of difference in how id (or d) is computed, or in how a tie rounds, flips some of them."""
    rng = np.random.default_rng(3)
    blocks = n * (K // QK)
    amax = (10.0 ** rng.uniform(-30, 30, blocks)).astype(F)
    j = rng.integers(0, 127, (blocks, QK))
    j[:, 1:4] = 0  # x * id near 0.5: roundf's neighbourhood that floor(x + 0.5) gets wrong
    x = ((j + 0.5) * amax.astype(np.float64)[:, None] / 127).astype(F)
    for ulps in range(2):
        x = np.nextafter(x, np.where(rng.random(x.shape) < 0.5, F(0), F(np.inf)).astype(F)).astype(F)
    x = np.where(rng.random(x.shape) < 0.5, -x, x).astype(F)
    x[:, 0] = np.where(rng.random(blocks) < 0.5, -amax, amax)
    return x.reshape(n, K)


def hard_rows() -> np.ndarray:
    """Random rows plus every edge: ties, near-ties, zeros, a zero block, negative amax, huge and tiny
    magnitudes, denormals (down to where id overflows to inf), fp16 limits of d, id-formula flips."""
    rng = np.random.default_rng(0)
    normal = lambda: rng.standard_normal(K).astype(F)  # noqa: E731
    rows = [normal() * F(scale) for scale in (1, 1e-3, 1e3, 1e-20, 1e20, 8e37)]
    zeros = normal()
    zeros[32:64] = 0  # a zero block
    zeros[::7] = 0
    rows += [zeros, np.zeros(K, F), -np.abs(normal())]  # ..., a zero row, amax from a negative value
    # denormals, and tiny blocks either side of id = inf (amax < 127 / FLT_MAX ~ 3.73e-37)
    rows += [normal() * F(scale) for scale in (1e-45, 1e-42, 1e-39, 3e-39, 1e-38, 3e-37, 3.8e-37, 4e-37, 1e-36)]
    # exact ties: amax = 127 * 2^e makes id = 2^-e under every formula, so x * id lands on j + 0.5
    for e in (0, -10, -3, 4, 9):
        ties = (rng.integers(-127, 127, K) + F(0.5)).astype(F) * F(2.0**e)
        ties[::QK] = F((127 if e % 2 else -127) * 2.0**e)
        rows.append(ties)
    near = (rng.integers(-126, 126, K) + F(0.5)).astype(F)  # an ulp either side of a tie
    near = np.nextafter(near, near + rng.choice([-1, 1], K).astype(F)).astype(F)
    near[::QK] = 127
    rows.append(near)
    # d = amax / 127 at fp16's limits: overflow to inf, the largest finite, subnormal and underflow
    for amax in (65504 * 127, 65519 * 127, 65520 * 127, 6.1e-5 * 127, 6e-8 * 127, 2.9e-8 * 127, 1e-9):
        row = rng.uniform(-1, 1, K).astype(F) * F(amax)
        row[3::QK] = F(amax)
        rows.append(row)
    # every block a different magnitude, from 1e-38 to 1e37
    rows += [normal() * (F(10) ** rng.uniform(-38, 37, K // QK).astype(F)).repeat(QK) for _ in range(16)]
    rows += [normal() * F(rng.uniform(0.01, 50)) for _ in range(40)]
    rows += [_id_flip_rows(1)[0], *_near_tie_rows(4)]
    return np.ascontiguousarray(np.stack(rows), dtype=F)


def _assert_bits(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    ours, theirs = np.ascontiguousarray(ours), np.ascontiguousarray(theirs)
    wrong = ours.view(np.uint8) != theirs.view(np.uint8)
    assert not wrong.any(), f"{what}: {int(wrong.sum())} bytes differ, rows {sorted(set(np.nonzero(wrong)[0]))}"


@pytest.mark.unit
def test_live_cpu_quantiser_equals_our_flavour_bit_for_bit(ggml):
    flavour = ggml.live_flavour()
    if flavour is None:
        pytest.skip(f"no q8_blocks flavour models this ISA ({platform.machine()})")
    if flavour == "x86":
        assert ggml.has("avx2"), "the AVX-only (not AVX2) build has the same arithmetic; this one is expected AVX2"
    x = np.concatenate([hard_rows(), _id_flip_rows(8)])
    live = ggml.from_float(x, GGML_TYPE_Q8_0)
    q, d = quantize_q8_0(x, flavour)
    _assert_bits(q, live["qs"].reshape(q.shape), f"{flavour} Q8_0 q")
    _assert_bits(d, _half(live["d"]), f"{flavour} Q8_0 d")
    live = ggml.from_float(x, GGML_TYPE_Q8_1)
    q, d, s = quantize_q8_1(x, flavour)
    _assert_bits(q, live["qs"].reshape(q.shape), f"{flavour} Q8_1 q")
    _assert_bits(d, _half(live["d"]), f"{flavour} Q8_1 d")
    _assert_bits(s, _half(live["s"]), f"{flavour} Q8_1 s")


@pytest.mark.unit
@pytest.mark.parametrize("name", ["ggml_quantize_mat_q8_0_4x8", "ggml_quantize_mat_q8_0_4x4"])
def test_repacked_paths_quantiser_is_a_flavour_per_row(ggml, name):
    """The 4-row interleaved quantiser of the repacked (Q4_0 4x4 / 4x8 / 8x8, Q8_0 4x4 / 4x8) matmuls."""
    if not hasattr(ggml.cpu, name):
        pytest.skip(f"{name} is not exported by this build")
    flavour = ggml.live_flavour()
    if flavour == "x86" and name.endswith("4x4"):
        flavour = "reference"  # x86 has no 4x4 of its own: ggml_quantize_mat_q8_0_4x4_generic
    x = np.concatenate([hard_rows(), _id_flip_rows(8)])
    x = x[: len(x) // 4 * 4]
    for i in range(0, len(x), 4):
        q, d = ggml.quantize_mat(name, np.ascontiguousarray(x[i:i + 4]))
        ours_q, ours_d = quantize_q8_0(x[i:i + 4], flavour)
        _assert_bits(ours_q, q, f"{name} vs {flavour} q, rows {i}..{i + 3}")
        _assert_bits(ours_d, d, f"{name} vs {flavour} d, rows {i}..{i + 3}")


@pytest.mark.unit
def test_reference_flavour_equals_ggml_quantize_chunk(ggml):
    x = np.concatenate([hard_rows(), _id_flip_rows(8)])
    chunk = ggml.quantize_chunk_q8_0(x)
    q, d = quantize_q8_0(x, "reference")
    _assert_bits(q, chunk["qs"].reshape(q.shape), "reference Q8_0 q")
    _assert_bits(d, _half(chunk["d"]), "reference Q8_0 d")
    ref = ggml.quantize_row_q8_1_ref(x)
    q, d, s = quantize_q8_1(x, "reference")
    _assert_bits(q, ref["qs"].reshape(q.shape), "reference Q8_1 q")
    _assert_bits(d, _half(ref["d"]), "reference Q8_1 d")
    _assert_bits(s, _half(ref["s"]), "reference Q8_1 s")


def _normal_range(x: np.ndarray) -> np.ndarray:
    """Blocks [M, K/32] whose id is finite under every formula (amax 0, or well above 127 / FLT_MAX)."""
    amax = np.abs(x.reshape(x.shape[0], -1, QK)).max(axis=-1)
    return (amax == 0) | (amax > F(1e-36))


@pytest.mark.unit
def test_arm_differs_from_x86_only_by_the_id_formula():
    x = np.concatenate([hard_rows(), _id_flip_rows(8)])
    ok = _normal_range(x)
    arm, x86 = quantize_q8_1(x, "arm"), quantize_q8_1(x, "x86")
    amax = np.abs(x.reshape(x.shape[0], -1, QK)).max(axis=-1)
    with np.errstate(divide="ignore", over="ignore"):
        same_id = (F(127) / amax) == (F(1) / (amax / F(127)))
    q_differs = (arm[0] != x86[0]).reshape(x.shape[0], -1, QK).any(axis=-1)
    assert not (q_differs & ok & same_id).any(), "arm and x86 disagree on a block where their ids agree"
    np.testing.assert_array_equal(arm[1], x86[1])  # d is amax / 127 on both
    np.testing.assert_array_equal(arm[2][ok & ~q_differs], x86[2][ok & ~q_differs])
    flips = _id_flip_rows(8)
    assert (quantize_q8_0(flips, "arm")[0] != quantize_q8_0(flips, "x86")[0]).reshape(-1, QK).any(axis=-1).all(), (
        "every constructed block should flip a rounding between 127/amax and 1/(amax/127)")
    differ = np.abs(arm[0].astype(int) - x86[0].astype(int))
    assert differ[np.repeat(ok, QK, axis=1)].max() == 1


@pytest.mark.unit
def test_reference_differs_from_arm_only_at_exact_ties():
    x = hard_rows()
    ok = np.repeat(_normal_range(x), QK, axis=1)
    ref, arm = quantize_q8_0(x, "reference")[0], quantize_q8_0(x, "arm")[0]
    amax = np.abs(x.reshape(x.shape[0], -1, QK)).max(axis=-1)
    d = amax / F(127)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # id = inf outside `ok`
        v = x * np.repeat(np.where(d != 0, F(1) / d, F(0)).astype(F), QK, axis=1)
        tie = ok & (np.abs(v - np.trunc(v)) == F(0.5))
        odd_away = np.abs(np.trunc(v)) % 2 == 0  # |v| = 2j + 0.5: roundf says 2j + 1, rint 2j
    assert tie.sum() > 100
    assert np.array_equal((ref != arm) & ok, tie & odd_away), (
        "roundf and rint must differ exactly at ties whose away-from-zero neighbour is odd")


@pytest.mark.unit
@pytest.mark.parametrize("flavour", ["x86", "arm", "reference"])
def test_dequantised_within_half_a_step(flavour):
    x = hard_rows()
    ok = _normal_range(x)
    q, d16, s = quantize_q8_1(x, flavour)
    blocks = x.astype(np.float64).reshape(x.shape[0], -1, QK)
    step = np.abs(blocks).max(axis=-1) / 127  # the exact scale, before float32 and fp16 rounding
    err = np.abs(q.reshape(blocks.shape) * step[..., None] - blocks)
    assert (err <= step[..., None] * (0.5 + 1e-5))[ok].all()
    assert (np.abs(q) <= 127)[np.repeat(ok, QK, axis=1)].all()
    normal16 = ok & (step >= 2.0**-14) & (step <= 65504)
    assert (np.abs(d16 - step) <= step * 2.0**-11)[normal16].all(), "d is fp16(amax / 127), nearest"
    with np.errstate(invalid="ignore"):  # d = inf (amax / 127 > 65504) times a zero sum
        sums = q.reshape(blocks.shape).sum(axis=-1) * d16  # s = d * sum(q), to fp16 precision
        in_range = normal16 & (np.abs(sums) < 60000)
        assert (np.abs(s - sums) <= np.abs(sums) * 2.0**-9 + 2.0**-24)[in_range].all()

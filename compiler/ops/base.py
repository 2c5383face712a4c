"""What every op definition shares: spec construction and naming, argument descriptions, placeholders.

An op's arguments are described once, as `Arg`s; the tensor expression's placeholders, the
manifest's argument list and the loader's validation and weight packing all come from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from compiler.specs import KernelSpec

# Attention's masked score: finite, so exp(NEG_INF - m) is 0 without inf - inf = NaN.
NEG_INF = -3.0e38

Shape = tuple[int | str, ...]


@dataclass(frozen=True)
class Arg:
    """One kernel argument as the manifest and loader see it.

    role: "input" (activation), "weight" (packed once with `pack`) or "output".
    logical_shape/logical_dtype: what the user hands to `pack` when it differs from the kernel's form.
    pack: numpy steps (interpreted by the loader) that turn the logical weight into the kernel's form.
    source: for a weight computed from another logical weight (e.g. column sums of `w`), its name.
    """

    name: str
    shape: Shape
    dtype: str
    role: str
    logical_shape: Shape | None = None
    logical_dtype: str | None = None
    pack: tuple[dict[str, Any], ...] = ()
    doc: str = ""
    source: str | None = None  # the logical weight this one is derived from (by `pack`), if not itself
    # The outermost axis may have any stride (e.g. a view of the first L rows of a longer KV cache);
    # the other axes must be contiguous.
    strided: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "role": self.role}
        if self.strided:
            out["strided"] = True
        if self.logical_shape is not None:
            out["logical_shape"] = list(self.logical_shape)
            out["logical_dtype"] = self.logical_dtype
            out["pack"] = [dict(s) for s in self.pack]
        if self.source:
            out["source"] = self.source
        if self.doc:
            out["doc"] = self.doc
        return out


@dataclass(frozen=True)
class Option:
    default: Any
    choices: tuple[Any, ...] | None = None  # None: any value of the default's type
    tag: Callable[[Any], str] | None = None  # how the option appears in the spec name ("" to omit)


@dataclass
class OpDef:
    """An op family member. Subclasses fill in `arguments`, `build`, `reference`, `random_inputs`."""

    name: str
    dims: tuple[str, ...]
    options: dict[str, Option] = field(default_factory=dict)

    # -- specs -------------------------------------------------------------------------------
    def make(self, **values: Any) -> KernelSpec:
        unknown = set(values) - set(self.dims) - set(self.options)
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter(s) {sorted(unknown)}; "
                             f"dims {list(self.dims)}, options {list(self.options)}")
        dims = []
        for d in self.dims:
            if d not in values:
                raise ValueError(f"{self.name}: missing dim {d!r}")
            v = values[d]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"{self.name}: dim {d!r} must be a positive integer, got {v!r}")
            dims.append((d, int(v)))
        opts = []
        for o, option in self.options.items():
            v = values.get(o, option.default)
            if option.choices is not None and v not in option.choices:
                raise ValueError(f"{self.name}: option {o!r} must be one of {list(option.choices)}, got {v!r}")
            if option.choices is None and type(v) is not type(option.default):
                raise ValueError(f"{self.name}: option {o!r} must be a {type(option.default).__name__}, got {v!r}")
            opts.append((o, v))
        spec = KernelSpec(self.name, tuple(dims), tuple(opts))
        self.validate(spec)
        return spec

    def validate(self, spec: KernelSpec) -> None:
        """Raise ValueError when the dims cannot be built (e.g. not divisible by a group size)."""

    def spec_name(self, spec: KernelSpec) -> str:
        parts = [self.name]
        for o, option in self.options.items():
            v = spec.opt(o)
            tag = option.tag(v) if option.tag else (o if v is True else "" if v is False else f"{o}{v}")
            if tag:
                parts.append(tag)
        parts += [f"{d}{v}" for d, v in spec.dims]
        return "_".join(parts)

    # -- per op --------------------------------------------------------------------------------
    def arguments(self, spec: KernelSpec, layout) -> list[Arg]:
        raise NotImplementedError

    def dims_at_least(self, spec: KernelSpec) -> dict[str, str]:
        """Runtime dims that may not be smaller than another ({"L": "S"}): the loader checks them."""
        return {}

    def build(self, spec: KernelSpec, layout):
        """The kernel as a TVM PrimFunc (unscheduled)."""
        raise NotImplementedError

    def reference(self, spec: KernelSpec, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs from logical inputs, in numpy (float64 for float math)."""
        raise NotImplementedError

    # Allowed error per output: |out - ref| <= atol * max|ref| + rtol * |ref|. 0, 0 means bit-exact.
    tolerance: ClassVar[tuple[float, float]] = (1e-4, 1e-4)
    # Products in fp16 (layout float_math "float16", GPUs with fast fp16): each activation and each
    # product rounds to 11 significant bits (2^-12 relative), several times the fp32 error.
    fp16_tolerance: ClassVar[tuple[float, float]] = (2e-3, 2e-3)

    def default_tolerance(self, layout) -> tuple[float, float]:
        return self.fp16_tolerance if layout.float_math == "float16" else self.tolerance

    def layout_reference(self, spec: KernelSpec, layout, **inputs) -> dict[str, np.ndarray]:
        """The reference for a kernel built with `layout`: `reference`, unless the layout computes
        a documented approximation of it (attention rounding its query to int8 for integer dot
        products), which this then computes exactly."""
        return self.reference(spec, **inputs)

    def tolerances(self, spec: KernelSpec, layout) -> dict[str, tuple[float, float]]:
        return {}  # per-output overrides of default_tolerance(layout)

    def flops(self, spec: KernelSpec, sizes: dict[str, int]) -> float:
        """Arithmetic of one call (multiply-add = 2), for GFLOP/s."""
        raise NotImplementedError

    def bytes_moved(self, spec: KernelSpec, sizes: dict[str, int], layout) -> float:
        """Bytes one call must read and write at least: every argument once, weights as packed."""
        return float(sum(int(np.prod([sizes.get(d, d) for d in a.shape])) * np.dtype(a.dtype).itemsize
                         for a in self.arguments(spec, layout)))

    def random_inputs(self, spec: KernelSpec, sizes: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Logical inputs and weights of realistic magnitude, for tests and benchmarks."""
        raise NotImplementedError


def check_divisible(op: str, what: str, value: int, by: int) -> None:
    if value % by:
        raise ValueError(f"{op}: {what}={value} must be a multiple of {by}")


class Placeholders:
    """te placeholders for a kernel's Args, with one te.var per symbolic dim name, or a constant
    for the dims the layout's length bucket fixes (e.g. {"M": 1} for the decode variant)."""

    def __init__(self, args: list[Arg], layout=None):
        from tvm import te

        # Only exact buckets fix a dim; a range bucket ({"L": [1, 512]}) leaves it dynamic.
        self.vars: dict[str, Any] = {d: v for d, v in (layout.bucket if layout is not None else {}).items() if isinstance(v, int)}
        self.tensors: dict[str, Any] = {}
        self.reduction_starts: list[tuple[str, str]] = []  # (block, start buffer): reduction_start.with_start
        for a in args:
            if a.role == "output":
                continue
            shape = [self.var(s) if isinstance(s, str) else s for s in a.shape]
            self.tensors[a.name] = te.placeholder(shape, a.dtype, name=a.name)

    def var(self, name: str):
        from tvm import te

        if name not in self.vars:
            self.vars[name] = te.var(name, "int32")
        return self.vars[name]

    def __getitem__(self, name: str):
        return self.tensors[name]

    def prim_func(self, args: list[Arg], outputs: dict[str, Any]):
        from tvm import te

        from compiler.ops.reduction_start import with_start

        order = [self.tensors[a.name] if a.role != "output" else outputs[a.name] for a in args]
        func = te.create_prim_func(order)
        for start in self.reduction_starts:
            func = with_start(func, *start)
        return func


def int4_nibble(byte, high):
    """Signed 4-bit value held in an int8 `byte` (low nibble: high=0): shift it to the top, shift back."""
    return (byte.astype("int32") << (28 - 4 * high)) >> 28


def padded_rows(m, m_tile: int):
    """(row count, row index map) for a GEMM's accumulator computed in whole tiles of m_tile rows:
    the rows past m re-read row m-1 and are never stored, so no tile needs a bounds predicate
    (predicates stop tensorisation). m_tile=1 is the plain m rows."""
    from tvm import te

    if m_tile == 1:
        return m, lambda i: i
    return (m + m_tile - 1) // m_tile * m_tile, lambda i: te.min(i, m - 1)

"""Kernel specs: plain data naming one kernel (op, static dims, options). The name is the tuning key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


_REQUIRED = object()


@dataclass(frozen=True)
class KernelSpec:
    op: str
    dims: tuple[tuple[str, int], ...]
    options: tuple[tuple[str, Any], ...] = field(default=())

    def dim(self, name: str) -> int:
        return dict(self.dims)[name]

    def opt(self, name: str, default: Any = _REQUIRED) -> Any:
        """An option's value; `default` for an option this spec's op does not have (else KeyError)."""
        options = dict(self.options)
        if name not in options and default is not _REQUIRED:
            return default
        return options[name]

    @property
    def name(self) -> str:
        from compiler import ops

        return ops.get(self.op).spec_name(self)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "dims": dict(self.dims), "options": dict(self.options)}


def make_spec(op: str, **values: Any) -> KernelSpec:
    """Build a validated spec: static dims and options by keyword, defaults filled in."""
    from compiler import ops

    return ops.get(op).make(**values)


def variant_symbol(spec: KernelSpec, bucket: dict) -> str:
    """Exported name of one length variant: the spec name, plus e.g. "__m1" for the M=1 bucket
    or "__l1to512" for the range bucket L in [1, 512]."""
    def part(dim, value):
        return f"__{dim.lower()}{value[0]}to{value[1]}" if isinstance(value, list) else f"__{dim.lower()}{value}"

    return spec.name + "".join(part(dim, value) for dim, value in sorted(bucket.items()))

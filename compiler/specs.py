"""Kernel specs: plain data naming one kernel (op, static dims, options). The name is the tuning key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KernelSpec:
    op: str
    dims: tuple[tuple[str, int], ...]
    options: tuple[tuple[str, Any], ...] = field(default=())

    def dim(self, name: str) -> int:
        return dict(self.dims)[name]

    def opt(self, name: str) -> Any:
        return dict(self.options)[name]

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

"""Next-token choice from logits: greedy, or temperature with nucleus (top-p) truncation."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sampler:
    temperature: float = 0.0  # 0: greedy (argmax)
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        """Refuse bad settings here, by name and value, before a model is built: numpy would
        otherwise refuse them mid-generation in its own words (a NaN temperature, a negative seed)."""
        if not (isinstance(self.temperature, numbers.Real) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, numbers.Real) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def pick(self, logits: np.ndarray, rng: np.random.Generator) -> int:
        if self.temperature == 0.0:
            return int(np.argmax(logits))
        with np.errstate(over="ignore"):
            z = logits.astype(np.float64) / self.temperature
        if not np.isfinite(z.max()):  # a temperature so small that logits overflow: its limit is greedy
            return int(np.argmax(logits))
        p = np.exp(z - z.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        cumulative = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cumulative, self.top_p)) + 1]  # the smallest set reaching top_p
        return int(rng.choice(keep, p=p[keep] / p[keep].sum()))

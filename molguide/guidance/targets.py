"""Property targets: which property, how it becomes classes, and what "better" means.

A target is fitted on the training values once (quantile edges are data-dependent)
and stored with every model that uses it, so a classifier and the sampler that
reads it always agree on what class 2 of ``gap_eV`` means.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np


@dataclass
class PropertyTarget:
    """A property, its binning, and the goal of guidance.

    Args:
        name: the property's name with its unit (``gap_eV``, ``mu_D``, ...).
        n_bins: number of quantile bins (ignored when ``thresholds`` is given).
        thresholds: explicit bin edges in the property's unit (K - 1 values, increasing).
        target: "high" (the top bin), "low" (the bottom bin) or a bin index.
        target_value: a value to hit instead of a class (EDM's conditional protocol).
        edges: the fitted inner edges (filled by :meth:`fit`).
    """

    name: str = "gap_eV"
    n_bins: int = 3
    thresholds: list[float] | None = None
    target: Literal["high", "low"] | int = "high"
    target_value: float | None = None
    edges: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.thresholds is not None:
            if list(self.thresholds) != sorted(self.thresholds) or len(self.thresholds) == 0:
                raise ValueError(f"target.thresholds must be increasing and non-empty, got {self.thresholds}")
            self.n_bins = len(self.thresholds) + 1
        if self.n_bins < 2:
            raise ValueError(f"target.n_bins must be >= 2, got {self.n_bins}")
        if isinstance(self.target, int) and not 0 <= self.target < self.n_bins:
            raise ValueError(f"target bin {self.target} is outside 0..{self.n_bins - 1}")
        if isinstance(self.target, str) and self.target not in ("high", "low"):
            raise ValueError(f"target must be 'high', 'low' or a bin index, got {self.target!r}")

    def fit(self, values: np.ndarray) -> PropertyTarget:
        """Set the bin edges from training values (quantiles unless thresholds are given)."""
        values = np.asarray(values, dtype=float)
        if not np.isfinite(values).all():
            raise ValueError(f"{self.name}: {int((~np.isfinite(values)).sum())} non-finite values")
        if self.thresholds is not None:
            self.edges = [float(v) for v in self.thresholds]
        else:
            qs = np.linspace(0, 1, self.n_bins + 1)[1:-1]
            self.edges = [float(v) for v in np.quantile(values, qs)]
        return self

    @property
    def fitted(self) -> bool:
        return len(self.edges) == self.n_bins - 1

    def labels(self, values: np.ndarray) -> np.ndarray:
        """Class index of every value (bin i holds edges[i-1] <= v < edges[i])."""
        if not self.fitted:
            raise RuntimeError("call fit() on training values first")
        return np.searchsorted(np.asarray(self.edges), np.asarray(values, dtype=float), side="right")

    @property
    def target_class(self) -> int:
        if self.target == "high":
            return self.n_bins - 1
        if self.target == "low":
            return 0
        return int(self.target)

    @property
    def direction(self) -> float:
        """+1 when larger values are better for this target, -1 when smaller are."""
        if self.target_value is not None:
            return 0.0
        if self.target == "high" or (isinstance(self.target, int) and self.target >= self.n_bins / 2):
            return 1.0
        return -1.0

    def hits(self, values: np.ndarray) -> np.ndarray:
        """Whether each value lands in the target class."""
        return self.labels(values) == self.target_class

    def describe(self) -> str:
        edges = ", ".join(f"{e:.4g}" for e in self.edges)
        return f"{self.name}: {self.n_bins} bins (edges {edges}), target class {self.target_class}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> PropertyTarget:
        return cls(**state)


def reward_logits(
    values: np.ndarray, beta: float, direction: float, mean: float, std: float, clip_z: float | None = None
) -> np.ndarray:
    """log r = beta * direction * z with z = (value - mean) / std, z clipped to [-clip_z, clip_z].

    Clipping keeps a long tail (QM9's gap: methane sits 7.8 standard deviations up)
    from handing the whole training to a few molecules.
    """
    z = (np.asarray(values, dtype=float) - mean) / max(std, 1e-12)
    if clip_z is not None:
        z = np.clip(z, -clip_z, clip_z)
    return beta * direction * z


def reward_weights(
    values: np.ndarray, beta: float, direction: float = 1.0, clip_z: float | None = None
) -> tuple[np.ndarray, float]:
    """Normalised weights r = exp(beta * direction * z) / mean, z the standardised property.

    Standardising makes beta unit-free (beta = 1: one standard deviation of the
    property multiplies the weight by e); ``clip_z`` bounds z (see :func:`reward_logits`).
    Returns (weights with mean 1, effective sample size fraction (sum r)^2 / (n sum r^2));
    a small ESS means few molecules carry the training, the failure mode of reward weighting.
    """
    values = np.asarray(values, dtype=float)
    logits = reward_logits(values, beta, direction, values.mean(), values.std(), clip_z)
    w = np.exp(logits - logits.max())
    w = w / w.mean()
    return w, effective_sample_size(w) / len(w)


def effective_sample_size(weights: np.ndarray) -> float:
    """(sum w)^2 / sum w^2."""
    w = np.asarray(weights, dtype=float)
    return float(w.sum() ** 2 / (w**2).sum())

"""Improvement statistics with honest intervals: paired bootstrap, hit rates, E[1/p].

Guided and unguided samples are paired: sample i of both runs starts from the same
node count and the same initial noise, so their difference removes most of the
between-molecule variance. A pair counts only when both molecules have an oracle
value; how many pairs were used is always reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Interval:
    """A statistic with its bootstrap 95 % interval and the number of values behind it."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    def as_metrics(self, name: str) -> dict[str, float]:
        return {name: self.value, f"{name}_ci_low": self.ci_low, f"{name}_ci_high": self.ci_high}


def bootstrap_mean(values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Mean of ``values`` (non-finite entries skipped) with a percentile bootstrap interval."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(v.mean()), float(lo), float(hi), len(v))


def paired_improvement(
    guided: np.ndarray, unguided: np.ndarray, direction: float = 1.0, n_boot: int = 2000, seed: int = 0
) -> tuple[Interval, float]:
    """direction * (guided - unguided) over pairs where both are finite.

    Returns the mean difference with its bootstrap interval, and the fraction of
    pairs in which the guided molecule is better.
    """
    g, u = np.asarray(guided, dtype=float), np.asarray(unguided, dtype=float)
    if g.shape != u.shape:
        raise ValueError(f"paired samples need equal lengths, got {g.shape} and {u.shape}")
    diff = direction * (g - u)
    both = np.isfinite(diff)
    interval = bootstrap_mean(diff[both], n_boot, seed)
    improved = float((diff[both] > 0).mean()) if both.any() else float("nan")
    return interval, improved


def difference_of_means(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """mean(a) - mean(b) of two independent samples (non-finite entries skipped), with a
    percentile bootstrap interval that resamples each sample on its own."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    mean_a = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
    diffs = mean_a - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(a.mean() - b.mean()), float(lo), float(hi), min(len(a), len(b)))


def inverse_probability_summary(p: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """E[1/p(y|x)] statistics: heavy-tailed, so mean with interval, median and quantiles."""
    p = np.asarray(p, dtype=float)
    inv = 1.0 / np.clip(p[np.isfinite(p)], 1e-12, None)
    if len(inv) == 0:
        return {}
    mean = bootstrap_mean(inv, n_boot, seed)
    q10, q50, q90 = np.quantile(inv, [0.1, 0.5, 0.9])
    return {
        "inv_prob_mean": mean.value,
        "inv_prob_mean_ci_low": mean.ci_low,
        "inv_prob_mean_ci_high": mean.ci_high,
        "inv_prob_median": float(q50),
        "inv_prob_q10": float(q10),
        "inv_prob_q90": float(q90),
    }


def nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries; nan (without a warning) when there are none."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if len(finite) else math.nan


def is_finite_number(value: object) -> bool:
    """Whether ``value`` is an int or float that is not NaN or infinite (what MLflow can log)."""
    return isinstance(value, (int, float)) and math.isfinite(value)

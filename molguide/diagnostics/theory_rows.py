"""The theory beside the protocol's rows (docs/theory.md, docs/protocol.md).

For each property and guidance kind: the guidance network's cross-entropy integrated
over noise levels (the classifier's CE, or the regressor's negative log-likelihood, both
cross-entropies) and the guidance-error estimate it implies (a bound unless a CFG model
gave it); for each judged row, E[1/p(c|x)] of its molecules, with p(c|x) the probability
that the property lies in the bin of the molecule's own target under the evaluator's
Gaussian N(prediction, RMSE^2). Across properties, the rank correlation of the conditional
MAE (relative to unguided) with the integrated CE and with the guidance-error estimate
tests the ordering the theory predicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from molguide.diagnostics.statistics import inverse_probability_summary
from molguide.guidance.targets import PropertyTarget


def integrated_cross_entropy(noise_levels: Sequence[dict], key: str) -> float | None:
    """The mean of ``key`` over equal-width noise-level bins: its integral over t in [0, 1]."""
    values = [row[key] for row in noise_levels if row.get(key) is not None]
    return float(np.mean(values)) if values else None


def network_theory(kind: str, record) -> dict[str, float | str | None]:
    """What a guidance kind's network says about its guidance error, from its record."""
    rows = getattr(record, "noise_levels", None) or []
    if kind == "classifier":
        n_bins = record.property_target.n_bins
        return {
            "integrated_ce": integrated_cross_entropy(rows, "classifier_ce"),
            "chance_ce": math.log(n_bins),
            "guidance_mse_est": integrated_cross_entropy(rows, "guidance_mse_est"),
            "guidance_mse_kind": "/".join(sorted({str(r.get("guidance_mse_kind")) for r in rows})) or None,
        }
    if kind in ("density", "energy"):  # the regressor's NLL, nats of the standardised property
        return {"integrated_nll": integrated_cross_entropy(rows, "regressor_nll")}
    return {}


def target_bin_probability(
    pred: np.ndarray, targets: np.ndarray, rmse: float, binning: PropertyTarget
) -> np.ndarray:
    """P(y in the bin of each molecule's own target | x) for y ~ N(pred, rmse^2)."""
    from scipy.stats import norm

    edges = np.array([-np.inf, *binning.edges, np.inf])
    labels = binning.labels(targets)
    lo, hi = edges[labels], edges[labels + 1]
    return norm.cdf((hi - pred) / rmse) - norm.cdf((lo - pred) / rmse)


def inverse_target_probability(
    pred: np.ndarray, targets: np.ndarray, rmse: float, binning: PropertyTarget
) -> dict[str, float]:
    """E[1/p(c|x)] statistics of one row's molecules (lost molecules left out)."""
    pred, targets = np.asarray(pred, dtype=float), np.asarray(targets, dtype=float)
    ok = np.isfinite(pred)
    return inverse_probability_summary(target_bin_probability(pred[ok], targets[ok], rmse, binning))


def rank_correlation(x: Sequence[float | None], y: Sequence[float | None]) -> dict[str, float | int | None]:
    """Spearman's rho of the pairs where both are finite, its p-value and how many pairs."""
    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and np.isfinite([a, b]).all()]
    if len(pairs) < 3:
        return {"rho": None, "p_value": None, "n": len(pairs)}
    from scipy.stats import spearmanr

    result = spearmanr(*zip(*pairs))
    return {"rho": float(result.statistic), "p_value": float(result.pvalue), "n": len(pairs)}


def theory_points(per_property: dict[str, dict]) -> list[dict]:
    """One point per property and guidance kind with a judged row: the network's integrated
    cross-entropy (a classifier's as a fraction of chance, log K; a regressor's NLL), its
    guidance-error estimate, the row's MAE relative to unguided and its E[1/p(c|x)] median."""
    points = []
    for prop, result in per_property.items():
        theory = result.get("theory") or {}
        for kind, net in theory.get("networks", {}).items():
            if not net:  # (CFG: its guidance error needs the classifier beside it; not yet here)
                continue
            row = theory.get("rows", {}).get(f"{kind}_selected")
            if row is None:  # a sweep: the kind's rows are named by weight
                row = next(
                    (r for name, r in theory.get("rows", {}).items() if name.startswith(f"{kind}_w")), None
                )
            if row is None:
                continue
            ce = net.get("integrated_ce")
            points.append(
                {
                    "property": prop,
                    "kind": kind,
                    "cross_entropy": ce / net["chance_ce"] if ce is not None else net.get("integrated_nll"),
                    "cross_entropy_kind": "CE / log K" if ce is not None else "NLL (nats, standardised)",
                    "guidance_mse_est": net.get("guidance_mse_est"),
                    "mae_ratio": row.get("mae_ratio"),
                    "inv_prob_median": row.get("inv_prob_median"),
                }
            )
    return points


def theory_correlations(points: list[dict]) -> dict[str, dict]:
    """Per kind, Spearman's rho of the MAE ratio with the cross-entropy and with the
    guidance-error estimate across properties (the theory predicts both positive)."""
    out = {}
    for kind in dict.fromkeys(p["kind"] for p in points):
        mine = [p for p in points if p["kind"] == kind]
        ratio = [p["mae_ratio"] for p in mine]
        out[kind] = {
            "mae_vs_cross_entropy": rank_correlation([p["cross_entropy"] for p in mine], ratio),
            "mae_vs_guidance_error": rank_correlation([p["guidance_mse_est"] for p in mine], ratio),
        }
    return out

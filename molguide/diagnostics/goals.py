"""How far guided molecules moved towards each goal, against unguided molecules.

Per goal (:class:`~molguide.guidance.goals.Goal`), from the evaluator's predictions of
both sets: the improvement with its bootstrap 95 % interval, in the property's unit,

- "high" / "low": the shift of the mean in the goal's direction;
- a value: how much closer the mean distance to the value came (unguided minus guided
  mean |y - value|);
- a bin: the rise of the hit rate;

and the hit rates of both sets; with several goals, the joint hit rates (every goal met
by the same molecule).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from molguide.diagnostics.statistics import difference_of_means
from molguide.guidance.goals import Goal
from molguide.guidance.targets import PropertyTarget


def goal_improvements(
    goals: list[Goal],
    guided: Mapping[str, np.ndarray],
    unguided: Mapping[str, np.ndarray],
    binnings: Mapping[str, PropertyTarget | None],
    seed: int = 0,
) -> dict[str, float]:
    """Metrics ``<property>_improvement`` (with ``_ci_low`` / ``_ci_high``),
    ``<property>_hit_rate`` / ``_hit_rate_unguided`` and ``joint_hit_rate`` /
    ``joint_hit_rate_unguided`` of the goals whose property both sets have predictions for
    (hit rates only where the goal can be judged: a binning, or a value with a tolerance)."""
    metrics: dict[str, float] = {}
    hits: dict[str, list[np.ndarray]] = {"guided": [], "unguided": []}
    for goal in goals:
        if goal.property not in guided or goal.property not in unguided:
            continue
        g = np.asarray(guided[goal.property], dtype=float)
        u = np.asarray(unguided[goal.property], dtype=float)
        binning = binnings.get(goal.property)
        judged = binning is not None or goal.judged_without_bins()
        if goal.kind == "bin" and not judged:
            continue  # a bin goal's improvement is its hit rate, which needs the bins
        if goal.kind in ("high", "low"):
            interval = difference_of_means(goal.direction * g, goal.direction * u, seed=seed)
        elif goal.kind == "value":
            interval = difference_of_means(-np.abs(g - goal.value), -np.abs(u - goal.value), seed=seed)
        else:
            interval = difference_of_means(
                goal.hits(g, binning) * 1.0, goal.hits(u, binning) * 1.0, seed=seed
            )
        metrics.update(interval.as_metrics(f"{goal.property}_improvement"))
        if not judged:
            continue
        g_hits, u_hits = goal.hits(g, binning), goal.hits(u, binning)
        metrics[f"{goal.property}_hit_rate"] = float(g_hits.mean())
        metrics[f"{goal.property}_hit_rate_unguided"] = float(u_hits.mean())
        hits["guided"].append(g_hits)
        hits["unguided"].append(u_hits)
    if len(goals) > 1 and len(hits["guided"]) == len(goals):
        metrics["joint_hit_rate"] = float(np.logical_and.reduce(hits["guided"]).mean())
        metrics["joint_hit_rate_unguided"] = float(np.logical_and.reduce(hits["unguided"]).mean())
    return metrics

"""The reference rows of EDM's conditional table: what a generator is measured against.

- ``naive``: the evaluator's predictions against shuffled targets (a generator that
  ignores its target);
- ``atoms``: a predictor that sees only the atom count (EDM's #Atoms row);
- ``lower_bound``: the evaluator against the real molecules' own values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from molguide.data.molecules import MoleculeSet
from molguide.diagnostics.statistics import nanmean


def atom_count_predictor(mols: MoleculeSet, prop: str) -> Callable[[np.ndarray], np.ndarray]:
    """EDM's #Atoms row: the mean property per atom count (global mean for unseen counts)."""
    values, counts = mols.properties[prop], mols.num_atoms
    table = {int(n): float(values[counts == n].mean()) for n in np.unique(counts)}
    fallback = float(values.mean())
    return lambda n: np.array([table.get(int(k), fallback) for k in n])


def mean_absolute_error(pred: np.ndarray, targets: np.ndarray) -> float:
    """Mean |pred - target| over the entries where ``pred`` is finite (NaN marks a lost sample)."""
    pred, targets = np.asarray(pred, dtype=float), np.asarray(targets, dtype=float)
    if pred.shape != targets.shape:
        raise ValueError(f"{pred.shape} predictions for {targets.shape} targets")
    return nanmean(np.abs(pred - targets))


def reference_maes(
    pred_real: np.ndarray, targets: np.ndarray, atoms_pred: np.ndarray, rng: np.random.Generator
) -> dict[str, float]:
    """EDM's three reference rows on real molecules whose own property values are ``targets``.

    - ``naive``: the evaluator's predictions against the targets shuffled (a permutation
      that breaks the molecule-target pairing): what a generator that ignores the
      target would score;
    - ``atoms``: a predictor that sees only the atom count, against the targets;
    - ``lower_bound``: the evaluator's predictions against the molecules' own values
      (its error on real molecules, which no generator judged by it can beat on average).
    """
    targets = np.asarray(targets, dtype=float)
    return {
        "naive": mean_absolute_error(pred_real, rng.permutation(targets)),
        "atoms": mean_absolute_error(atoms_pred, targets),
        "lower_bound": mean_absolute_error(pred_real, targets),
    }

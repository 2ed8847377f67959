"""Chemistry: bonds from coordinates, EDM stability, validity/uniqueness/novelty, oracles."""

from molguide.chem.evaluate import METRIC_NAMES, Evaluation, evaluate, evaluate_molecule
from molguide.chem.reconstruct import rebuild_molecule
from molguide.chem.stability import atom_stability, bond_orders

__all__ = [
    "METRIC_NAMES",
    "Evaluation",
    "atom_stability",
    "bond_orders",
    "evaluate",
    "evaluate_molecule",
    "rebuild_molecule",
]

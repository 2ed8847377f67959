"""EDM's atom and molecule stability, from interatomic distances alone.

Reference bond lengths (pm) for single, double and triple bonds with margins of
10, 5 and 3 pm (docs/protocol.md). A pair's bond order is the highest order
whose threshold (length + margin) the distance is under; an atom is stable when
its summed bond order equals its valence; a molecule when all its atoms are.
"""

from __future__ import annotations

import numpy as np

from molguide.data.elements import atomic_number

_BOND_LENGTHS_PM: dict[tuple[str, str], tuple[float, ...]] = {
    ("H", "H"): (74,), ("H", "C"): (109,), ("H", "N"): (101,), ("H", "O"): (96,),
    ("H", "F"): (92,), ("C", "C"): (154, 134, 120), ("C", "N"): (147, 129, 116),
    ("C", "O"): (143, 120, 113), ("C", "F"): (135,), ("N", "N"): (145, 125, 110),
    ("N", "O"): (140, 121), ("N", "F"): (136,), ("O", "O"): (148, 121),
    ("O", "F"): (142,), ("F", "F"): (142,),
}  # fmt: skip
MARGINS_PM = (10.0, 5.0, 3.0)
VALENCE = {1: 1, 6: 4, 7: 3, 8: 2, 9: 1}
SUPPORTED = frozenset(VALENCE)


def _threshold_table() -> np.ndarray:
    """thresholds[z1, z2, k] in Angstrom for bond order k+1; +inf-free: absent = -1."""
    table = np.full((10, 10, 3), -1.0)
    for (a, b), lengths in _BOND_LENGTHS_PM.items():
        za, zb = atomic_number(a), atomic_number(b)
        for k, length in enumerate(lengths):
            table[za, zb, k] = table[zb, za, k] = (length + MARGINS_PM[k]) / 100.0
    return table


THRESHOLDS_A = _threshold_table()


def bond_orders(atomic_numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Matrix of EDM bond orders (0-3) between all atom pairs of one molecule."""
    z = np.asarray(atomic_numbers, dtype=np.int64)
    pos = np.asarray(positions, dtype=np.float64)
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    thresholds = THRESHOLDS_A[z[:, None], z[None, :]]  # (n, n, 3)
    # Thresholds shrink with order, so the count of thresholds passed is the order.
    orders = (dist[..., None] < thresholds).sum(-1)
    np.fill_diagonal(orders, 0)
    return orders


def atom_stability(atomic_numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Boolean per atom: summed bond order equals the element's valence.

    Raises ValueError for elements outside H, C, N, O, F (no EDM bond table).
    """
    z = np.asarray(atomic_numbers, dtype=np.int64)
    unknown = sorted(set(z.tolist()) - SUPPORTED)
    if unknown:
        raise ValueError(f"no EDM bond table for atomic numbers {unknown}")
    valence = np.array([VALENCE[int(a)] for a in z])
    return bond_orders(z, positions).sum(1) == valence

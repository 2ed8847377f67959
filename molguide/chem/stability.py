"""EDM's atom and molecule stability, from interatomic distances alone.

Reference bond lengths (pm) for single, double and triple bonds with margins of
10, 5 and 3 pm (docs/protocol.md). A pair's bond order is the highest order
whose threshold (length + margin) the distance is under; an atom is stable when
its summed bond order is one of its element's valences; a molecule when all its
atoms are. The tables hold EDM's QM9 elements (H, C, N, O, F); a data set with
other elements brings their rows (``Dataset.bond_lengths_pm`` and ``valences``,
added here by :func:`register_bond_table` when the data set is registered).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from molguide.data.elements import SYMBOLS, atomic_number

_BOND_LENGTHS_PM: dict[tuple[int, int], tuple[float, ...]] = {}
_VALENCES: dict[int, frozenset[int]] = {}
MARGINS_PM = (10.0, 5.0, 3.0)
THRESHOLDS_A = np.full((len(SYMBOLS), len(SYMBOLS), 3), -1.0)
"""thresholds[z1, z2, k] in Angstrom for bond order k+1; -1 where no such bond exists."""


def _pair(a: str, b: str) -> tuple[int, int]:
    za, zb = atomic_number(a), atomic_number(b)
    return (za, zb) if za <= zb else (zb, za)


def register_bond_table(
    bond_lengths_pm: Mapping[tuple[str, str], Sequence[float]],
    valences: Mapping[str, int | Iterable[int]],
) -> None:
    """Add elements to the stability tables: reference lengths (pm) of the single, double
    and triple bonds each element pair forms (as many as exist, in that order) and each
    element's allowed valences (an int, or several as for P: (3, 5)).

    Re-registering a known row with the same values is a no-op; different values raise
    ValueError (one table serves every data set, so none may silently change another's).
    """
    new_lengths = {}
    for (a, b), lengths in bond_lengths_pm.items():
        pair, lengths = _pair(a, b), tuple(float(x) for x in lengths)
        if not 1 <= len(lengths) <= 3 or list(lengths) != sorted(lengths, reverse=True):
            raise ValueError(f"bond lengths of {a}-{b}: give 1-3 (single, double, triple), each shorter")
        known = _BOND_LENGTHS_PM.get(pair, lengths)
        if known != lengths:
            raise ValueError(f"bond lengths of {a}-{b}: {lengths} pm differ from the registered {known}")
        new_lengths[pair] = lengths
    new_valences = {}
    for element, allowed in valences.items():
        z = atomic_number(element)
        allowed = frozenset([allowed] if isinstance(allowed, int) else (int(v) for v in allowed))
        if not allowed or min(allowed) < 0:
            raise ValueError(f"valences of {element}: give one or more non-negative integers")
        known = _VALENCES.get(z, allowed)
        if known != allowed:
            raise ValueError(f"valences of {element}: {sorted(allowed)} differ from {sorted(known)}")
        new_valences[z] = allowed
    _BOND_LENGTHS_PM.update(new_lengths)
    _VALENCES.update(new_valences)
    for (za, zb), lengths in new_lengths.items():
        for k, length in enumerate(lengths):
            THRESHOLDS_A[za, zb, k] = THRESHOLDS_A[zb, za, k] = (length + MARGINS_PM[k]) / 100.0


# EDM's QM9 table (Allen et al. 1987 averages, as in EDM's analysis code).
register_bond_table(
    {
        ("H", "H"): (74,), ("H", "C"): (109,), ("H", "N"): (101,), ("H", "O"): (96,),
        ("H", "F"): (92,), ("C", "C"): (154, 134, 120), ("C", "N"): (147, 129, 116),
        ("C", "O"): (143, 120, 113), ("C", "F"): (135,), ("N", "N"): (145, 125, 110),
        ("N", "O"): (140, 121), ("N", "F"): (136,), ("O", "O"): (148, 121),
        ("O", "F"): (142,), ("F", "F"): (142,),
    },
    {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1},
)  # fmt: skip


def has_bond_table(atomic_numbers: Iterable[int]) -> bool:
    """True when every element given has registered valences (stability is defined)."""
    return all(int(z) in _VALENCES for z in atomic_numbers)


def elements_without_bond_table(atomic_numbers: Iterable[int]) -> list[str]:
    """Symbols of the elements given that have no registered valences, sorted by atomic number."""
    missing = sorted({int(z) for z in atomic_numbers} - set(_VALENCES))
    return [SYMBOLS[z] if 0 < z < len(SYMBOLS) else str(z) for z in missing]


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
    """Boolean per atom: summed bond order is one of the element's valences.

    Raises ValueError for elements without a registered bond table.
    """
    z = np.asarray(atomic_numbers, dtype=np.int64)
    unknown = elements_without_bond_table(z.tolist())
    if unknown:
        raise ValueError(f"no EDM bond table for elements {unknown}")
    total = bond_orders(z, positions).sum(1)
    # One lookup for all atoms: allowed[z, k] says whether valence k is one of z's.
    top = max(max(v) for v in _VALENCES.values()) + 1
    allowed = np.zeros((len(SYMBOLS), top + 1), dtype=bool)
    for element, valences in _VALENCES.items():
        allowed[element, sorted(valences)] = True
    return allowed[z, np.minimum(total, top)]

"""Element tables shared by the data readers and the chemistry evaluation."""

from __future__ import annotations

# Enough of the periodic table to name what users bring; QM9 uses H, C, N, O, F.
SYMBOLS: tuple[str, ...] = (
    "X", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne",
    "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca",
    "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr",
    "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn",
    "Sb", "Te", "I", "Xe",
)  # fmt: skip
ATOMIC_NUMBERS: dict[str, int] = {s: z for z, s in enumerate(SYMBOLS) if z > 0}

# Atom types the QM9 models know, in one-hot order (EDM's order).
QM9_ATOMIC_NUMBERS: tuple[int, ...] = (1, 6, 7, 8, 9)

HARTREE_TO_EV = 27.211386
BOHR_TO_ANGSTROM = 0.529177210903
EBOHR_TO_DEBYE = 2.541746473


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol (case-insensitive); ValueError if unknown."""
    key = symbol.strip().capitalize()
    if key not in ATOMIC_NUMBERS:
        raise ValueError(f"unknown element {symbol!r}")
    return ATOMIC_NUMBERS[key]


def symbol(z: int) -> str:
    """Element symbol of an atomic number; ValueError if outside the table."""
    if not 0 < int(z) < len(SYMBOLS):
        raise ValueError(f"unsupported atomic number {z}")
    return SYMBOLS[int(z)]


ANGSTROM_TO_BOHR = 1.0 / BOHR_TO_ANGSTROM

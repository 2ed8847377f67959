"""Element tables shared by the data readers and the chemistry evaluation."""

from __future__ import annotations

# The whole periodic table (IUPAC symbols, hydrogen to oganesson), so that any element a
# user's file holds is named; QM9 uses H, C, N, O, F. Index 0 is the dummy atom.
SYMBOLS: tuple[str, ...] = (
    "X", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne",
    "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca",
    "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr",
    "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn",
    "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb",
    "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg",
    "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th",
    "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm",
    "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds",
    "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)  # fmt: skip
ATOMIC_NUMBERS: dict[str, int] = {s: z for z, s in enumerate(SYMBOLS) if z > 0}

# Hydrogen's isotope labels (deuterium, tritium), as MD and NMR files write them. An
# isotope has the bonds, valence and stability of its element, which is all molguide
# judges, so they read as hydrogen (atomic number 1); the label itself is not kept.
ISOTOPE_LABELS: dict[str, int] = {"D": 1, "T": 1}

# Atom types the QM9 models know, in one-hot order (EDM's order).
QM9_ATOMIC_NUMBERS: tuple[int, ...] = (1, 6, 7, 8, 9)


def atom_types_of(network_config) -> tuple[int, ...]:
    """The atomic numbers of a network's type channels, from its config: ``atom_types`` when
    it lists them (networks trained on a user's elements), else QM9's for a 5-channel one."""
    types = network_config.get("atom_types")
    if types:
        return tuple(int(z) for z in types)
    width = int(network_config.get("num_atom_types", len(QM9_ATOMIC_NUMBERS)))
    if width != len(QM9_ATOMIC_NUMBERS):
        raise ValueError(f"a network with {width} atom-type channels must list them (atom_types)")
    return QM9_ATOMIC_NUMBERS


HARTREE_TO_EV = 27.211386
BOHR_TO_ANGSTROM = 0.529177210903
EBOHR_TO_DEBYE = 2.541746473


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol (case-insensitive; D and T are hydrogen);
    ValueError if unknown."""
    key = symbol.strip().capitalize()
    z = ATOMIC_NUMBERS.get(key) or ISOTOPE_LABELS.get(key)
    if z is None:
        raise ValueError(f"unknown element {symbol!r}")
    return z


def is_element_symbol(symbol: str) -> bool:
    """Whether :func:`atomic_number` knows the symbol (an element, or D / T)."""
    key = symbol.strip().capitalize()
    return key in ATOMIC_NUMBERS or key in ISOTOPE_LABELS


def symbol(z: int) -> str:
    """Element symbol of an atomic number; ValueError if outside the table."""
    if not 0 < int(z) < len(SYMBOLS):
        raise ValueError(f"unsupported atomic number {z}")
    return SYMBOLS[int(z)]


ANGSTROM_TO_BOHR = 1.0 / BOHR_TO_ANGSTROM

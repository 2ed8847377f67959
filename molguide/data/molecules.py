"""In-memory molecule containers: one molecule, and many packed as CSR arrays."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SourceRecord:
    """One record of a molecule file as it was read: its number and its text."""

    record: int  # 1-based record number in the file
    text: str  # the record's text (an SDF record without its ``$$$$`` line)


@dataclass
class Molecule:
    """One 3D molecule: atomic numbers, positions in Angstrom, named float properties."""

    atomic_numbers: np.ndarray  # (n,) int
    positions: np.ndarray  # (n, 3) float, Angstrom
    properties: dict[str, float] = field(default_factory=dict)
    name: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # non-numeric labels (e.g. SD tags)
    bond_orders: np.ndarray | None = None  # (n, n) predicted by a bond-order head, if any
    # The record as read from a file (SDF), so that it can be written back unchanged.
    source: SourceRecord | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        if len(self.atomic_numbers) != len(self.positions):
            raise ValueError(
                f"molecule {self.name!r}: {len(self.atomic_numbers)} atoms "
                f"but {len(self.positions)} positions"
            )

    @property
    def num_atoms(self) -> int:
        return int(len(self.atomic_numbers))


class MoleculeSet:
    """Many molecules packed as flat arrays with CSR offsets (cheap to slice and cache).

    ``atomic_numbers[offsets[i]:offsets[i+1]]`` and ``positions[...]`` are molecule i;
    ``properties[name][i]`` its property values; ``names[i]`` and ``smiles[i]`` its labels.
    """

    def __init__(
        self,
        atomic_numbers: np.ndarray,
        positions: np.ndarray,
        offsets: np.ndarray,
        properties: dict[str, np.ndarray] | None = None,
        names: Sequence[str] | np.ndarray | None = None,
        smiles: Sequence[str] | np.ndarray | None = None,
    ) -> None:
        self.atomic_numbers = np.asarray(atomic_numbers, dtype=np.int8)
        self.positions = np.asarray(positions, dtype=np.float32).reshape(-1, 3)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        n = len(self.offsets) - 1
        self.properties = {k: np.asarray(v, dtype=np.float64) for k, v in (properties or {}).items()}
        self.names = np.asarray(names if names is not None else [str(i) for i in range(n)])
        self.smiles = np.asarray(smiles if smiles is not None else [""] * n)
        self._check()

    def _check(self) -> None:
        n = len(self)
        if n < 0 or self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets must start at 0 and be non-decreasing")
        if self.offsets[-1] != len(self.atomic_numbers) or len(self.positions) != len(self.atomic_numbers):
            raise ValueError(
                f"offsets end at {self.offsets[-1]} but there are {len(self.atomic_numbers)} "
                f"atomic numbers and {len(self.positions)} positions"
            )
        for key, values in self.properties.items():
            if len(values) != n:
                raise ValueError(f"property {key!r} has {len(values)} values for {n} molecules")
        if len(self.names) != n or len(self.smiles) != n:
            raise ValueError("names and smiles need one entry per molecule")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_atoms(self) -> np.ndarray:
        """Atom count of every molecule, shape (len(self),)."""
        return np.diff(self.offsets)

    def __getitem__(self, i: int) -> Molecule:
        if not -len(self) <= i < len(self):
            raise IndexError(f"molecule {i} out of range for {len(self)} molecules")
        i = i % len(self)
        a, b = self.offsets[i], self.offsets[i + 1]
        return Molecule(
            atomic_numbers=self.atomic_numbers[a:b],
            positions=self.positions[a:b],
            properties={k: float(v[i]) for k, v in self.properties.items()},
            name=str(self.names[i]),
        )

    def __iter__(self) -> Iterator[Molecule]:
        for i in range(len(self)):
            yield self[i]

    def subset(self, indices: Sequence[int] | np.ndarray) -> MoleculeSet:
        """The molecules at ``indices``, in that order, as a new set (arrays are copied)."""
        idx = np.asarray(indices, dtype=np.int64)
        counts = self.num_atoms[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        # Gather atom rows of every chosen molecule without a Python loop.
        starts = np.repeat(self.offsets[idx] - offsets[:-1], counts)
        atom_rows = np.arange(offsets[-1], dtype=np.int64) + starts
        return MoleculeSet(
            self.atomic_numbers[atom_rows],
            self.positions[atom_rows],
            offsets,
            {k: v[idx] for k, v in self.properties.items()},
            self.names[idx],
            self.smiles[idx],
        )

    def relabelled(
        self, properties: dict[str, np.ndarray] | None = None, smiles: Sequence[str] | None = None
    ) -> MoleculeSet:
        """The same atoms with other properties and/or SMILES (the arrays are shared)."""
        return MoleculeSet(
            self.atomic_numbers,
            self.positions,
            self.offsets,
            self.properties if properties is None else properties,
            self.names,
            self.smiles if smiles is None else smiles,
        )

    def without_hydrogens(self) -> MoleculeSet:
        """The same molecules with every hydrogen atom removed (heavy-atom models)."""
        keep = self.atomic_numbers != 1
        mol_of_atom = np.repeat(np.arange(len(self)), self.num_atoms)
        counts = np.bincount(mol_of_atom[keep], minlength=len(self))
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return MoleculeSet(
            self.atomic_numbers[keep],
            self.positions[keep],
            offsets,
            dict(self.properties),
            self.names,
            self.smiles,
        )

    @classmethod
    def from_molecules(cls, molecules: Iterable[Molecule]) -> MoleculeSet:
        """Pack molecules; a property missing on some molecules is NaN there."""
        mols = list(molecules)
        keys: list[str] = []
        for m in mols:
            keys.extend(k for k in m.properties if k not in keys)
        offsets = np.zeros(len(mols) + 1, dtype=np.int64)
        np.cumsum([m.num_atoms for m in mols], out=offsets[1:])
        z = np.concatenate([m.atomic_numbers for m in mols]) if mols else np.zeros(0)
        pos = np.concatenate([m.positions for m in mols]) if mols else np.zeros((0, 3))
        props = {k: np.array([m.properties.get(k, np.nan) for m in mols]) for k in keys}
        return cls(z, pos, offsets, props, [m.name for m in mols])

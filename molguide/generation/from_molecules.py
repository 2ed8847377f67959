"""Designing from a given molecule: a lead to improve, a substructure to keep (docs/edit.md).

These helpers turn a user's RDKit molecule into the references of a
:class:`~molguide.diffusion.editing.MoleculeEdit` and measure how far each designed molecule
moved from its lead: Tanimoto similarity of Morgan fingerprints (radius 2, 2048 bits),
heavy-atom RMSD after optimal superposition (atoms correspond by index, since a lead's
variants keep its atoms in order) and whether the Bemis-Murcko scaffold is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from molguide.data.elements import symbol
from molguide.data.molecules import Molecule
from molguide.diffusion.atom_counts import NodeCountDistribution
from molguide.diffusion.editing import MoleculeEdit


def as_molecule(mol, what: str = "lead") -> Molecule:
    """A molguide Molecule from an RDKit Mol with a 3D conformer (or a Molecule as it is);
    ValueError naming ``what`` and the problem otherwise."""
    if isinstance(mol, Molecule):
        return mol
    from molguide.data.io import molecule_from_rdkit

    if not hasattr(mol, "GetNumAtoms"):
        raise ValueError(f"{what}: give an RDKit Mol with a 3D conformer or a molguide Molecule, not {mol!r}")
    molecule, reason = molecule_from_rdkit(mol, what)
    if molecule is None:
        raise ValueError(f"{what}: {reason}")
    return molecule


def lead_from_file(path: str | Path, what: str = "lead") -> object:
    """The first molecule of an SDF (with its own bonds) or another molecule file (bonds
    perceived later), as an RDKit Mol; a file with several says which one is used."""
    import logging

    from molguide.data.io import molecule_to_rdkit, read_molecules

    molecules = read_molecules(path).require_molecules()
    if len(molecules) > 1:
        logging.getLogger(__name__).info("%s %s: using its first molecule of %d", what, path, len(molecules))
    first = molecules[0]
    if first.source is not None:
        from rdkit import Chem

        for sanitize in (True, False):  # aromaticity perceived for SMARTS, where RDKit can
            mol = Chem.MolFromMolBlock(first.source.text, sanitize=sanitize, removeHs=False)
            if mol is not None:
                return mol
    return molecule_to_rdkit(first)


def type_indices(molecule: Molecule, atom_types: Sequence[int], what: str = "lead") -> np.ndarray:
    """The molecule's atoms as indices into ``atom_types``; elements the generator lacks are named."""
    index = {int(z): k for k, z in enumerate(atom_types)}
    missing = sorted({symbol(int(z)) for z in molecule.atomic_numbers if int(z) not in index})
    if missing:
        known = " ".join(symbol(int(z)) for z in atom_types)
        raise ValueError(f"{what} holds {' '.join(missing)}; this generator makes {known} only")
    return np.array([index[int(z)] for z in molecule.atomic_numbers], dtype=np.int64)


def kept_atoms(mol, keep: str | Sequence[int], num_atoms: int) -> list[int]:
    """The indices of the atoms to keep: a SMARTS pattern's first match in ``mol``, or the
    indices given (each within the molecule, each once)."""
    if isinstance(keep, str):
        from rdkit import Chem

        pattern = Chem.MolFromSmarts(keep)
        if pattern is None:
            raise ValueError(f"keep: {keep!r} is not a SMARTS pattern RDKit can read")
        if not hasattr(mol, "GetSubstructMatch"):
            raise ValueError("keep: a SMARTS pattern needs an RDKit molecule with bonds")
        mol = Chem.Mol(mol)
        try:
            mol.UpdatePropertyCache(strict=False)  # an unsanitised molecule lacks what matching reads
            Chem.FastFindRings(mol)
            match = mol.GetSubstructMatch(pattern)
        except RuntimeError as err:
            raise ValueError(f"keep: RDKit cannot match {keep!r} on this molecule ({err})") from None
        if not match:
            raise ValueError(f"keep: {keep!r} does not match the molecule")
        return sorted(match)
    indices = [int(i) for i in keep]
    if not indices:
        raise ValueError("keep: give at least one atom index or a SMARTS pattern")
    bad = [i for i in indices if not 0 <= i < num_atoms]
    if bad or len(set(indices)) != len(indices):
        raise ValueError(f"keep: atom indices must be distinct and in [0, {num_atoms}), got {list(keep)}")
    return sorted(indices)


def lead_edit(
    lead: Molecule, types: np.ndarray, n: int, t_start: float, keep: list[int] | None
) -> MoleculeEdit:
    """``n`` copies of the lead as references, started from at ``t_start``; ``keep``: atoms fixed."""
    mask = None
    if keep:
        one = np.zeros(lead.num_atoms, dtype=bool)
        one[keep] = True
        mask = [one.copy() for _ in range(n)]
    positions = [lead.positions.copy() for _ in range(n)]
    return MoleculeEdit(positions, [types.copy() for _ in range(n)], t_start, mask)


def grown_edit(fragment: Molecule, types: np.ndarray, counts: Sequence[int]) -> MoleculeEdit:
    """References for molecules of ``counts`` atoms that start with ``fragment``'s atoms
    (kept) and grow the rest from noise (placeholders at the fragment's centre)."""
    k = fragment.num_atoms
    centre = fragment.positions.mean(0)
    positions, type_lists, masks = [], [], []
    for n in counts:
        positions.append(np.concatenate([fragment.positions, np.repeat(centre[None], n - k, 0)]))
        type_lists.append(np.concatenate([types, np.zeros(n - k, dtype=np.int64)]))
        masks.append(np.arange(n) < k)
    return MoleculeEdit(positions, type_lists, 1.0, masks)


def counts_above(nodes: NodeCountDistribution, n: int, minimum: int, seed: int) -> list[int]:
    """``n`` atom counts from the generator's distribution restricted to at least ``minimum``."""
    probs = nodes.probs.clone().double()
    probs[:minimum] = 0
    if float(probs.sum()) <= 0:
        raise ValueError(
            f"keep: {minimum - 1} kept atoms leave no room; this generator makes at most "
            f"{len(nodes.probs) - 1} atoms"
        )
    generator = torch.Generator().manual_seed(seed)
    draws = torch.multinomial(probs / probs.sum(), n, replacement=True, generator=generator)
    return draws.tolist()


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD of two (n, 3) point sets, row by row, after the best rotation and translation."""
    a, b = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(((a @ rotation - b) ** 2).sum(1).mean()))


def _from_smiles(smiles: str):
    from rdkit import Chem
    from rdkit.rdBase import BlockLogs

    with BlockLogs():
        return Chem.MolFromSmiles(smiles) if smiles else None


def _fingerprint(mol):
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048).GetFingerprint(mol)


def _scaffold(mol) -> str:
    from rdkit.Chem.Scaffolds import MurckoScaffold

    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def similarity_to_lead(
    lead_smiles: str, lead: Molecule, designed: Sequence, designed_molecules: Sequence[Molecule]
) -> None:
    """Set ``tanimoto_to_lead``, ``rmsd_to_lead`` (Angstrom, heavy atoms) and ``scaffold_kept``
    (1/0) on each designed RDKit Mol. Fingerprints and scaffolds come from SMILES (the lead's,
    and each design's perceived ``smiles``); a design without one gets neither."""
    from rdkit import DataStructs

    heavy = lead.atomic_numbers > 1
    reference = _from_smiles(lead_smiles)
    lead_fp = _fingerprint(reference) if reference is not None else None
    lead_scaffold = _scaffold(reference) if reference is not None else None
    for mol, molecule in zip(designed, designed_molecules):
        if molecule.num_atoms == lead.num_atoms and heavy.any():
            mol.SetDoubleProp("rmsd_to_lead", kabsch_rmsd(molecule.positions[heavy], lead.positions[heavy]))
        own = _from_smiles(mol.GetProp("smiles")) if mol.HasProp("smiles") else None
        if own is None or reference is None:
            continue
        mol.SetDoubleProp("tanimoto_to_lead", DataStructs.TanimotoSimilarity(lead_fp, _fingerprint(own)))
        mol.SetIntProp("scaffold_kept", int(_scaffold(own) == lead_scaffold))

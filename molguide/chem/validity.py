"""Validity as the published tables measure it (EDM's protocol), and strict validity.

EDM validity (``validity``): the RDKit molecule is built from the atoms and the bond
orders of EDM's distance table (:func:`molguide.chem.stability.bond_orders`), with
no formal charges and no other perception; it is valid when ``Chem.SanitizeMol``
succeeds on the whole molecule. Its SMILES is that of the largest fragment (by atom
count), sanitised again, written by ``Chem.MolToSmiles`` with the hydrogens as the
graph has them: uniqueness and novelty compare these strings, as EDM's code does.
Sanitisation fills missing valences with implicit hydrogens, so an under-bonded
carbon still passes: that leniency is EDM's and is what the published rows mean.

Strict validity (``validity_strict``, for chemists): the molecule perceived from the
coordinates with total charge 0 (:func:`molguide.chem.reconstruct.rebuild_molecule`)
is one connected fragment, sanitises, has no formally charged atom, no radical
electron and no implicit hydrogen (every hydrogen it needs was generated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from molguide.chem.stability import bond_orders
from molguide.data.elements import symbol
from molguide.data.io import add_bond_orders, rdkit_messages


@dataclass(frozen=True)
class EDMValidity:
    """EDM's verdict on one molecule: valid, the largest fragment's SMILES, the reason if not."""

    valid: bool
    smiles: str | None
    reason: str | None = None


def edm_molecule(atomic_numbers: np.ndarray, positions: np.ndarray):
    """RDKit RWMol with EDM's distance-table bonds, no charges, not sanitised."""
    from rdkit import Chem

    mol = Chem.RWMol()
    for z in np.asarray(atomic_numbers).tolist():
        mol.AddAtom(Chem.Atom(symbol(int(z))))
    add_bond_orders(mol, bond_orders(atomic_numbers, positions))
    return mol


def edm_validity(atomic_numbers: np.ndarray, positions: np.ndarray) -> EDMValidity:
    """EDM's validity of one molecule and the SMILES its uniqueness/novelty use."""
    from rdkit import Chem

    if len(atomic_numbers) == 0:
        return EDMValidity(False, None, "no atoms")
    if not np.isfinite(positions).all():
        return EDMValidity(False, None, "non-finite coordinates")
    mol = edm_molecule(atomic_numbers, positions)
    with rdkit_messages() as messages:
        try:
            Chem.SanitizeMol(mol)
        except (ValueError, RuntimeError) as err:
            reason = messages[-1] if messages else str(err)
            return EDMValidity(False, None, f"EDM bonds do not sanitise: {reason}")
        fragments = Chem.GetMolFrags(mol, asMols=True)
        largest = max(fragments, default=mol, key=lambda m: m.GetNumAtoms())
        try:
            Chem.SanitizeMol(largest)
        except (ValueError, RuntimeError) as err:  # cannot happen after the whole sanitised
            return EDMValidity(False, None, f"largest fragment does not sanitise: {err}")
    return EDMValidity(True, Chem.MolToSmiles(largest))


@dataclass(frozen=True)
class StrictCheck:
    """What strict validity looks at in a perceived molecule."""

    valid: bool
    n_fragments: int
    n_charged_atoms: int
    n_radical_electrons: int
    n_implicit_h: int
    reason: str | None = None


def strict_check(mol) -> StrictCheck:
    """Strict validity of a perceived RDKit molecule (bonds assigned, e.g. by DetermineBonds).

    ``mol`` is not modified: a copy is sanitised. None (no bonds could be assigned) is
    not valid.
    """
    from rdkit import Chem

    if mol is None:
        return StrictCheck(False, 0, 0, 0, 0, "no bonds could be assigned")
    copy = Chem.Mol(mol)
    with rdkit_messages() as messages:
        try:
            Chem.SanitizeMol(copy)
        except (ValueError, RuntimeError) as err:
            reason = messages[-1] if messages else str(err)
            return StrictCheck(False, 0, 0, 0, 0, f"does not sanitise: {reason}")
    n_fragments = len(Chem.GetMolFrags(copy))
    charged = sum(1 for a in copy.GetAtoms() if a.GetFormalCharge() != 0)
    radicals = sum(a.GetNumRadicalElectrons() for a in copy.GetAtoms())
    implicit = sum(a.GetNumImplicitHs() for a in copy.GetAtoms())
    problems = []
    if n_fragments != 1:
        problems.append(f"{n_fragments} fragments")
    if charged:
        problems.append(f"{charged} charged atoms")
    if radicals:
        problems.append(f"{radicals} radical electrons")
    if implicit:
        problems.append(f"{implicit} missing hydrogens")
    return StrictCheck(not problems, n_fragments, charged, radicals, implicit, ", ".join(problems) or None)

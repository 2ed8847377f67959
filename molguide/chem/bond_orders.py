"""Bond orders as matrices: read from perceived molecules (training labels of a
bond-order head) and written back into RDKit molecules (the head's prediction).

Labels are the Kekule bond orders of the molecule perceived from the DFT geometry
with total charge 0 (:func:`molguide.chem.reconstruct.rebuild_molecule`), kept only
where that molecule is strictly valid (one neutral, closed-shell fragment): a
label that needed charges or radicals would teach the head exactly the chemistry
we do not want. On QM9 that labels 99.6 % of the molecules; the rest are counted
and reported, and train without a bond loss.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from molguide.chem.reconstruct import rebuild_molecule
from molguide.chem.validity import strict_check
from molguide.data.bonds import BondTable
from molguide.data.io import add_bond_orders, molecule_to_rdkit, rdkit_messages
from molguide.data.molecules import Molecule, MoleculeSet

log = logging.getLogger(__name__)


def orders_of_mol(mol) -> np.ndarray:
    """The n x n Kekule bond-order matrix of an RDKit molecule (aromatic bonds as 1 or 2)."""
    from rdkit import Chem

    kekule = Chem.Mol(mol)
    Chem.Kekulize(kekule, clearAromaticFlags=True)
    n = kekule.GetNumAtoms()
    orders = np.zeros((n, n), dtype=np.int8)
    for bond in kekule.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        orders[i, j] = orders[j, i] = int(round(bond.GetBondTypeAsDouble()))
    return orders


def perceived_orders(molecule: Molecule) -> tuple[np.ndarray | None, str | None]:
    """(bond orders, None) of a strictly valid perceived molecule, else (None, reason)."""
    from rdkit import Chem

    rebuilt = rebuild_molecule(molecule)
    check = strict_check(rebuilt.mol)
    if not check.valid:
        return None, check.reason
    # Sanitising perceives aromaticity and Kekulising then picks RDKit's Kekule form:
    # DetermineBonds' own alternation in a ring is arbitrary (on 3,024 QM9 molecules,
    # 264 of 1.0 M pair labels differ), so the labels would depend on its choice.
    mol = Chem.Mol(rebuilt.mol)
    with rdkit_messages():
        Chem.SanitizeMol(mol)
    return orders_of_mol(mol), None


def bond_table(molecules: MoleculeSet, progress: bool = False) -> tuple[BondTable, Counter]:
    """Bond-order labels of every molecule and a count of why some have none."""
    from tqdm.auto import tqdm

    blocks, reasons = [], Counter()
    for molecule in tqdm(molecules, desc="bond labels", unit="mol", disable=not progress):
        block, reason = perceived_orders(molecule)
        blocks.append(block)
        if reason:
            reasons[reason.split(":")[0]] += 1
    return BondTable.from_blocks(blocks, molecules.num_atoms), reasons


def molecules_fingerprint(molecules: MoleculeSet) -> str:
    """A short hash of the atoms and positions of ``molecules`` (names the label cache)."""
    import hashlib

    digest = hashlib.sha1()
    for array in (molecules.offsets, molecules.atomic_numbers, molecules.positions):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def cached_bond_table(
    molecules: MoleculeSet, cache_dir: str | Path | None = None, progress: bool = False
) -> BondTable:
    """:func:`bond_table`, kept in ``cache_dir`` (default: molguide's cache folder) under a
    name that hashes the molecules, so a cache never serves other molecules. Unlabelled
    molecules are reported with their reasons."""
    from molguide.data.qm9 import default_cache_dir

    path = Path(cache_dir or default_cache_dir()) / f"bond_labels_{molecules_fingerprint(molecules)}.npz"
    if path.exists():
        try:
            table = BondTable.load(path)
            if len(table) == len(molecules):
                _report(table, None)
                return table
            log.warning(
                "bond-label cache %s has %d rows for %d molecules; rebuilding it",
                path,
                len(table),
                len(molecules),
            )
        except (OSError, ValueError, KeyError) as err:
            log.warning("bond-label cache %s is unreadable (%s); rebuilding it", path, err)
    log.info(
        "perceiving the bond orders of %d molecules for the bond-order head (once; cached in %s)",
        len(molecules),
        path,
    )
    table, reasons = bond_table(molecules, progress)
    table.save(path)
    _report(table, reasons)
    return table


def _report(table: BondTable, reasons: Counter | None) -> None:
    missing = int((~table.labelled).sum())
    if not missing:
        return
    if reasons:
        detail = "; ".join(f"{n} with {why}" for why, n in reasons.most_common())
    else:
        detail = "the reasons were logged when the cache was built"
    log.info(
        "bond labels: %d of %d molecules have none (not strictly valid when perceived: %s); "
        "they train without a bond loss",
        missing,
        len(table),
        detail,
    )


def mol_from_orders(molecule: Molecule, orders: np.ndarray):
    """An RDKit molecule with ``molecule``'s atoms and conformer and the given bond orders
    (no formal charges, no implicit hydrogens, not sanitised)."""
    from rdkit import Chem

    n = molecule.num_atoms
    orders = np.asarray(orders)
    if orders.shape != (n, n):
        raise ValueError(f"molecule {molecule.name!r}: bond orders of shape {orders.shape} for {n} atoms")
    mol = Chem.RWMol(molecule_to_rdkit(molecule))
    add_bond_orders(mol, orders)
    return mol.GetMol()

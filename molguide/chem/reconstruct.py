"""Coordinates -> RDKit molecule with bonds, by RDKit's DetermineBonds.

The default (connect-the-dots connectivity, charge 0) recovers about 95% of QM9
geometries; when it fails we retry with extended-Hueckel connectivity, which
recovers the rest. The Hueckel code writes warnings from C straight to the
process's stderr, where RDKit's logger cannot reach them, so the fallback runs
with file descriptor 2 pointed at /dev/null.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from molguide.data.io import molecule_to_rdkit, rdkit_messages
from molguide.data.molecules import Molecule

# Bounds the bond-order search of DetermineBondOrders: garbage geometries with
# many under-bonded atoms can otherwise take minutes on one molecule.
MAX_BOND_ORDER_ITERATIONS = 100_000


@contextlib.contextmanager
def silenced_c_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 2 (C code included) to /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass
class Reconstruction:
    """A molecule rebuilt from coordinates: the RDKit Mol (None if bonds could not be
    assigned), the method that worked, and the reason when none did."""

    mol: object | None
    method: str | None
    reason: str | None = None


def _determine_bonds(molecule: Molecule, use_hueckel: bool):
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    mol = molecule_to_rdkit(Molecule(molecule.atomic_numbers, molecule.positions))
    rdDetermineBonds.DetermineBonds(
        mol,
        useHueckel=use_hueckel,
        charge=0,
        embedChiral=False,
        maxIterations=MAX_BOND_ORDER_ITERATIONS,
    )
    # Connectivity that breaks valence rules (e.g. an over-long C-C taken as a bond,
    # giving pentavalent carbon) is a failure too: sanitise a copy to find out.
    Chem.SanitizeMol(Chem.Mol(mol))
    return mol


def rebuild_molecule(molecule: Molecule) -> Reconstruction:
    """Bonds and bond orders from 3D coordinates (total charge 0), with the Hueckel fallback.

    The connect-the-dots result is kept when it sanitises; otherwise the Hueckel
    connectivity is tried; when that fails too, the first result that assigned bonds
    at all is returned (its sanitisation failure then makes it invalid downstream).
    """
    from rdkit import Chem

    if molecule.num_atoms == 0:
        return Reconstruction(None, None, "no atoms")
    if not np.isfinite(molecule.positions).all():
        return Reconstruction(None, None, "non-finite coordinates")
    errors = []
    for use_hueckel in (False, True):
        method = "hueckel" if use_hueckel else "connect-the-dots"
        try:
            with rdkit_messages(), contextlib.ExitStack() as stack:
                if use_hueckel:
                    stack.enter_context(silenced_c_stderr())
                mol = _determine_bonds(molecule, use_hueckel)
            return Reconstruction(mol, method)
        except (ValueError, RuntimeError, Chem.rdchem.MolSanitizeException) as err:
            text = str(err).strip()
            errors.append(f"{method}: {text.splitlines()[0] if text else type(err).__name__}")
    return Reconstruction(None, None, "bond perception failed (" + "; ".join(errors) + ")")

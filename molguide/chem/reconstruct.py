"""Coordinates -> RDKit molecule with bonds, by RDKit's DetermineBonds.

The default (connect-the-dots connectivity, charge 0) recovers about 95% of QM9
geometries; when it fails we retry with extended-Hueckel connectivity, which
recovers the rest. The Hueckel code can end the process (a segmentation fault on two
atoms in one place, an abort on elements it lacks parameters for) and writes warnings
from C straight to stderr, so it runs in a helper process (:mod:`molguide.chem.isolated`)
whose death costs one molecule. Atoms closer than
:data:`molguide.data.io.MIN_ATOM_DISTANCE` are refused before any perception.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from molguide.chem.isolated import HelperFailed, determine_bonds, determine_bonds_isolated
from molguide.data.io import coincident_atoms, rdkit_messages
from molguide.data.molecules import Molecule

# Bounds the bond-order search of DetermineBondOrders: garbage geometries with
# many under-bonded atoms can otherwise take minutes on one molecule.
MAX_BOND_ORDER_ITERATIONS = 100_000

# RDKit's error for an element without valences: the Hueckel retry would fail the same
# way (or, for the elements YAeHMOP lacks, end its process), so it is not tried.
_NO_VALENCES = "has no valences defined"


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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def rebuild_molecule(molecule: Molecule) -> Reconstruction:
    """Bonds and bond orders from 3D coordinates (total charge 0), with the Hueckel fallback.

    The connect-the-dots result is kept when it sanitises; otherwise the Hueckel
    connectivity is tried (in the helper process); when that fails too, the reasons of
    both are returned. Coordinates that are not finite, or two atoms in one place, are
    refused before RDKit sees them.
    """
    from rdkit import Chem

    if molecule.num_atoms == 0:
        return Reconstruction(None, None, "no atoms")
    if not np.isfinite(molecule.positions).all():
        return Reconstruction(None, None, "non-finite coordinates")
    coincident = coincident_atoms(molecule.atomic_numbers, molecule.positions)
    if coincident is not None:
        return Reconstruction(None, None, f"bonds not perceived: {coincident}")
    z, pos = molecule.atomic_numbers.tolist(), molecule.positions.tolist()
    try:
        with rdkit_messages():
            mol = determine_bonds(z, pos, False, MAX_BOND_ORDER_ITERATIONS)
        return Reconstruction(mol, "connect-the-dots")
    except (ValueError, RuntimeError, Chem.rdchem.MolSanitizeException) as err:
        first = f"connect-the-dots: {_first_line(err)}"
    if _NO_VALENCES in first:
        return Reconstruction(None, None, f"bond perception failed ({first})")
    try:
        mol = determine_bonds_isolated(z, pos, True, MAX_BOND_ORDER_ITERATIONS)
        return Reconstruction(mol, "hueckel")
    except ValueError as err:
        second = f"hueckel: {_first_line(err)}"
    except HelperFailed as err:
        second = f"hueckel: RDKit's extended-Hueckel code {err}"
    return Reconstruction(None, None, f"bond perception failed ({first}; {second})")

"""The public Python API: RDKit molecules in, RDKit molecules and metric dicts out."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from molguide.chem.evaluate import evaluate as _evaluate
from molguide.chem.evaluate import missing_hydrogens_warning
from molguide.data.io import LoadReport, molecule_from_rdkit, molecule_problem, read_molecules
from molguide.data.io import write_sdf as _write_sdf
from molguide.data.molecules import Molecule

_ACCEPTED = "RDKit molecules with 3D conformers or molguide Molecules"


def _items(mols: object, argument: str = "mols") -> list:
    """``mols`` as a list, or TypeError when it is not a collection of molecules (a bare
    string would otherwise be taken character by character)."""
    from rdkit import Chem

    if isinstance(mols, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{argument}: give a list of {_ACCEPTED}, not a {type(mols).__name__} ({str(mols)[:40]!r}); "
            "for a file use molguide.read(path).molecules, for SMILES embed them first"
        )
    if isinstance(mols, (Chem.Mol, Molecule)):
        raise TypeError(f"{argument}: give a list of molecules; for one molecule use [mol]")
    try:
        items = list(mols)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{argument}: give a list of {_ACCEPTED}, not {type(mols).__name__}") from None
    for k, item in enumerate(items):
        if not isinstance(item, (Chem.Mol, Molecule)):
            raise TypeError(
                f"{argument}[{k}] (molecule {k + 1}): {type(item).__name__} {str(item)[:40]!r} "
                f"is not one of the {_ACCEPTED}"
            )
    return items


def as_molecules(mols: Iterable) -> list[Molecule]:
    """Molecules from RDKit Mols with 3D conformers (or Molecules, checked and passed through).

    Raises TypeError naming the first item that is not a molecule, and ValueError naming
    the first one whose structure cannot be evaluated (no atoms or conformer, 2D or
    non-finite coordinates). Two atoms closer than 0.5 Angstrom are kept: the evaluation
    counts such a molecule as unstable and invalid, with a note naming the atoms (one
    broken sample of a generator must neither stop the batch nor leave the denominator).
    """
    out = []
    for k, item in enumerate(_items(mols), start=1):
        if isinstance(item, Molecule):
            name = item.name or f"mol_{k}"
            molecule, reason = item, molecule_problem(item, keep_coincident=True)
        else:
            name = (item.GetProp("_Name") if item.HasProp("_Name") else "") or f"mol_{k}"
            molecule, reason = molecule_from_rdkit(item, name, keep_coincident=True)
        if reason is not None or molecule is None:
            raise ValueError(f"molecule {k} ({name!r}): {reason}")
        out.append(molecule)
    return out


def _flag(value: object, argument: str) -> bool:
    import numpy as np

    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argument}: give True or False, not {value!r}")
    return bool(value)


def evaluate(
    mols: Sequence,
    xtb: bool = False,
    novelty: bool = True,
    descriptors: bool = True,
) -> dict:
    """Chemistry metrics of RDKit molecules with 3D conformers (or Molecules).

    Returns the same dict as ``molguide evaluate --json``: ``validity`` (EDM's:
    distance-table bonds, no charges), ``validity_strict`` (one neutral closed-shell
    molecule with every hydrogen), ``atom_stability``, ``mol_stability``,
    ``uniqueness``, ``novelty`` (fractions), ``n_input``, ``n_evaluated``, ``errors``
    and a ``properties`` summary. Bonds are perceived from the coordinates, not taken
    from the input. Molecules without hydrogen atoms that are not strictly valid give a
    UserWarning saying how many.

    Raises TypeError for an argument of the wrong kind (a string instead of a list, an
    item that is not a molecule, a flag that is not a bool) and ValueError naming the
    first molecule whose structure cannot be evaluated (see :func:`as_molecules`).
    """
    flags = {name: _flag(value, name) for name, value in
             (("xtb", xtb), ("novelty", novelty), ("descriptors", descriptors))}  # fmt: skip
    molecules = as_molecules(mols)
    result = _evaluate(
        molecules,
        reference_smiles=None if flags["novelty"] else [],
        descriptors=flags["descriptors"],
        xtb=flags["xtb"],
        progress=False,
    )
    warning = missing_hydrogens_warning(result, molecules)
    if warning is not None:
        warnings.warn(warning.removeprefix("warning: "), UserWarning, stacklevel=2)
    return result.to_dict()


def relax(mols: Iterable, method: str = "mmff") -> list:
    """Force-field-relaxed copies of RDKit molecules with bonds (``method``: ``"mmff"``, RDKit's
    MMFF94); the molecules given are not changed, so evaluate raw and relaxed sets apart
    (:mod:`molguide.chem.relax`). Each copy says whether it was relaxed (``relaxed``), how far
    it moved (``relax_rmsd``) and its energy change (``relax_energy_change``, kcal/mol)."""
    from molguide.chem.relax import relax_mmff

    if method != "mmff":
        raise ValueError(f"method: 'mmff' is the relaxation molguide has, not {method!r}")
    return relax_mmff(_items(mols))


def write_sdf(mols: Iterable, path: str | Path) -> int:
    """Write RDKit molecules (or Molecules) with their conformers and properties to an SDF.

    An empty set is refused (ValueError): an SDF without records is an empty file, which
    :func:`read` refuses as not a molecule file, so it could not be read back.
    """
    items = _items(mols)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: give a file name (str or Path), not {type(path).__name__}")
    if not items:
        raise ValueError(f"{path}: no molecules to write (an SDF without records could not be read back)")
    if Path(path).is_dir():
        raise ValueError(f"{path}: is a folder; name the SDF file to write")
    return _write_sdf(items, path)


def read(path: str | Path, max_mb: float | None = None) -> LoadReport:
    """Read an SDF, XYZ or SMILES CSV; the report lists loaded molecules and skipped records.

    Files over ``max_mb`` megabytes (default ``$MOLGUIDE_MAX_FILE_MB``, else 1024) and
    anything that is not a regular file (a FIFO, a device) are refused with a
    MoleculeFileError naming the file.
    """
    return read_molecules(path, max_mb=max_mb)

"""The public Python API: RDKit molecules in, RDKit molecules and metric dicts out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from molguide.chem.evaluate import evaluate as _evaluate
from molguide.data.io import LoadReport, molecule_from_rdkit, read_molecules
from molguide.data.io import write_sdf as _write_sdf
from molguide.data.molecules import Molecule


def as_molecules(mols: Iterable) -> list[Molecule]:
    """Molecules from RDKit Mols with 3D conformers (or Molecules, passed through).

    Raises ValueError naming the first item that has no usable 3D conformer.
    """
    out = []
    for k, item in enumerate(mols, start=1):
        if isinstance(item, Molecule):
            out.append(item)
            continue
        name = item.GetProp("_Name") if item.HasProp("_Name") else f"mol_{k}"
        molecule, reason = molecule_from_rdkit(item, name)
        if molecule is None:
            raise ValueError(f"molecule {k} ({name!r}): {reason}")
        out.append(molecule)
    return out


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
    from the input.
    """
    result = _evaluate(
        as_molecules(mols),
        reference_smiles=None if novelty else [],
        descriptors=descriptors,
        xtb=xtb,
        progress=False,
    )
    return result.to_dict()


def write_sdf(mols: Iterable, path: str | Path) -> int:
    """Write RDKit molecules (or Molecules) with their conformers and properties to an SDF."""
    return _write_sdf(mols, path)


def read(path: str | Path) -> LoadReport:
    """Read an SDF, XYZ or SMILES CSV; the report lists loaded molecules and skipped records."""
    return read_molecules(path)

"""Data: QM9 and its EDM splits, molecule containers, file readers and writers, PyG graphs."""

from molguide.data.io import (
    LoadReport,
    MoleculeFileError,
    RecordError,
    read_molecules,
    read_sdf,
    read_smiles_csv,
    read_xyz,
    write_sdf,
)
from molguide.data.molecules import Molecule, MoleculeSet
from molguide.data.qm9 import PROPERTIES, PROPERTY_UNITS, DataError, load_qm9
from molguide.data.splits import edm_splits

__all__ = [
    "PROPERTIES",
    "PROPERTY_UNITS",
    "DataError",
    "LoadReport",
    "Molecule",
    "MoleculeFileError",
    "MoleculeSet",
    "RecordError",
    "edm_splits",
    "load_qm9",
    "read_molecules",
    "read_sdf",
    "read_smiles_csv",
    "read_xyz",
    "write_sdf",
]

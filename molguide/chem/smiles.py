"""Canonical SMILES for uniqueness and novelty, and the QM9 training reference set."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from molguide.atomic import atomic_write
from molguide.data.qm9 import default_cache_dir, load_qm9
from molguide.data.splits import edm_splits

log = logging.getLogger(__name__)

REFERENCE_FORMAT = 1


def canonical_smiles(mol) -> str | None:
    """Canonical SMILES without stereochemistry or explicit hydrogens; None if it fails.

    Stereo is dropped because bond perception from coordinates does not assign it
    and the QM9 reference SMILES do not carry it (EDM compares the same way).
    """
    from rdkit import Chem

    try:
        heavy = Chem.RemoveHs(mol)
        return Chem.MolToSmiles(heavy, isomericSmiles=False)
    except (ValueError, RuntimeError):
        return None


def canonicalise(smiles: str) -> str | None:
    """Canonical form (as :func:`canonical_smiles`) of a SMILES string; None if it does not parse."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else canonical_smiles(mol)


def qm9_training_smiles(cache_dir: str | Path | None = None) -> frozenset[str]:
    """Canonical SMILES of the QM9 training split (EDM protocol), cached after the first call.

    Built from QM9's GDB SMILES, which agree with the molecules rebuilt from the DFT
    geometries for over 99% of records; the residue shows as the novelty of real data.
    """
    from rdkit import RDLogger

    cache = Path(cache_dir or default_cache_dir())
    path = cache / f"qm9_train_smiles_v{REFERENCE_FORMAT}.json"
    if path.exists():
        try:
            return frozenset(json.loads(path.read_text())["smiles"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("reference SMILES cache %s is unreadable (%s); rebuilding it", path, err)
    qm9 = load_qm9(cache)
    train = edm_splits(len(qm9))["train"]
    RDLogger.DisableLog("rdApp.*")
    try:
        reference = {canonicalise(str(s)) for s in qm9.smiles[np.sort(train)]}
    finally:
        RDLogger.EnableLog("rdApp.*")
    reference.discard(None)
    payload = json.dumps({"format": REFERENCE_FORMAT, "smiles": sorted(reference)}).encode()
    atomic_write(path, lambda fh: fh.write(payload))
    return frozenset(reference)

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

REFERENCE_FORMAT = 2


def canonical_smiles(mol) -> str | None:
    """Canonical SMILES without stereochemistry or explicit hydrogens; None if it fails.

    Stereo is dropped because bond perception from coordinates does not assign it
    and the QM9 reference SMILES do not carry it (EDM compares the same way).
    """
    from rdkit import Chem
    from rdkit.rdBase import BlockLogs

    try:
        # A generated H with no bond stays in (and RDKit says so for every one): quiet.
        with BlockLogs():
            heavy = Chem.RemoveHs(mol)
        return Chem.MolToSmiles(heavy, isomericSmiles=False)
    except (ValueError, RuntimeError):
        return None


def canonicalise(smiles: str) -> str | None:
    """Canonical form (as :func:`canonical_smiles`) of a SMILES string; None if it does not parse."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else canonical_smiles(mol)


def qm9_training_smiles(cache_dir: str | Path | None = None, progress: bool = False) -> frozenset[str]:
    """Canonical SMILES of the QM9 training split (EDM protocol), cached after the first call.

    As EDM's code builds its reference: every training geometry through EDM's
    validity (distance-table bonds, largest fragment), the valid ones kept; here in
    the heavy-atom canonical form of :func:`canonical_smiles`, so that a user's own
    SMILES compare too. About 45 s for the 100,000 molecules on one core.
    """
    from tqdm.auto import tqdm

    from molguide.chem.validity import edm_validity

    cache = Path(cache_dir or default_cache_dir())
    path = cache / f"qm9_train_smiles_v{REFERENCE_FORMAT}.json"
    if path.exists():
        try:
            return frozenset(json.loads(path.read_text())["smiles"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("reference SMILES cache %s is unreadable (%s); rebuilding it", path, err)
    qm9 = load_qm9(cache)
    train = np.sort(edm_splits(len(qm9))["train"])
    log.info("building the QM9 training-split reference SMILES (%d molecules, once)", len(train))
    reference = set()
    for mol in tqdm(qm9.subset(train), total=len(train), desc="reference SMILES", disable=not progress):
        verdict = edm_validity(mol.atomic_numbers, mol.positions)
        if verdict.valid:
            reference.add(canonicalise(verdict.smiles))
    reference.discard(None)
    payload = json.dumps({"format": REFERENCE_FORMAT, "smiles": sorted(reference)}).encode()
    atomic_write(path, lambda fh: fh.write(payload))
    return frozenset(reference)

"""Canonical SMILES for uniqueness and novelty, and the QM9 training reference set."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from molguide.data.qm9 import default_cache_dir, load_qm9
from molguide.data.splits import edm_splits
from molguide.storage.files import atomic_write

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


def _reference_chunk(molecules: list[tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """Canonical SMILES of the EDM-valid molecules among (atomic numbers, positions) pairs."""
    from molguide.chem.validity import edm_validity

    out = []
    for atomic_numbers, positions in molecules:
        verdict = edm_validity(atomic_numbers, positions)
        smiles = canonicalise(verdict.smiles) if verdict.valid else None
        if smiles is not None:
            out.append(smiles)
    return out


def qm9_training_smiles(
    cache_dir: str | Path | None = None, progress: bool = False, workers: int | None = None
) -> frozenset[str]:
    """Canonical SMILES of the QM9 training split (EDM protocol), cached after the first call.

    As EDM's code builds its reference: every training geometry through EDM's
    validity (distance-table bonds, largest fragment), the valid ones kept; here in
    the heavy-atom canonical form of :func:`canonical_smiles`, so that a user's own
    SMILES compare too. The 100,000 molecules take 66 s in one process and 33 s in
    two on this project's 2-core machine; ``workers`` processes (default: one per CPU).
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tqdm.auto import tqdm

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
    items = [(mol.atomic_numbers, mol.positions) for mol in qm9.subset(train)]
    workers = max(1, min(workers or os.cpu_count() or 1, 8))
    size = 2000  # about a second of work: enough chunks to keep every worker busy to the end
    chunks = [items[k : k + size] for k in range(0, len(items), size)]
    reference: set[str] = set()
    with (
        contextlib.ExitStack() as stack,
        tqdm(total=len(items), desc="reference SMILES", unit="mol", disable=not progress) as bar,
    ):
        if workers == 1:
            mapper = map
        else:
            mapper = stack.enter_context(ProcessPoolExecutor(workers, mp_context=get_context("spawn"))).map
        for part, chunk in zip(mapper(_reference_chunk, chunks), chunks):
            reference.update(part)
            bar.update(len(chunk))
    payload = json.dumps({"format": REFERENCE_FORMAT, "smiles": sorted(reference)}).encode()
    atomic_write(path, lambda fh: fh.write(payload))
    return frozenset(reference)

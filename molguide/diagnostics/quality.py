"""The quality of a set of samples as EDM's protocol reports it, and the data's own row.

:func:`sample_quality` gives the stability table's columns for generated molecules
(lost ones count as invalid and unstable); :func:`qm9_reference_row` the same columns
for real molecules of the training split (the "QM9 data" row), cached because they
depend on the data only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from molguide.chem.evaluate import evaluate, over_requested, write_annotated_sdf
from molguide.data.molecules import Molecule
from molguide.data.registry import split_molecules
from molguide.runs.config import RunConfig
from molguide.storage.files import read_json, write_json

# What the protocol measures on every set of samples (and on the data row).
PROTOCOL_QUALITY = (
    "atom_stability",
    "mol_stability",
    "validity",
    "validity_strict",
    "uniqueness",
    "valid_unique",
    "sample_failures",
)
# The version of what sample_quality measures: cached results and reference rows of another
# version are measured again from the stored samples (2: EDM validity, validity_strict).
QUALITY_VERSION = 2


def sample_quality(
    mols: list[Molecule | None], progress: bool, sdf: Path | None = None, requested_atoms: int | None = None
) -> dict:
    """EDM's chemistry metrics and strict validity over all requested samples (a lost sample
    is invalid and unstable).

    ``requested_atoms``: the atoms of every requested sample, lost ones included (their
    atoms count as unstable); None when nothing can be lost (real molecules).
    """
    present = [m for m in mols if m is not None]
    ev = evaluate(present, reference_smiles=[], descriptors=False, progress=progress)
    measured = over_requested(ev.metrics, present, len(mols), requested_atoms)
    out = {k: measured[k] for k in PROTOCOL_QUALITY}
    if sdf is not None:
        sdf.parent.mkdir(parents=True, exist_ok=True)
        write_annotated_sdf(ev, present, sdf)
    return out


def qm9_reference_row(config: RunConfig, progress: bool) -> dict:
    """The stability table's data row, measured on ``protocol.n_reference`` random generator-half molecules.

    Cached per (data set, split, n, seed, data cut) in ``$MOLGUIDE_CACHE/protocol``: it
    depends on the data only.
    """
    from molguide.data.qm9 import default_cache_dir

    pc, dc = config.protocol, config.data
    key = f"{dc.dataset}_{dc.split}_n{pc.n_reference}_seed{pc.seed}"
    key += f"_first{dc.max_molecules}" if dc.max_molecules else ""
    key += "_noH" if dc.remove_hydrogens else ""
    path = default_cache_dir() / "protocol" / f"{key}.json"
    cached = read_json(path)
    if cached is not None and cached.get("quality_version") == QUALITY_VERSION:
        return cached["row"]
    mols = split_molecules(config.data)
    rng = np.random.default_rng([pc.seed, 2])
    idx = rng.choice(len(mols), min(pc.n_reference, len(mols)), replace=False)
    row = {"n": len(idx), **sample_quality(list(mols.subset(idx)), progress)}
    write_json(path, {"quality_version": QUALITY_VERSION, "row": row})
    return row

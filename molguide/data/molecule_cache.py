"""One compressed npz per converted molecule source (QM9, a user's file): written atomically,
read back only when its fingerprint matches the source's."""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from molguide.data.molecules import MoleculeSet
from molguide.storage.files import atomic_write


def write_molecule_cache(
    path: Path, mols: MoleculeSet, fingerprint: Mapping, extras: Mapping[str, np.ndarray] | None = None
) -> None:
    """Save ``mols`` (and ``extras``, arrays that are not properties) under ``fingerprint``."""
    arrays = {
        "atomic_numbers": mols.atomic_numbers,
        "positions": mols.positions,
        "offsets": mols.offsets,
        "names": mols.names,
        "smiles": mols.smiles,
        "fingerprint": np.array(json.dumps(fingerprint, sort_keys=True)),
        **{f"extra_{k}": v for k, v in (extras or {}).items()},
    }
    arrays.update({f"prop_{k}": v for k, v in mols.properties.items()})
    # Atomic: a crash never leaves a half-written cache behind.
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


def read_molecule_cache(path: Path, fingerprint: Mapping) -> tuple[MoleculeSet, dict[str, np.ndarray]]:
    """The molecules and extras saved by :func:`write_molecule_cache`; a ValueError saying
    what is wrong when the file is stale (another fingerprint), unreadable or non-finite."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = json.loads(str(npz["fingerprint"]))
            if stored != json.loads(json.dumps(fingerprint, sort_keys=True)):
                raise ValueError(f"stale (built from {stored}, sources are {dict(fingerprint)})")
            props = {key[len("prop_") :]: npz[key] for key in npz.files if key.startswith("prop_")}
            extras = {key[len("extra_") :]: npz[key] for key in npz.files if key.startswith("extra_")}
            mols = MoleculeSet(
                npz["atomic_numbers"], npz["positions"], npz["offsets"], props, npz["names"], npz["smiles"]
            )
    except (OSError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, json.JSONDecodeError) as err:
        raise ValueError(f"unreadable ({type(err).__name__}: {err})") from err
    if not np.isfinite(mols.positions).all():
        raise ValueError("non-finite coordinates")
    return mols, extras

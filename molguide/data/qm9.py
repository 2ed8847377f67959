"""QM9 from the ``qm9pack`` wheel: parse the CSVs once, cache one compressed npz.

The cache holds int8 atomic numbers, float32 positions (Angstrom), CSR offsets,
properties in named units and the GDB SMILES. It records a fingerprint of the
source files; a cache whose fingerprint, format or contents do not check out is
rebuilt (with a log line), never used.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molguide.data.elements import HARTREE_TO_EV, atomic_number
from molguide.data.molecule_cache import read_molecule_cache, write_molecule_cache
from molguide.data.molecules import MoleculeSet

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_FILE = "qm9_v{fmt}.npz"
NUM_MOLECULES = 130_831
PART_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


@dataclass(frozen=True)
class PropertySpec:
    """How one QM9 property is read: source column, scale to the named unit, description."""

    name: str
    column: str
    scale: float
    unit: str
    description: str


PROPERTIES: tuple[PropertySpec, ...] = (
    PropertySpec("gap_eV", "HOMO_LUMO_gap_au", HARTREE_TO_EV, "eV", "HOMO-LUMO gap"),
    PropertySpec("homo_eV", "HOMO_au", HARTREE_TO_EV, "eV", "HOMO energy"),
    PropertySpec("lumo_eV", "LUMO_au", HARTREE_TO_EV, "eV", "LUMO energy"),
    PropertySpec("mu_D", "Dipole_debye", 1.0, "D", "dipole moment"),
    PropertySpec("alpha_bohr3", "Polarizability_bohr3", 1.0, "bohr^3", "isotropic polarizability"),
    PropertySpec("cv_calmolK", "Heatcapacity_Cv_cal_mol_K", 1.0, "cal/(mol K)", "heat capacity"),
    PropertySpec("zpve_eV", "ZPVE_au", HARTREE_TO_EV, "eV", "zero-point vibrational energy"),
    PropertySpec("u0_eV", "InternalEnergy_0K_au", HARTREE_TO_EV, "eV", "internal energy at 0 K"),
    PropertySpec("r2_bohr2", "R2_bohr2", 1.0, "bohr^2", "electronic spatial extent"),
)
PROPERTY_UNITS: dict[str, str] = {p.name: p.unit for p in PROPERTIES}


class DataError(RuntimeError):
    """A data source is missing or malformed; the message names the file and the problem."""


def default_cache_dir() -> Path:
    """``$MOLGUIDE_CACHE`` when set, otherwise the user's cache folder for molguide."""
    env = os.environ.get("MOLGUIDE_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("molguide"))


def source_files() -> list[Path]:
    """The QM9 CSV files inside the installed ``qm9pack`` wheel (located, not imported)."""
    try:
        dist = importlib.metadata.distribution("qm9pack")
    except importlib.metadata.PackageNotFoundError as err:
        raise DataError("QM9 needs the 'qm9pack' package: pip install qm9pack==1.0.3") from err
    paths = [Path(str(dist.locate_file(f"qm9pack/data/{name}"))) for name in PART_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"qm9pack is installed but its data files are missing: {missing}")
    return paths


def _fingerprint(paths: list[Path]) -> dict:
    dist = importlib.metadata.distribution("qm9pack")
    return {
        "format": CACHE_FORMAT,
        "qm9pack": dist.version,
        "files": {p.name: p.stat().st_size for p in paths},
    }


def _parse_float_lists(column: object, expected: np.ndarray, what: str) -> np.ndarray:
    """Parse strings like '[[1.0,2.],[3,4,5]]' into one flat float array in one pass."""
    text = ",".join(column)
    flat = np.array(text.replace("[", "").replace("]", "").split(","), dtype=np.float64)
    if len(flat) != int(expected.sum()):
        raise DataError(f"QM9 {what}: parsed {len(flat)} numbers, expected {int(expected.sum())}")
    return flat


def parse_qm9(paths: list[Path] | None = None) -> MoleculeSet:
    """Read the qm9pack CSVs into a MoleculeSet, sorted by GDB index (EDM's order)."""
    import pandas as pd

    paths = paths or source_files()
    columns = ["Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang"] + [p.column for p in PROPERTIES]
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_csv(path, usecols=columns))
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read QM9 CSV: {err}") from err
    df = pd.concat(frames, ignore_index=True).sort_values("Index", kind="stable")
    if df[columns].isna().any().any():
        bad = df[columns].isna().any()
        raise DataError(f"QM9 CSVs have empty cells in columns {list(bad[bad].index)}")
    counts = df["N_atoms"].to_numpy(np.int64)
    symbols = ",".join(df["Elements"]).replace("[", "").replace("]", "").replace("'", "")
    table = {s: atomic_number(s) for s in set(symbols.split(","))}
    z = np.array([table[s] for s in symbols.split(",")], dtype=np.int8)
    if len(z) != counts.sum():
        raise DataError(f"QM9 Elements: {len(z)} symbols for {counts.sum()} atoms")
    xyz = _parse_float_lists(df["XYZ_Ang"], counts * 3, "XYZ_Ang").reshape(-1, 3)
    offsets = np.zeros(len(df) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    props = {p.name: df[p.column].to_numpy(np.float64) * p.scale for p in PROPERTIES}
    names = np.array([f"gdb_{i}" for i in df["Index"].to_numpy()])
    return MoleculeSet(z, xyz, offsets, props, names, df["SMILES"].to_numpy(str))


def _read_cache(path: Path, fingerprint: dict) -> MoleculeSet:
    """Load and validate the cache; raises ValueError saying what is wrong with it."""
    mols, _ = read_molecule_cache(path, fingerprint)
    props = mols.properties
    if len(mols) != NUM_MOLECULES or set(props) != {p.name for p in PROPERTIES}:
        raise ValueError(f"incomplete ({len(mols)} molecules, properties {sorted(props)})")
    return mols


def load_qm9(cache_dir: str | Path | None = None, rebuild: bool = False) -> MoleculeSet:
    """All 130,831 QM9 molecules with properties in named units, from the cache.

    The first call parses the qm9pack CSVs (a few seconds) and writes the cache;
    later calls load it in well under a second. A corrupt or stale cache is
    reported in the log and rebuilt.
    """
    paths = source_files()
    fingerprint = _fingerprint(paths)
    path = Path(cache_dir or default_cache_dir()) / CACHE_FILE.format(fmt=CACHE_FORMAT)
    if path.exists() and not rebuild:
        try:
            return _read_cache(path, fingerprint)
        except ValueError as err:
            log.warning("QM9 cache %s is %s; rebuilding it", path, err)
    log.info("building the QM9 cache at %s from qm9pack (once, a few seconds)", path)
    mols = parse_qm9(paths)
    if len(mols) != NUM_MOLECULES:
        raise DataError(f"qm9pack holds {len(mols)} molecules, expected {NUM_MOLECULES}")
    write_molecule_cache(path, mols, fingerprint)
    return mols

"""A user's own molecule file as a data set (``data.path``; docs/own-data.md).

An SDF holds 3D molecules with their properties as SD tags; a CSV (or ``.smi``) holds SMILES
plus property columns, embedded in 3D by RDKit (ETKDGv3 then MMFF, seeded, ``conformers``
per molecule). The conversion runs once per file content and options and is cached; every
record that does not load is listed with its reason (in the log, and all of them in a CSV
beside the cache). The atom types are the elements the file holds; the properties are the
ones the config declares, by tag or column name, with their units. Splits keep the
conformers of one molecule together, at random or by Bemis-Murcko scaffold.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molguide.data.io import MoleculeFileError, RecordError, read_molecules, read_smiles_csv
from molguide.data.molecule_cache import read_molecule_cache, write_molecule_cache
from molguide.data.molecules import Molecule, MoleculeSet
from molguide.data.qm9 import PropertySpec, default_cache_dir
from molguide.data.splits import group_splits
from molguide.storage.files import atomic_write

log = logging.getLogger(__name__)

CONVERSION_FORMAT = 1
SPLIT_METHODS = ("random", "scaffold")
SMILES_SUFFIXES = (".csv", ".smi")
MOLECULE_SUFFIXES = (".sdf", ".sd", ".mol", *SMILES_SUFFIXES)
_SEED_STRIDE = 1_000_003  # conformer c of record k is embedded with seed + c * stride + k


@dataclass(frozen=True)
class PropertyColumn:
    """One property of a user's file: its name in molguide, the SD tag or CSV column it is
    read from, its unit and a description (shown in tables and plots)."""

    name: str
    column: str
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class FileDataSpec:
    """What to read from a user's molecule file and how to split it (the ``data`` section)."""

    path: str
    properties: tuple[PropertyColumn, ...] = ()
    split_by: str = "random"
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    conformers: int = 1
    embed_seed: int = 0
    smiles_column: str | None = None
    max_atoms: int | None = None
    elements: tuple[str, ...] | None = None

    @classmethod
    def from_config(cls, data) -> FileDataSpec:
        """The spec of a config's ``data`` section (``data.path`` set)."""
        props = tuple(
            PropertyColumn(name, p.column or name, p.unit, p.description)
            for name, p in data.properties.items()
        )
        return cls(
            str(data.path),
            props,
            data.split_by,
            data.split_seed,
            tuple(data.split_fractions),
            data.conformers,
            data.embed_seed,
            data.smiles_column,
            data.max_atoms,
            tuple(data.elements) if data.elements else None,
        )


@dataclass
class ConvertedFile:
    """A file's molecules as converted (numeric properties by their tag or column name),
    the record each came from, and every record that did not load."""

    molecules: MoleculeSet
    records: np.ndarray  # (n,) 1-based record number of each molecule
    skipped: list[RecordError]
    cache: Path


def _content_digest(path: Path) -> str:
    """SHA-256 of the file's bytes (the cache follows the content, not the name or mtime)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise MoleculeFileError(f"{path}: cannot read ({err.strerror or err})") from None
    return digest.hexdigest()


def _fingerprint(spec: FileDataSpec, digest: str) -> dict:
    """What the conversion depends on: the content and the reading options, not the split."""
    smiles_file = Path(spec.path).suffix.lower() in SMILES_SUFFIXES
    return {
        "format": CONVERSION_FORMAT,
        "sha256": digest,
        "conformers": spec.conformers if smiles_file else 1,
        "embed_seed": spec.embed_seed if smiles_file else 0,
        "smiles_column": spec.smiles_column if smiles_file else None,
        "property_columns": sorted(p.column for p in spec.properties) if smiles_file else [],
    }


def _canonical_from_record(text: str) -> str:
    """Canonical SMILES of an SDF record from its own bonds ('' when RDKit cannot sanitise it)."""
    from rdkit import Chem
    from rdkit.rdBase import BlockLogs

    from molguide.chem.smiles import canonical_smiles

    with BlockLogs():
        mol = Chem.MolFromMolBlock(text, sanitize=True, removeHs=False)
    return (canonical_smiles(mol) or "") if mol is not None else ""


def _read_file(spec: FileDataSpec, workers: int | None) -> tuple[list[Molecule], list[int], list[str], list]:
    """Molecules, their record numbers and canonical SMILES, and the records that failed."""
    from molguide.chem.smiles import canonicalise

    path = Path(spec.path)
    if path.suffix.lower() not in SMILES_SUFFIXES:
        report = read_molecules(path)
        mols = report.molecules
        records = [m.source.record if m.source else k + 1 for k, m in enumerate(mols)]
        smiles = [_canonical_from_record(m.source.text) if m.source else "" for m in mols]
        return mols, records, smiles, report.errors
    if path.suffix.lower() == ".smi" and spec.properties:
        raise MoleculeFileError(f"{path}: a .smi file has no property columns; use a CSV for properties")
    mols, records, smiles, skipped = [], [], [], []
    columns = [p.column for p in spec.properties]
    for c in range(spec.conformers):
        report = read_smiles_csv(
            path,
            spec.smiles_column,
            seed=spec.embed_seed + c * _SEED_STRIDE,
            workers=workers,
            property_columns=columns,
        )
        failed = {e.record for e in report.errors}
        loaded = [k for k in range(1, report.n_records + 1) if k not in failed]
        for k, mol in zip(loaded, report.molecules):
            mols.append(mol)
            records.append(k)
            smiles.append(canonicalise(mol.tags.get("smiles", "")) or "")
        tag = "" if spec.conformers == 1 else f"conformer {c + 1}: "
        skipped += [RecordError(e.file, e.record, tag + e.reason, e.line) for e in report.errors]
    return mols, records, smiles, skipped


def _write_skipped(path: Path, skipped: Sequence[RecordError]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "record", "line", "reason"])
    writer.writerows([e.file, e.record, e.line or "", e.reason] for e in skipped)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue().encode()))


def _read_skipped(path: Path) -> list[RecordError]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [
        RecordError(r["file"], int(r["record"]), r["reason"], int(r["line"]) if r["line"] else None)
        for r in rows
    ]


def convert_file(
    spec: FileDataSpec, cache_dir: str | Path | None = None, workers: int | None = None
) -> ConvertedFile:
    """Read ``spec.path`` once per content and options; later calls load the cached conversion.

    Raises MoleculeFileError when the file cannot be read or no record loads.
    """
    path = Path(spec.path)
    if path.suffix.lower() not in MOLECULE_SUFFIXES:
        raise MoleculeFileError(
            f"{path}: data.path takes an SDF, CSV or .smi file, not {path.suffix or 'no extension'!r}"
        )
    digest = _content_digest(path)
    fingerprint = _fingerprint(spec, digest)
    key = hashlib.sha256(repr(sorted(fingerprint.items())).encode()).hexdigest()[:16]
    folder = Path(cache_dir or default_cache_dir()) / "files"
    cache, skipped_csv = folder / f"{path.stem}-{key}.npz", folder / f"{path.stem}-{key}.skipped.csv"
    if cache.exists() and skipped_csv.exists():
        try:
            mols, extras = read_molecule_cache(cache, fingerprint)
            # The same content under another name: its records, reported under this name.
            skipped = [RecordError(str(path), e.record, e.reason, e.line) for e in _read_skipped(skipped_csv)]
            return ConvertedFile(mols, extras["records"], skipped, cache)
        except (ValueError, KeyError, OSError) as err:
            log.warning("cached conversion %s is %s; converting %s again", cache, err, path)
    log.info("converting %s into molguide's cache (once per file content): %s", path, cache)
    molecules, records, smiles, skipped = _read_file(spec, workers)
    if not molecules:
        from molguide.data.io import LoadReport

        LoadReport(str(path), [], skipped).require_molecules()  # raises, listing the reasons
    packed = MoleculeSet.from_molecules(molecules).relabelled(smiles=smiles)
    _write_skipped(skipped_csv, skipped)
    write_molecule_cache(cache, packed, fingerprint, {"records": np.asarray(records, dtype=np.int64)})
    return ConvertedFile(packed, np.asarray(records, dtype=np.int64), skipped, cache)


def _named_properties(spec: FileDataSpec, converted: ConvertedFile) -> dict[str, np.ndarray]:
    """The declared properties by their molguide names; a tag or column no record has is an error."""
    found = converted.molecules.properties
    out = {}
    for prop in spec.properties:
        if prop.column not in found:
            raise MoleculeFileError(
                f"{spec.path}: data.properties.{prop.name}: no record has a numeric "
                f"{prop.column!r} (numeric tags/columns found: {sorted(found) or 'none'})"
            )
        out[prop.name] = found[prop.column]
    return out


def scaffold_of(smiles: str) -> str | None:
    """The Bemis-Murcko scaffold of a canonical SMILES ('' for an acyclic molecule; None if
    the SMILES is empty or RDKit cannot parse it)."""
    if not smiles:
        return None
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def molecule_keys(converted: ConvertedFile) -> np.ndarray:
    """Which molecule each entry is (its conformers share it): its canonical SMILES, else its record."""
    return np.asarray(
        [f"smiles {s}" if s else f"record {r}" for s, r in zip(converted.molecules.smiles, converted.records)]
    )


def scaffold_keys(converted: ConvertedFile) -> np.ndarray:
    """Each molecule's Bemis-Murcko scaffold (a molecule RDKit cannot read is its own group)."""
    own = molecule_keys(converted)
    scaffolds = [scaffold_of(str(s)) for s in converted.molecules.smiles]
    return np.asarray([key if sc is None else f"scaffold {sc}" for key, sc in zip(own, scaffolds)])


def _report(
    spec: FileDataSpec,
    everything: ConvertedFile,
    converted: ConvertedFile,
    props: Mapping[str, np.ndarray],
    types: Sequence[int],
) -> None:
    """Log what was loaded, what was skipped (and where the full list is), what was kept
    (``converted``: within data.max_atoms and data.elements) and what is missing."""
    from molguide.data.elements import symbol

    n, skipped = len(converted.molecules), everything.skipped
    failed = {e.record for e in skipped} - set(everything.records.tolist())
    records = len(set(everything.records.tolist()) | failed)
    log.info(
        "data %s: %d molecules from %d records, records not loaded: %d; %d molecules kept (elements %s)",
        spec.path,
        len(everything.molecules),
        records,
        len(failed),
        n,
        " ".join(symbol(z) for z in types),
    )
    for err in skipped[:5]:
        log.warning("data %s", err)
    if skipped:
        where = converted.cache.with_suffix(".skipped.csv")
        log.warning("data %s: every failure (%d) with its reason in %s", spec.path, len(skipped), where)
    for name, values in props.items():
        missing = np.flatnonzero(~np.isfinite(values))
        if len(missing):
            shown = ", ".join(str(r) for r in converted.records[missing[:10]])
            log.warning(
                "data %s: %d of %d molecules have no numeric %s (records %s%s): they train the "
                "generator, not the %s networks",
                spec.path,
                len(missing),
                n,
                name,
                shown,
                ", ..." if len(missing) > 10 else "",
                name,
            )
    without = int(sum(1 for s in converted.molecules.smiles if not s))
    if without:
        log.warning(
            "data %s: %d molecules have no SMILES RDKit accepts: left out of novelty's reference, "
            "each its own split group",
            spec.path,
            without,
        )


def _kept(spec: FileDataSpec, converted: ConvertedFile) -> ConvertedFile:
    """The molecules within ``max_atoms`` and ``elements``; the others are logged, by record."""
    from molguide.data.elements import atomic_number

    mols = converted.molecules
    keep = np.ones(len(mols), dtype=bool)
    reasons = []
    if spec.max_atoms is not None:
        large = mols.num_atoms > spec.max_atoms
        reasons.append((large & keep, f"more than data.max_atoms = {spec.max_atoms} atoms"))
        keep &= ~large
    if spec.elements is not None:
        allowed = {atomic_number(s) for s in spec.elements}
        atom_ok = np.isin(mols.atomic_numbers, list(allowed))
        per_mol = np.add.reduceat(~atom_ok, mols.offsets[:-1]) if len(mols) else np.zeros(0, dtype=int)
        other = (per_mol > 0) & (mols.num_atoms > 0)
        reasons.append((other & keep, f"elements outside data.elements {list(spec.elements)}"))
        keep &= ~other
    for left_out, why in reasons:
        if left_out.any():
            shown = ", ".join(str(r) for r in converted.records[left_out][:10])
            more = ", ..." if left_out.sum() > 10 else ""
            count = int(left_out.sum())
            log.warning(
                "data %s: %d molecules left out, %s (records %s%s)",
                spec.path,
                count,
                why,
                shown,
                more,
            )
    if not keep.any():
        raise MoleculeFileError(f"{spec.path}: data.max_atoms / data.elements leave no molecule")
    if keep.all():
        return converted
    kept = mols.subset(np.flatnonzero(keep))
    return ConvertedFile(kept, converted.records[keep], converted.skipped, converted.cache)


_LOADED: dict[tuple, object] = {}


def file_dataset(spec: FileDataSpec, cache_dir: str | Path | None = None):
    """The :class:`~molguide.data.registry.Dataset` of a user's file (loaded once per process
    and file state): its molecules, grouped splits, declared properties and elements."""
    from molguide.data.registry import Dataset

    path = Path(spec.path)
    try:
        stat = path.stat()
    except OSError as err:
        raise MoleculeFileError(f"{path}: data.path: {err.strerror or err}") from None
    memo = (spec, str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(cache_dir))
    if memo in _LOADED:
        return _LOADED[memo]
    everything = convert_file(spec, cache_dir)
    converted = _kept(spec, everything)
    props = _named_properties(spec, converted)
    mols = converted.molecules.relabelled(properties=props)
    types = tuple(int(z) for z in np.unique(mols.atomic_numbers))
    _report(spec, everything, converted, props, types)
    try:
        molecules = molecule_keys(converted)
        scaffold = spec.split_by == "scaffold"
        groups = scaffold_keys(converted) if scaffold else molecules
        splits = group_splits(groups, spec.split_seed, spec.split_fractions, scaffold, molecules)
    except ValueError as err:
        raise MoleculeFileError(f"{path}: {err}") from None
    train_smiles = frozenset(s for s in mols.smiles[splits["train"]] if s)

    def split_indices(n: int) -> dict[str, np.ndarray]:
        if n != len(mols):
            raise ValueError(f"{path}: splits are for its {len(mols)} molecules, not {n}")
        return splits

    dataset = Dataset(
        path.name,
        lambda: mols,
        split_indices,
        tuple(PropertySpec(p.name, p.column, 1.0, p.unit, p.description or p.name) for p in spec.properties),
        tuple(p.name for p in spec.properties),
        types,
        lambda: train_smiles,
    )
    _LOADED[memo] = dataset
    return dataset

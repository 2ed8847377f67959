"""Molecule files in and out: SDF, XYZ, CSV/SMI of SMILES with properties.

Every reader returns a :class:`LoadReport`: the molecules that loaded and one
:class:`RecordError` (file, record number, line, reason) for every record that
did not. A file that cannot be read at all, or holds no records, raises
:class:`MoleculeFileError` with one clear line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import numbers
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from molguide.data.elements import SYMBOLS, atomic_number, is_element_symbol, symbol
from molguide.data.molecules import Molecule, SourceRecord
from molguide.storage.files import atomic_write

log = logging.getLogger(__name__)


class MoleculeFileError(RuntimeError):
    """A molecule file that cannot be used at all (missing, unreadable, empty, unknown type)."""


@dataclass(frozen=True)
class RecordError:
    """Why one record of a file was not loaded."""

    file: str
    record: int  # 1-based record number in the file
    reason: str
    line: int | None = None  # 1-based line where the record starts, when known
    text: str | None = field(default=None, repr=False, compare=False)  # the record (SDF)

    def as_dict(self) -> dict:
        """The JSON shape of one entry of ``errors`` in ``molguide evaluate --json``."""
        return {"file": self.file, "record": self.record, "line": self.line, "reason": self.reason}

    def __str__(self) -> str:
        where = f"{self.file}: record {self.record}"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.reason}"


@dataclass
class LoadReport:
    """The outcome of reading one file: loaded molecules and per-record errors."""

    file: str
    molecules: list[Molecule] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)

    @property
    def n_records(self) -> int:
        return len(self.molecules) + len(self.errors)

    def require_molecules(self, max_reasons: int = 20) -> list[Molecule]:
        """The molecules; when none loaded, a MoleculeFileError listing why each record failed."""
        if self.molecules:
            return self.molecules
        reasons = [f"  record {e.record}" + (f" (line {e.line})" if e.line else "") + f": {e.reason}"
                   for e in self.errors[:max_reasons]]  # fmt: skip
        if len(self.errors) > max_reasons:
            reasons.append(f"  ... and {len(self.errors) - max_reasons} more")
        raise MoleculeFileError(
            "\n".join([f"{self.file}: none of the {self.n_records} records could be read:", *reasons])
        )

    def summary(self) -> str:
        """One line: how many records loaded and how many were skipped."""
        return (
            f"{self.file}: loaded {len(self.molecules)} of {self.n_records} records, "
            f"skipped {len(self.errors)}"
        )


# Molecule files above this size are refused unless the limit is raised: the molecules of
# a 1 GiB SDF (about 300,000 drug-sized records) already take several GiB of memory, and
# without a limit a link to /dev/zero or a runaway file would fill the machine's memory.
DEFAULT_MAX_FILE_MB = 1024.0
MAX_FILE_MB_ENV = "MOLGUIDE_MAX_FILE_MB"
_MB = 1024 * 1024
_CHUNK = 1 << 20  # bytes read at a time


def max_file_bytes(max_mb: float | None = None) -> int:
    """The size limit for molecule files in bytes: ``max_mb`` megabytes (MiB), else
    ``$MOLGUIDE_MAX_FILE_MB``, else :data:`DEFAULT_MAX_FILE_MB`.

    ValueError for a ``max_mb`` that is not a positive number, MoleculeFileError for
    such an environment variable.
    """
    if max_mb is not None:
        if isinstance(max_mb, bool) or not isinstance(max_mb, numbers.Real) or not 0 < max_mb < math.inf:
            raise ValueError(f"max_mb must be a positive number of megabytes, not {max_mb!r}")
        return max(1, int(max_mb * _MB))
    raw = os.environ.get(MAX_FILE_MB_ENV, "").strip()
    if not raw:
        return int(DEFAULT_MAX_FILE_MB * _MB)
    value = _parse_value(raw)
    if value is None or not 0 < value < math.inf:
        raise MoleculeFileError(f"{MAX_FILE_MB_ENV}={raw!r}: not a positive number of megabytes")
    return max(1, int(value * _MB))


def _size(n_bytes: float) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", _MB), ("KB", 1 << 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{int(n_bytes)} bytes"


def _limit_hint(limit: int) -> str:
    return (
        f"over the {_size(limit)} limit for molecule files (raise it with --max-file-mb, "
        f"{MAX_FILE_MB_ENV} or read(..., max_mb=...))"
    )


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: Path, mode: int) -> MoleculeFileError | None:
    if stat.S_ISDIR(mode):
        return MoleculeFileError(f"{path}: is a folder, not a molecule file")
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
    # A pipe may never end and a device may never stop giving bytes: read only real files.
    return MoleculeFileError(f"{path}: is {kind}, not a regular file; save the molecules to a file first")


def _missing(path: Path, err: OSError) -> MoleculeFileError:
    """The one line for a path that cannot be opened, by its cause."""
    if err.errno == errno.ELOOP:
        return MoleculeFileError(f"{path}: symlink loop (the links lead back to themselves)")
    if err.errno == errno.ENOENT and os.path.islink(path):
        return MoleculeFileError(f"{path}: broken symlink (to {os.readlink(path)}, which does not exist)")
    if err.errno == errno.ENOENT:
        return MoleculeFileError(f"{path}: no such file")
    if err.errno in (errno.EACCES, errno.EPERM):
        return MoleculeFileError(f"{path}: permission denied")
    return MoleculeFileError(f"{path}: cannot read ({err.strerror})")


def _open_molecule_file(path: Path, max_bytes: int):
    """The regular file at ``path`` opened for binary reading, after the checks that
    need no reading: it exists, is no folder, pipe or device, and is within the limit."""
    try:
        problem = _not_regular(path, os.stat(path).st_mode)
    except OSError as err:
        raise _missing(path, err) from err
    if problem is not None:
        raise problem
    try:
        # O_NONBLOCK: a FIFO put in the file's place since the check must not hang the open.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise _missing(path, err) from err
    info = os.fstat(fd)
    problem = _not_regular(path, info.st_mode)
    if problem is None and info.st_size > max_bytes:
        problem = MoleculeFileError(f"{path}: is {_size(info.st_size)}, {_limit_hint(max_bytes)}")
    if problem is not None:
        os.close(fd)
        raise problem
    return os.fdopen(fd, "rb")


def _iter_lines(path: Path, max_bytes: int | None = None) -> Iterator[str]:
    """The file's lines, split at line feeds only (as ``str.split`` would), read in chunks.

    Never more than ``max_bytes`` (default :func:`max_file_bytes`) are read, nor more
    than one line is held besides the chunk. Bytes that are not UTF-8 are kept as lone
    surrogates so that only the records holding them fail (see :func:`_undecodable`),
    not the file. A NUL byte (binary data), UTF-16 text or a file of only white space
    raise MoleculeFileError where they are met.
    """
    limit = max_file_bytes() if max_bytes is None else max_bytes
    seen_text, total, pending = False, 0, b""
    with _open_molecule_file(path, limit) as fh:
        while True:
            try:
                chunk = fh.read(_CHUNK)
            except OSError as err:
                raise MoleculeFileError(f"{path}: cannot read ({err.strerror})") from err
            if total == 0 and chunk.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise MoleculeFileError(
                    f"{path}: is UTF-16 text (as Windows PowerShell writes); save it as UTF-8"
                )
            if total == 0 and chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]  # a UTF-8 byte order mark
                total = 3
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise MoleculeFileError(f"{path}: not a text file (binary data at byte {total + nul})")
            total += len(chunk)
            if total > limit:  # the file grew after the size check, or reports no size (/proc)
                raise MoleculeFileError(f"{path}: holds more than {_size(limit)}, {_limit_hint(limit)}")
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                text = line.decode("utf-8", errors="surrogateescape")
                seen_text = seen_text or bool(text.strip())
                yield text
    text = pending.decode("utf-8", errors="surrogateescape")
    if not (seen_text or text.strip()):
        raise MoleculeFileError(f"{path}: file is empty")
    yield text


def _read_text(path: Path, max_bytes: int | None = None) -> str:
    """The whole text of a (small) molecule file, with the checks of :func:`_iter_lines`."""
    return "\n".join(_iter_lines(path, max_bytes))


_UNDECODED = re.compile("[\udc80-\udcff]")


def _undecodable(text: str, first_line: int) -> str | None:
    """Why a record's text is not UTF-8 (the line and byte), or None when it is."""
    match = _UNDECODED.search(text)
    if match is None:
        return None
    line = first_line + text.count("\n", 0, match.start())
    byte = ord(match.group()) - 0xDC00
    return f"line {line}: byte 0x{byte:02X} is not UTF-8 (save the file as UTF-8)"


# Coordinates beyond this (Angstrom) are a unit or parsing error, not a molecule: squared
# distances of such values overflow and every metric downstream would be nonsense.
MAX_COORDINATE = 1e4


def _out_of_range(atom: int, value: float | str) -> str:
    return f"atom {atom}: coordinate {value} is out of range (|x| > {MAX_COORDINATE:g} Angstrom)"


# Elements whose atom with four bonded neighbours is tetrahedral, never flat.
_TETRAHEDRAL = {5: "B", 6: "C", 7: "N", 14: "Si"}


def geometry_problem(
    atomic_numbers: np.ndarray, positions: np.ndarray, flagged_2d: bool | None, keep_coincident: bool = False
) -> str | None:
    """Why coordinates cannot be a 3D molecule, or None when they can (with
    ``keep_coincident``, atoms closer than :data:`MIN_ATOM_DISTANCE` are not a reason:
    the evaluation then counts such a molecule as unstable and invalid).

    All z = 0 is a 2D drawing when the file says so (an SDF without the 3D flag:
    ``flagged_2d``). A file without such a flag (XYZ: ``flagged_2d=None``) may hold a
    planar molecule lying in z = 0 (benzene in a standard orientation), so there it
    takes proof: a carbon, nitrogen, boron or silicon with four bonded neighbours in
    that plane, which no real structure has.
    """
    if not np.isfinite(positions).all():
        return "non-finite coordinate"
    worst = np.abs(positions).max(initial=0.0)
    if worst > MAX_COORDINATE:
        return _out_of_range(int(np.argmax(np.abs(positions).max(axis=1))) + 1, f"{worst:.3g}")
    planar = len(positions) >= 2 and np.allclose(positions[:, 2], 0.0)
    if planar and flagged_2d:
        return "coordinates are 2D (all z = 0); a 3D conformer is needed"
    coincident = None if keep_coincident else coincident_atoms(atomic_numbers, positions)
    if coincident is not None or not planar or flagged_2d is False:
        return coincident
    flat = _flat_tetrahedral_atom(atomic_numbers, positions)
    if flat is not None:
        return (
            f"coordinates are 2D (all z = 0, and atom {flat + 1} ({_TETRAHEDRAL[int(atomic_numbers[flat])]}) "
            "has four bonded neighbours in that plane); a 3D structure is needed"
        )
    return None


# Atoms closer than this (Angstrom) are one atom written twice or a broken structure, never
# a molecule: the shortest bond there is, H-H in H2, is 0.74 A, bonds to hydrogen are
# 0.92-1.1 A, and atoms that are not bonded stay beyond 2 A. RDKit's bond perception (its
# extended-Hueckel code) kills the process on two atoms in one place, so this is checked
# before anything is perceived.
MIN_ATOM_DISTANCE = 0.5

# Positions are projected on this direction (no lattice or plane of a structure is aligned
# with it) and sorted, so that only neighbours along it are compared: no n x n matrix.
_PROJECTION = np.array([1.0, math.sqrt(2.0), math.pi]) / math.sqrt(3.0 + math.pi**2)


def closest_pair(positions: np.ndarray, below: float = MIN_ATOM_DISTANCE) -> tuple[int, int, float] | None:
    """Two atoms (0-based, first < second) closer than ``below`` Angstrom and their
    distance, or None when no pair is that close. Up to 64 atoms it is the closest pair;
    above, the closest of the first pairs found, which is enough to name the fault."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(pos) <= 64:  # small molecules: all pairs at once is cheaper than sorting
        diff = pos[:, None] - pos[None]
        squared = np.einsum("ijk,ijk->ij", diff, diff)
        np.fill_diagonal(squared, np.inf)
        i, j = divmod(int(np.argmin(squared)), len(pos)) if len(pos) > 1 else (0, 0)
        if len(pos) < 2 or squared[i, j] >= below * below:
            return None
        return min(i, j), max(i, j), float(np.sqrt(squared[i, j]))
    projected = pos @ _PROJECTION
    order = np.argsort(projected, kind="stable")
    along = projected[order]
    sorted_pos = pos[order]
    for shift in range(1, len(pos)):
        # Atoms closer than ``below`` are closer than that along the direction too; the gaps
        # grow with the shift, so once none is small enough no later shift has one.
        near = np.flatnonzero(along[shift:] - along[:-shift] < below)
        if len(near) == 0:
            return None
        distance = np.linalg.norm(sorted_pos[near + shift] - sorted_pos[near], axis=1)
        hits = np.flatnonzero(distance < below)
        if len(hits):
            k = hits[np.argmin(distance[hits])]
            i, j = sorted(int(a) for a in (order[near[k]], order[near[k] + shift]))
            return i, j, float(distance[k])
    return None


def coincident_atoms(atomic_numbers: np.ndarray, positions: np.ndarray) -> str | None:
    """Why two atoms cannot both be there (closer than :data:`MIN_ATOM_DISTANCE`), or None."""
    pair = closest_pair(positions)
    if pair is None:
        return None
    i, j, distance = pair

    def atom(k: int) -> str:
        z = int(atomic_numbers[k])
        return f"{k + 1} ({symbol(z) if 0 < z < len(SYMBOLS) else z})"

    return (
        f"atoms {atom(i)} and {atom(j)} are {distance:.3f} Angstrom apart (closer than "
        f"{MIN_ATOM_DISTANCE} Angstrom: one atom written twice, or a broken structure)"
    )


def molecule_problem(molecule: Molecule, keep_coincident: bool = False) -> str | None:
    """Why a Molecule built in Python cannot be evaluated (no atoms, an atomic number
    outside the periodic table, coordinates as :func:`geometry_problem` checks them), or None."""
    if molecule.num_atoms == 0:
        return "molecule has no atoms"
    bad = [int(z) for z in molecule.atomic_numbers if not 0 < int(z) < len(SYMBOLS)]
    if bad:
        return f"atomic number {bad[0]} is not an element (1-{len(SYMBOLS) - 1})"
    return geometry_problem(molecule.atomic_numbers, molecule.positions, None, keep_coincident)


def _flat_tetrahedral_atom(atomic_numbers: np.ndarray, positions: np.ndarray) -> int | None:
    """The first atom of :data:`_TETRAHEDRAL` with 4 or more neighbours within bonding
    distance (1.25 x the sum of covalent radii), or None."""
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    radii = np.array([table.GetRcovalent(int(z)) for z in atomic_numbers])
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    bonded = (distances < 1.25 * (radii[:, None] + radii[None])) & ~np.eye(len(positions), dtype=bool)
    for atom in np.flatnonzero(bonded.sum(axis=1) >= 4):
        if int(atomic_numbers[atom]) in _TETRAHEDRAL:
            return int(atom)
    return None


def _parse_value(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value


# ----------------------------------------------------------------------------- SDF


_RDKIT_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\]\s*")


@contextlib.contextmanager
def rdkit_messages() -> Iterator[list[str]]:
    """Collect RDKit's log messages (instead of printing them) inside the block."""
    from rdkit import RDLogger, rdBase

    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(_RDKIT_TIMESTAMP.sub("", record.getMessage().strip()))

    rdBase.LogToPythonLogger()
    rd_logger = logging.getLogger("rdkit")
    # RDKit adds its own stderr handler to this logger: swap it out while collecting.
    saved = (rd_logger.handlers[:], rd_logger.propagate)
    rd_logger.handlers = [_Collect()]
    rd_logger.propagate = False
    RDLogger.EnableLog("rdApp.error")
    RDLogger.EnableLog("rdApp.warning")
    try:
        yield messages
    finally:
        rd_logger.handlers, rd_logger.propagate = saved


_COUNTS_LINE = re.compile(r"^[\d ]{6}.*V[23]000\s*$")


@dataclass(frozen=True)
class _SdfRecord:
    line: int  # 1-based line where the record starts
    text: str  # the record without its ``$$$$`` line
    problem: str | None = None  # why it cannot be trusted, found while splitting


def _split_sdf_records(lines: Iterable[str]) -> Iterator[_SdfRecord]:
    """The records between ``$$$$`` lines, also splitting where a ``$$$$`` is missing,
    one at a time as the lines come (the file is never held whole).

    After ``M  END`` only SD data items may follow (``> <name>`` and value lines, each
    item ended by a blank line). A molfile counts line there means the next molecule
    began three lines earlier without a ``$$$$``; the record before it is reported
    rather than merged into one molecule with the next one's text as data.
    """
    chunk: list[str] = []  # the current record's lines, as read
    start, in_data, in_value, stray = 0, False, False, None

    def record(part: list[str], problem: str | None) -> _SdfRecord | None:
        if any(ln.strip() for ln in part):
            return _SdfRecord(start + 1, "\n".join(part) + "\n", problem)
        return None

    for k, raw in enumerate(lines):
        line = raw.rstrip("\r")  # the record keeps its own line endings
        if line.strip() == "$$$$":
            if (done := record(chunk, stray)) is not None:
                yield done
            chunk, start, in_data, in_value, stray = [], k + 1, False, False, None
            continue
        if not in_data:
            in_data = line.startswith("M  END")
        elif _COUNTS_LINE.match(line) and len(chunk) > 3:
            problem = f"no '$$$$' line after this record's data; the next record starts at line {k - 2}"
            if (done := record(chunk[:-3], problem)) is not None:
                yield done
            # The new record began with the three lines before this counts line.
            chunk, start, in_data, in_value, stray = chunk[-3:], k - 3, False, False, None
        elif line.startswith(">"):
            in_value = True
        elif not line.strip():
            in_value = False
        elif not in_value and stray is None:
            stray = f"line {k + 1}: text after M  END that is not an SD data item (a missing '$$$$'?)"
        chunk.append(raw)
    if (done := record(chunk, stray)) is not None:
        yield done


def _diagnose_molblock(block: str) -> str | None:
    """A specific reason why a V2000 block is malformed, or None if none is found."""
    lines = [line.rstrip("\r") for line in block.split("\n")]
    if lines and not lines[-1]:
        lines.pop()
    if len(lines) < 4:
        return f"block has {len(lines)} lines, too short for a molfile header and counts line"
    counts = lines[3]
    if "V3000" in counts:
        return None
    try:
        n_atoms = int(counts[0:3])
        n_bonds = int(counts[3:6])
    except ValueError:
        return f"counts line {counts!r} does not start with atom and bond counts"
    atom_lines = lines[4 : 4 + n_atoms]
    if len(atom_lines) < n_atoms:
        return f"counts line declares {n_atoms} atoms but the block has {len(atom_lines)} atom lines"
    for k, line in enumerate(atom_lines, start=1):
        fields = line.split()
        if len(fields) < 4:
            return f"atom {k}: line {line!r} has fewer than 4 fields"
        for coord in fields[:3]:
            if _parse_value(coord) is None or not math.isfinite(float(coord)):
                return f"atom {k}: non-numeric coordinate {coord!r}"
            if abs(float(coord)) > MAX_COORDINATE:  # RDKit would misread it, or fail without a reason
                return _out_of_range(k, coord)
        if not is_element_symbol(fields[3]):
            return f"atom {k}: unknown element {fields[3]!r}"
    bond_lines = lines[4 + n_atoms : 4 + n_atoms + n_bonds]
    if len(bond_lines) < n_bonds or any(not line[:3].strip().isdigit() for line in bond_lines):
        return f"counts line declares {n_bonds} bonds but the bond lines do not match"
    for k, line in enumerate(bond_lines, start=1):
        # RDKit stops on a bond to an atom that does not exist with a C++ stack trace on stderr.
        ends = [line[0:3].strip(), line[3:6].strip()]
        if not all(end.isdigit() and 1 <= int(end) <= n_atoms for end in ends):
            return f"bond {k}: line {line!r} names atoms {ends[0]!r} and {ends[1]!r}, not 2 of the {n_atoms}"
    following = lines[4 + n_atoms + n_bonds : 5 + n_atoms + n_bonds]
    if following and _looks_like_atom_line(following[0]):
        return f"counts line declares {n_atoms} atoms and {n_bonds} bonds but more atom lines follow"
    return None


def _looks_like_atom_line(line: str) -> bool:
    fields = line.split()
    return len(fields) >= 4 and all(_parse_value(f) is not None for f in fields[:3])


def molecule_from_rdkit(mol, name: str, keep_coincident: bool = False) -> tuple[Molecule | None, str | None]:
    """Molecule from an RDKit Mol with a 3D conformer; (None, reason) when unusable
    (``keep_coincident``: see :func:`geometry_problem`)."""
    if mol.GetNumAtoms() == 0:
        return None, "molecule has no atoms"
    if mol.GetNumConformers() == 0:
        return None, "molecule has no coordinates"
    conf = mol.GetConformer()
    pos = np.array(conf.GetPositions(), dtype=np.float64)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    if (z == 0).any():
        return None, "dummy or unknown atom (atomic number 0)"
    problem = geometry_problem(z, pos, not conf.Is3D(), keep_coincident)
    if problem is not None:
        return None, problem
    props: dict[str, float] = {}
    tags: dict[str, str] = {}
    for key in mol.GetPropNames():
        raw = mol.GetProp(key)
        value = _parse_value(raw)
        if value is None:
            tags[key] = raw
        else:
            props[key] = value
    return Molecule(z, pos, props, name=name, tags=tags), None


def read_sdf(path: str | Path, max_mb: float | None = None) -> LoadReport:
    """Read an SDF (V2000 or V3000): 3D coordinates, numeric SD tags as properties.

    Each molecule keeps its record (``Molecule.source``), and each record error its
    text, so that a tool writing them back can keep every atom, bond and SD tag exactly
    as given. The file is read record by record, up to ``max_mb`` (see :func:`max_file_bytes`).
    """
    from rdkit import Chem

    path = Path(path)
    report = LoadReport(str(path))
    lines = _iter_lines(path, max_file_bytes(max_mb))
    for record, sdf in enumerate(_split_sdf_records(lines), start=1):
        reason = sdf.problem or _undecodable(sdf.text, sdf.line) or _diagnose_molblock(sdf.text)
        mol = None
        if reason is None:
            with rdkit_messages() as messages:
                # One block at a time so a bad record cannot take its neighbours down.
                supplier = Chem.SDMolSupplier()
                supplier.SetData(sdf.text + "$$$$\n", sanitize=False, removeHs=False, strictParsing=True)
                try:
                    mol = next(iter(supplier), None)
                except (SystemError, UnicodeError):
                    # RDKit sometimes logs bytes past the end of a malformed line (seen on an
                    # atom-list query line), which Python cannot decode: the record is unreadable.
                    mol = None
            if mol is None:
                reason = "RDKit cannot parse the block" + (f": {messages[-1]}" if messages else "")
        if mol is not None:
            name = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
            molecule, reason = molecule_from_rdkit(mol, name or f"{path.stem}_{record}")
            if molecule is not None:
                molecule.source = SourceRecord(record, sdf.text)
                report.molecules.append(molecule)
                continue
        report.errors.append(RecordError(str(path), record, reason or "unreadable", sdf.line, sdf.text))
    if report.n_records == 0:
        raise MoleculeFileError(f"{path}: no SDF records found")
    return report


def _sdf_value(value: float) -> str:
    # repr gives the shortest string that reads back to the same float.
    return repr(float(value))


def add_bond_orders(mol, orders: np.ndarray) -> None:
    """Add a bond for every nonzero entry of the upper triangle of the symmetric bond-order
    matrix ``orders`` (1, 2, 3: single, double, triple) to the RDKit RWMol ``mol``."""
    from rdkit import Chem

    bond_types = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    for i, j in zip(*np.nonzero(np.triu(orders, 1))):
        mol.AddBond(int(i), int(j), bond_types[int(orders[i, j])])


def molecule_to_rdkit(molecule: Molecule):
    """An RDKit Mol with the molecule's atoms and 3D conformer, no bonds (see molguide.chem
    for bond perception); properties become SD tags."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    rw = Chem.RWMol()
    for z in molecule.atomic_numbers:
        atom = Chem.Atom(int(z))
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    conf = Chem.Conformer(molecule.num_atoms)
    conf.Set3D(True)
    for i, (x, y, zc) in enumerate(molecule.positions):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), float(zc)))
    mol = rw.GetMol()
    mol.AddConformer(conf, assignId=True)
    if molecule.name:
        mol.SetProp("_Name", molecule.name)
    for key, value in molecule.tags.items():
        mol.SetProp(key, value)
    for key, value in molecule.properties.items():
        mol.SetProp(key, _sdf_value(value))
    return mol


def write_sdf(molecules: Iterable, path: str | Path) -> int:
    """Write RDKit Mols (with conformers) or Molecules to an SDF; returns the count written.

    Float properties are written with full precision so they read back exactly. The file
    is written atomically: a failure part-way leaves any earlier file at ``path`` as it was.
    """
    import io

    from rdkit import Chem

    buffer = io.StringIO()
    count = 0
    writer = Chem.SDWriter(buffer)
    writer.SetKekulize(False)
    for item in molecules:
        mol = molecule_to_rdkit(item) if isinstance(item, Molecule) else item
        if mol.GetNumConformers() == 0:
            raise ValueError(f"molecule {count + 1} has no conformer to write")
        writer.write(mol)
        count += 1
    writer.close()
    data = buffer.getvalue().encode("utf-8", errors="surrogateescape")
    atomic_write(path, lambda fh: fh.write(data))
    return count


_DATA_HEADER = re.compile(r"^>.*?<([^>]*)>")


def with_data_items(record_text: str, items: Mapping[str, str], replace_prefix: str = "") -> str:
    """An SDF record's text (without ``$$$$``) with ``items`` added as SD data items.

    Everything already in the record stays as it is, byte for byte, except the data
    items whose name starts with ``replace_prefix`` (an earlier run's results), which
    are dropped so that the new values replace them. Values are written on one line, with
    the record's own line ending (CRLF stays CRLF).
    """
    eol = "\r\n" if "\r\n" in record_text else "\n"
    kept: list[str] = []
    dropping = in_data = False
    for line in (raw.rstrip("\r") for raw in record_text.split("\n")):
        if in_data:
            header = _DATA_HEADER.match(line)
            if header:
                dropping = bool(replace_prefix) and header.group(1).startswith(replace_prefix)
            elif not line.strip() and dropping:
                dropping = False
                continue
            if dropping:
                continue
        else:
            in_data = line.startswith("M  END")
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    if kept and not kept[-1].startswith("M  END"):
        kept.append("")  # a data item ends with a blank line; the molblock ends with M  END
    for name, value in items.items():
        # One line per value: a line break would end the item early, an empty value too ("-").
        kept += [f">  <{name}>", " ".join(str(value).split()) or "-", ""]
    return eol.join(kept) + eol


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (links and ``..`` included)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def mol_block(mol) -> str:
    """The molfile text of an RDKit Mol (aromatic bonds as given, not kekulised)."""
    from rdkit import Chem

    return Chem.MolToMolBlock(mol, kekulize=False)


def csv_beside(sdf_path: str | Path) -> Path:
    """Where the CSV table of an SDF goes: the same name with ``.csv``."""
    return Path(sdf_path).with_suffix(".csv")


def write_csv(molecules: Iterable, path: str | Path) -> int:
    """RDKit Mols' SD tags as a CSV table (one row per molecule: ``name``, ``n_atoms``,
    then every tag, in the order first seen), written atomically; returns the count.
    The table a spreadsheet or pandas filters, beside the SDF with the 3D structures."""
    import csv
    import io

    rows, columns = [], {"name": None, "n_atoms": None}
    for mol in molecules:
        row = {"name": mol.GetProp("_Name") if mol.HasProp("_Name") else "", "n_atoms": mol.GetNumAtoms()}
        for key in mol.GetPropNames():
            row[key] = mol.GetProp(key)
            columns.setdefault(key, None)
        rows.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8", errors="surrogateescape")
    atomic_write(path, lambda fh: fh.write(data))
    return len(rows)


def write_sdf_records(records: Iterable[str], path: str | Path) -> int:
    """Write SDF record texts (each without ``$$$$``) to ``path`` atomically; returns
    the count. A failure part-way leaves any earlier file at ``path`` untouched."""
    texts = [r if r.endswith("\n") else r + "\n" for r in records]
    ends = ["$$$$\r\n" if t.endswith("\r\n") else "$$$$\n" for t in texts]
    data = "".join(t + end for t, end in zip(texts, ends)).encode("utf-8", errors="surrogateescape")
    atomic_write(path, lambda fh: fh.write(data))
    return len(texts)


# ----------------------------------------------------------------------------- XYZ

_INT_LINE = re.compile(r"^\s*\d+\s*$")
_KEY_VALUE = re.compile(r"(\w+)\s*=\s*(\"[^\"]*\"|\S+)")


def _parse_comment(comment: str) -> dict[str, float]:
    """Numeric ``key=value`` pairs of an extended-XYZ comment line."""
    props = {}
    for key, raw in _KEY_VALUE.findall(comment):
        value = _parse_value(raw.strip('"'))
        if value is not None:
            props[key] = value
    return props


def _parse_atom_line(line: str) -> tuple[int, tuple[float, float, float]]:
    fields = line.split()
    if len(fields) < 4:
        raise ValueError(f"atom line {line.strip()!r} needs an element and 3 coordinates")
    elem = fields[0]
    if elem.isdigit():
        z = int(elem)
        symbol(z)  # raises for an atomic number outside the table
    else:
        try:
            z = atomic_number(elem)
        except ValueError:
            raise ValueError(f"unknown element {elem!r}") from None
    coords = []
    for c in fields[1:4]:
        value = _parse_value(c.replace("*^", "e"))  # QM9's raw files write 1.2*^-5
        if value is None or not math.isfinite(value):
            raise ValueError(f"non-numeric coordinate {c!r}")
        coords.append(value)
    return z, (coords[0], coords[1], coords[2])


class _Lines:
    """Lines with one of look-ahead and the 0-based number of the next one."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.index = 0
        self._next = next(self._lines, None)

    def peek(self) -> str | None:
        return self._next

    def take(self) -> str | None:
        line, self._next = self._next, next(self._lines, None)
        self.index += line is not None
        return line


def _xyz_lines(lines: Iterable[str]) -> Iterator[str]:
    """Lines of an XYZ file ended by LF, CRLF or a lone CR (as ``str.splitlines`` reads them,
    but without splitting at form feeds or Unicode separators inside a comment)."""
    for raw in lines:
        yield from raw.removesuffix("\r").split("\r")


def read_xyz(path: str | Path, max_mb: float | None = None) -> LoadReport:
    """Read an XYZ file with one or many molecules; extended-XYZ ``key=value`` comments
    give properties. The file is read record by record, up to ``max_mb`` (see
    :func:`max_file_bytes`)."""
    path = Path(path)
    lines = _Lines(_xyz_lines(_iter_lines(path, max_file_bytes(max_mb))))
    report = LoadReport(str(path))
    record = 0

    def is_atom_line(line: str | None) -> bool:
        return line is not None and bool(line.strip()) and not _INT_LINE.match(line)

    while (head := lines.peek()) is not None:
        if not head.strip():
            lines.take()
            continue
        record += 1
        start = lines.index + 1
        lines.take()
        if not _INT_LINE.match(head):
            found = f"expected an atom count, found {head.strip()!r}"
            report.errors.append(RecordError(str(path), record, found, start))
            while (line := lines.peek()) is not None and not _INT_LINE.match(line):
                lines.take()
            continue
        count = int(head)
        comment = lines.take() or ""
        text = [head, comment]
        atoms: list[tuple[int, tuple[float, float, float]]] = []
        reason = None
        while len(atoms) < count and is_atom_line(lines.peek()):
            line = lines.take() or ""
            text.append(line)
            try:
                atoms.append(_parse_atom_line(line))
            except ValueError as err:
                reason = reason or f"atom {len(atoms) + 1} (line {lines.index}): {err}"
                atoms.append((0, (0.0, 0.0, 0.0)))
        reasons = [reason] if reason else []
        if len(atoms) < count:
            reasons.append(f"declares {count} atoms but has {len(atoms)} atom lines")
        elif is_atom_line(lines.peek()):
            extra = 0
            while is_atom_line(lines.peek()):
                lines.take()
                extra += 1
            reasons.append(f"declares {count} atoms but has {count + extra} atom lines")
        if count == 0:
            reasons.append("declares 0 atoms")
        z = np.array([a[0] for a in atoms])
        pos = np.array([a[1] for a in atoms]).reshape(-1, 3)
        if not reasons:
            problem = _undecodable("\n".join(text), start)
            problem = problem or geometry_problem(z, pos, flagged_2d=None)
            reasons += [problem] if problem else []
        if reasons:
            report.errors.append(RecordError(str(path), record, "; ".join(reasons), start))
            continue
        first = comment.split()[0] if comment.split() else ""
        name = first if "=" not in first else ""
        report.molecules.append(
            Molecule(z, pos, _parse_comment(comment), name=name or f"{path.stem}_{record}")
        )
    if report.n_records == 0:
        raise MoleculeFileError(f"{path}: no XYZ records found")
    return report


def write_xyz(molecules: Iterable[Molecule], path: str | Path) -> int:
    """Write molecules to a multi-molecule extended XYZ file; returns the count written."""
    path = Path(path)
    count = 0
    with path.open("w") as fh:
        for m in molecules:
            comment = " ".join(f"{k}={_sdf_value(v)}" for k, v in m.properties.items())
            fh.write(f"{m.num_atoms}\n{(m.name + ' ' + comment).strip()}\n")
            for z, (x, y, zc) in zip(m.atomic_numbers, m.positions):
                fh.write(f"{symbol(int(z)):<2s} {x:15.8f} {y:15.8f} {zc:15.8f}\n")
            count += 1
    return count


# ------------------------------------------------------------------- SMILES -> 3D


def embed_smiles(smiles: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | str:
    """3D structure of a SMILES by RDKit ETKDGv3 then MMFF; (Z, positions) or a reason."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    if not smiles.strip():
        return "empty SMILES"
    with rdkit_messages() as messages:
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return "SMILES does not parse" + (f": {messages[-1]}" if messages else "")
    if mol.GetNumAtoms() == 0:
        return "SMILES has no atoms"
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    with rdkit_messages():
        if AllChem.EmbedMolecule(mol, params) != 0:
            params.useRandomCoords = True  # the documented retry for hard cases
            if AllChem.EmbedMolecule(mol, params) != 0:
                return "3D embedding failed (ETKDGv3, also with random coordinates)"
        if AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return z, np.array(mol.GetConformer().GetPositions())


def _embed_or_reason(smiles: str, seed: int) -> tuple[np.ndarray, np.ndarray] | str:
    try:
        return embed_smiles(smiles, seed)
    except (ValueError, RuntimeError) as err:  # RDKit raises these on odd inputs
        return "3D embedding failed: " + " ".join(str(err).split())  # RDKit's are several lines


def _embed_chunk(items: Sequence[tuple[str, int]]) -> list:
    return [_embed_or_reason(s, seed) for s, seed in items]


def read_smiles_csv(
    path: str | Path,
    smiles_column: str | None = None,
    name_column: str | None = None,
    seed: int = 0,
    workers: int | None = None,
    max_mb: float | None = None,
    property_columns: Sequence[str] | None = None,
) -> LoadReport:
    """Read a CSV (or .smi) of SMILES plus numeric property columns and embed each in 3D.

    Embedding runs in a process pool (``workers``, default: all cores) with a
    per-molecule seed ``seed + record``, so results do not depend on the pool size. The
    file is read up to ``max_mb`` (see :func:`max_file_bytes`). Every other column is a
    numeric property unless ``property_columns`` names the property columns: the rest are
    then kept as text tags (a source, a comment), and a named column that is missing is a
    MoleculeFileError.
    """
    import pandas as pd

    path = Path(path)
    text = _read_text(path, max_file_bytes(max_mb))
    if path.suffix.lower() == ".smi":
        rows = [ln.split() for ln in text.splitlines()]
        pairs = [(r[0], r[1] if len(r) > 1 else "") for r in rows if r]
        df = pd.DataFrame(pairs, columns=["smiles", "name"], dtype=object)
        smiles_column, name_column = "smiles", "name"
    else:
        import io as _io

        try:
            # Python strings (not pandas' Arrow ones) hold undecodable bytes too, reported per row.
            df = pd.read_csv(_io.StringIO(text), dtype=object, keep_default_na=False, engine="python")
        except (ValueError, pd.errors.ParserError) as err:
            raise MoleculeFileError(f"{path}: not a readable CSV ({err})") from err
    if smiles_column is None:
        matches = [c for c in df.columns if c.strip().lower() in ("smiles", "smile", "canonical_smiles")]
        if not matches:
            raise MoleculeFileError(f"{path}: no SMILES column (columns are {list(df.columns)})")
        smiles_column = matches[0]
    elif smiles_column not in df.columns:
        raise MoleculeFileError(f"{path}: column {smiles_column!r} not found (have {list(df.columns)})")
    if name_column is None:
        name_column = next((c for c in df.columns if c.strip().lower() in ("name", "id")), None)
    prop_columns = [c for c in df.columns if c not in (smiles_column, name_column)]
    if property_columns is not None:
        missing = [c for c in property_columns if c not in df.columns]
        if missing:
            raise MoleculeFileError(f"{path}: no column {missing[0]!r} (columns are {list(df.columns)})")
        prop_columns = list(property_columns)
    text_columns = [c for c in df.columns if c not in (smiles_column, name_column, *prop_columns)]
    if len(df) == 0:
        raise MoleculeFileError(f"{path}: file has a header but no rows")

    header_lines = 0 if path.suffix.lower() == ".smi" else 1
    undecodable = {
        k: problem
        for k, row in enumerate(df.itertuples(index=False, name=None))
        if (problem := _undecodable(" ".join(map(str, row)), k + 1 + header_lines)) is not None
    }
    # A row that is not UTF-8 is reported, not embedded (an empty SMILES costs nothing).
    items = [("" if k in undecodable else str(s).strip(), seed + k) for k, s in enumerate(df[smiles_column])]
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(items) < 32:
        results = _embed_chunk(items)
    else:
        chunk = max(1, math.ceil(len(items) / (workers * 4)))
        chunks = [items[k : k + chunk] for k in range(0, len(items), chunk)]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = [r for part in pool.map(_embed_chunk, chunks) for r in part]

    report = LoadReport(str(path))
    for k, (row, result) in enumerate(zip(df.itertuples(index=False, name=None), results), start=1):
        values = dict(zip(df.columns, row))
        line = k + header_lines
        if k - 1 in undecodable:
            report.errors.append(RecordError(str(path), k, undecodable[k - 1], line))
            continue
        if isinstance(result, str):
            report.errors.append(RecordError(str(path), k, f"{result} ({items[k - 1][0]!r})", line))
            continue
        props, bad = {}, None
        for col in prop_columns:
            raw = str(values[col]).strip()
            if raw == "":
                continue  # a missing value is not an error; the property is absent
            value = _parse_value(raw)
            if value is None:
                bad = f"column {col!r}: non-numeric value {raw!r}"
                break
            props[col] = value
        if bad:
            report.errors.append(RecordError(str(path), k, bad, line))
            continue
        name = str(values[name_column]) if name_column else f"{path.stem}_{k}"
        mol = Molecule(result[0], result[1], props, name=name)
        mol.tags.update({col: str(values[col]) for col in text_columns})
        mol.tags["smiles"] = items[k - 1][0]
        report.molecules.append(mol)
    return report


READERS = {".sdf": read_sdf, ".sd": read_sdf, ".mol": read_sdf, ".xyz": read_xyz,
           ".csv": read_smiles_csv, ".smi": read_smiles_csv}  # fmt: skip


def read_molecules(path: str | Path, max_mb: float | None = None) -> LoadReport:
    """Read any supported molecule file, chosen by its extension, up to ``max_mb``
    megabytes (default: ``$MOLGUIDE_MAX_FILE_MB``, else 1024; see :func:`max_file_bytes`).

    Only regular files are read: a folder, FIFO, device or socket, a missing file, a broken
    link or a symlink loop is one MoleculeFileError naming the path and the cause.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: give a file name (str or Path), not {type(path).__name__}")
    path = Path(path)
    max_file_bytes(max_mb)  # a bad limit is reported before the file is looked at
    reader = READERS.get(path.suffix.lower())
    if path.is_dir():
        raise MoleculeFileError(f"{path}: is a folder, not a molecule file")
    if reader is None:
        raise MoleculeFileError(f"{path}: unknown file type {path.suffix!r} (use one of {sorted(READERS)})")
    return reader(path, max_mb=max_mb)

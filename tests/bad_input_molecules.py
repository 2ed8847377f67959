"""Bad-input cases: molecule files and what `evaluate` writes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from bad_input_common import (
    ApiCase,
    Case,
    evaluate_args,
    write,
    zinc,
)

from molguide.data.io import MoleculeFileError

CASES = [
    # ------------------------------------------------------------------ molecule files
    Case("no such file", lambda d: evaluate_args(str(d / "none.sdf")), 2, "none.sdf: no such file"),
    Case("empty file", lambda d: evaluate_args(write(d, "e.sdf", "")), 2, "e.sdf: file is empty"),
    Case("a folder", lambda d: evaluate_args(str(d)), 2, "is a folder"),
    Case("binary", lambda d: evaluate_args(write(d, "b.xyz", b"\x00\x01")), 2, "b.xyz: not a text file"),
    Case("unknown type", lambda d: evaluate_args(write(d, "m.pdb", "ATOM")), 2, "m.pdb: unknown file type"),
    Case(
        "csv without SMILES",
        lambda d: evaluate_args(write(d, "m.csv", "name,x\na,1\n")),
        2,
        "no SMILES column",
    ),
    Case(
        "no record loads",
        lambda d: evaluate_args(write(d, "bad.xyz", "1\nx\nQ 0 0 0\n")),
        2,
        "bad.xyz: none of the 1 records could be read",
    ),
    Case(
        "missing $$$$",
        lambda d: evaluate_args(write(d, "m.sdf", zinc(d).replace("$$$$\n", "", 1))),
        0,
        "record 1 (line 1): no '$$$$' line",
        "2 of 3",
    ),
    Case(
        "one title not UTF-8",
        lambda d: evaluate_args(
            write(d, "l.sdf", zinc(d).encode().replace(b"ZINC000000000003\n", b"caf\xe9\n", 1))
        ),
        0,
        "byte 0xE9 is not UTF-8",
        "2 of 3",
    ),
    Case(
        "2D XYZ record",
        lambda d: evaluate_args(
            write(
                d,
                "f.xyz",
                "5\nflat\nC 0 0 0\nH 1 0 0\nH -1 0 0\nH 0 1 0\nH 0 -1 0\n2\nok\nH 0 0 0\nH 0 0 0.74\n",
            )
        ),
        0,
        "coordinates are 2D",
        "1 of 2",
    ),
    Case(
        "absurd coordinate",
        lambda d: evaluate_args(
            write(d, "a.xyz", "2\nfar\nH 0 0 0\nH 0 0 1e300\n2\nok\nH 0 0 0\nH 0 0 0.74\n")
        ),
        0,
        "out of range",
        "1 of 2",
    ),
    Case(
        "--out is the input",
        lambda d: evaluate_args(p := write(d, "z.sdf", zinc(d)), "--out", p),
        2,
        "is the input file",
    ),
    Case(
        "--out is a folder",
        lambda d: evaluate_args(write(d, "z.sdf", zinc(d)), "--out", str(d)),
        2,
        "is a folder",
    ),
    Case(
        "--out cannot be written",
        lambda d: evaluate_args(write(d, "z.sdf", zinc(d)), "--out", "/proc/molguide/out.sdf"),
        2,
        "/proc/molguide: cannot write there",
    ),
]

# ------------------------------------------------ hostile molecule input (issue 24)


def embedded(smiles: str, seed: int = 1):
    """An RDKit molecule with hydrogens and one 3D conformer."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    mol.SetProp("_Name", smiles)
    return mol


def moved(mol, atom: int, onto: int, offset: float = 0.0):
    """A copy of ``mol`` with atom ``atom`` (0-based) put on atom ``onto``, ``offset`` A along x."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    copy = Chem.Mol(mol)
    conf = copy.GetConformer()
    p = conf.GetAtomPosition(onto)
    conf.SetAtomPosition(atom, Point3D(p.x + offset, p.y, p.z))
    return copy


def sdf_text(*mols) -> str:
    from rdkit import Chem

    return "".join(Chem.MolToMolBlock(m) + "$$$$\n" for m in mols)


def xyz_text(mol, symbols: dict[int, str] | None = None) -> str:
    """The XYZ record of an RDKit molecule; ``symbols`` replaces the symbols of some atoms."""
    from rdkit import Chem

    lines = Chem.MolToXYZBlock(mol).splitlines()
    for k, symbol in (symbols or {}).items():
        lines[2 + k] = symbol + lines[2 + k][len(lines[2 + k].split()[0]) :]
    return "\n".join(lines) + "\n"


def heavy_only(folder: Path, name: str) -> str:
    """Molecules written without their hydrogens (as many tools export them)."""
    from rdkit import Chem

    mols = [Chem.RemoveHs(embedded(s)) for s in ("CCO", "c1ccccc1O")]
    if name.endswith(".sdf"):
        return write(folder, name, sdf_text(*mols))
    return write(folder, name, "".join(xyz_text(m) for m in mols))


# Ethanol (C 1, C 2, O 3, H 4-9; H 9 is the one on O), with a good molecule after it.
ETHANOL_H_ON_O = 8


def fifo(folder: Path, name: str) -> str:
    os.mkfifo(folder / name)
    return str(folder / name)


def link(folder: Path, name: str, target: str) -> str:
    (folder / name).symlink_to(target)
    return str(folder / name)


WATERS = "3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"
UF6 = "7\nUF6\nU 0 0 0\nF 2 0 0\nF -2 0 0\nF 0 2 0\nF 0 -2 0\nF 0 0 2\nF 0 0 -2\n"
METHANE_D4 = (
    "5\nmethane-d4\nC 0 0 0\nD 0.629 0.629 0.629\nD -0.629 -0.629 0.629\n"
    "D -0.629 0.629 -0.629\nD 0.629 -0.629 -0.629\n"
)


def isotope_sdf(folder: Path) -> str:
    """Methane with two deuterium (D) and two tritium (T) atoms, as a molfile writes them."""
    lines = sdf_text(embedded("C")).split("\n")
    for k in range(5, 9):
        lines[k] = lines[k][:31] + ("D " if k < 7 else "T ") + lines[k][33:]
    return write(folder, "dt.sdf", "\n".join(lines))


def platinum_sdf(folder: Path) -> str:
    """cis-Pt(NH3)2Cl2 drawn by hand: square planar, Pt-N 2.05 A, Pt-Cl 2.33 A."""
    atoms = [("Pt", 0, 0, 0), ("N", 2.05, 0, 0), ("N", 0, 2.05, 0), ("Cl", -2.33, 0, 0),
             ("Cl", 0, -2.33, 0)]  # fmt: skip
    hydrogens = [(2.4, 0.95, 0.3), (2.4, -0.5, 0.8), (2.4, -0.45, -0.85),
                 (0.95, 2.4, 0.3), (-0.5, 2.4, 0.8), (-0.45, 2.4, -0.85)]  # fmt: skip
    atoms += [("H", *h) for h in hydrogens]
    bonds = [(1, 2), (1, 3), (1, 4), (1, 5), (2, 6), (2, 7), (2, 8), (3, 9), (3, 10), (3, 11)]
    lines = ["cisplatin", "  hand", "", f"{len(atoms):3d}{len(bonds):3d}  0  0  0  0  0  0  0  0999 V2000"]
    lines += [
        f"{x:10.4f}{y:10.4f}{z:10.4f} {s:<3} 0  0  0  0  0  0  0  0  0  0  0  0" for s, x, y, z in atoms
    ]
    lines += [f"{a:3d}{b:3d}  1  0" for a, b in bonds]
    return write(folder, "pt.sdf", "\n".join([*lines, "M  END", "$$$$", ""]))


def bond_to_nowhere(folder: Path) -> str:
    lines = sdf_text(embedded("CCO")).split("\n")
    lines[4 + 9] = " 1 99  1  0"  # the first bond line: atom 99 of 9
    return write(folder, "nowhere.sdf", "\n".join(lines) + zinc(folder))


def too_big(folder: Path) -> str:
    return write(folder, "big.sdf", zinc(folder))  # about 4 KB


HOSTILE_CASES = [
    Case(
        "two atoms in one place (SDF)",
        lambda d: evaluate_args(write(d, "dup.sdf", sdf_text(moved(embedded("CCO"), 1, 0)) + zinc(d))),
        0,
        "record 1 (line 1): atoms 1 (C) and 2 (C) are 0.000 Angstrom apart",
        "3 of 4",
    ),
    Case(
        "hydrogen on its oxygen (SDF)",
        lambda d: evaluate_args(
            write(d, "hono.sdf", zinc(d) + sdf_text(moved(embedded("CCO"), ETHANOL_H_ON_O, 2)))
        ),
        0,
        "record 4 (line",
        "3 of 4",
    ),
    Case(
        "atoms 0.2 A apart (XYZ)",
        lambda d: evaluate_args(write(d, "near.xyz", xyz_text(moved(embedded("CCO"), 3, 0, 0.2)) + WATERS)),
        0,
        "atoms 1 (C) and 4 (H) are 0.200 Angstrom apart",
        "1 of 2",
    ),
    Case(
        "one atom line written twice (XYZ)",
        lambda d: evaluate_args(
            write(d, "twice.xyz", WATERS + "4\nwater\nO 0 0 0\nH 0.96 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
        ),
        0,
        "atoms 2 (H) and 3 (H) are 0.000 Angstrom apart",
        "1 of 2",
    ),
    Case(
        "every atom in one place (XYZ)",
        lambda d: evaluate_args(write(d, "point.xyz", "3\nwater\nO 0 0 0\nH 0 0 0\nH 0 0 0\n")),
        2,
        "point.xyz: none of the 1 records could be read",
    ),
    Case(
        "two atoms in one place with --out",
        lambda d: evaluate_args(
            write(d, "dup.sdf", zinc(d) + sdf_text(moved(embedded("CCO"), 1, 0))), "--out", str(d / "o.sdf")
        ),
        0,
        "atoms 1 (C) and 2 (C) are 0.000 Angstrom apart",
        "3 of 4",
    ),
    Case("a FIFO (SDF)", lambda d: evaluate_args(fifo(d, "p.sdf")), 2, "p.sdf: is a FIFO (named pipe)"),
    Case("a FIFO (CSV)", lambda d: evaluate_args(fifo(d, "p.csv")), 2, "p.csv: is a FIFO (named pipe)"),
    Case(
        "a link to /dev/zero (SDF)",
        lambda d: evaluate_args(link(d, "zero.sdf", "/dev/zero")),
        2,
        "zero.sdf: is a character device",
    ),
    Case(
        "a link to /dev/zero (XYZ)",
        lambda d: evaluate_args(link(d, "zero.xyz", "/dev/zero")),
        2,
        "zero.xyz: is a character device",
    ),
    Case(
        "a link to /dev/null (CSV)",
        lambda d: evaluate_args(link(d, "null.csv", "/dev/null")),
        2,
        "null.csv: is a character device",
    ),
    Case(
        "a symlink loop",
        lambda d: evaluate_args(link(d, "loop.sdf", str(d / "loop.sdf"))),
        2,
        "loop.sdf: symlink loop",
    ),
    Case(
        "a broken symlink",
        lambda d: evaluate_args(link(d, "gone.xyz", str(d / "moved-away.xyz"))),
        2,
        "gone.xyz: broken symlink (to {d}/moved-away.xyz",
    ),
    Case(
        "file over --max-file-mb",
        lambda d: evaluate_args(too_big(d), "--max-file-mb", "0.001"),
        2,
        "over the 1.02 KB limit for molecule files (raise it with --max-file-mb",
    ),
    Case(
        "evaluate --max-file-mb raised enough",
        lambda d: evaluate_args(too_big(d), "--max-file-mb", "0.01"),
        0,
        "big.sdf: 3 of 3",
        "3 of 3",
    ),
    Case(
        "evaluate --max-file-mb 0",
        lambda d: evaluate_args(too_big(d), "--max-file-mb", "0"),
        2,
        "--max-file-mb: 0 is not a number above 0",
    ),
    Case(
        "evaluate --max-file-mb not a number",
        lambda d: evaluate_args(too_big(d), "--max-file-mb", "1GB"),
        2,
        "--max-file-mb: '1GB' is not a number",
    ),
    *[
        Case(
            f"evaluate --workers {value}",
            lambda d, value=value: evaluate_args(write(d, "w.xyz", WATERS), "--workers", value),
            2,
            f"--workers: {message}",
        )
        for value, message in (
            ("-2", "-2 is not a whole number of at least 1"),
            ("0", "0 is not a whole number"),
            ("1.5", "1.5 is not a whole number"),
            ("many", "'many' is not a number"),
        )
    ],
    *[
        Case(
            f"evaluate --xtb-timeout {value}",
            lambda d, value=value: evaluate_args(write(d, "w.xyz", WATERS), "--xtb-timeout", value),
            2,
            f"--xtb-timeout: {message}",
        )
        for value, message in (
            ("-1", "-1 is not a number above 0"),
            ("nan", "nan is not a number above 0"),
            ("inf", "inf is not a number above 0"),
            ("0", "0 is not a number above 0"),
            ("1m", "'1m' is not a number"),
        )
    ],
    Case(
        "deuterium (XYZ)",
        lambda d: evaluate_args(write(d, "cd4.xyz", METHANE_D4)),
        0,
        "mol_stability    1.0000",
        "1 of 1",
    ),
    Case(
        "deuterium and tritium (SDF)",
        lambda d: evaluate_args(isotope_sdf(d)),
        0,
        "mol_stability    1.0000",
        "1 of 1",
    ),
    Case(
        "element past Xe (XYZ, mercury)",
        lambda d: evaluate_args(write(d, "hg.xyz", xyz_text(embedded("C[Hg]C")))),
        0,
        "no EDM bond table for Hg",
        "1 of 1",
    ),
    Case(
        "actinide (XYZ, uranium)",
        lambda d: evaluate_args(write(d, "uf6.xyz", UF6 + WATERS)),
        0,
        "no EDM bond table for U",
        "2 of 2",
    ),
    Case(
        "element past Xe (SDF, platinum)",
        lambda d: evaluate_args(platinum_sdf(d)),
        0,
        "no EDM bond table for Cl, Pt",
        "1 of 1",
    ),
    Case(
        "heavy atoms only (SDF)",
        lambda d: evaluate_args(heavy_only(d, "noh.sdf")),
        0,
        "warning: 2 of 2 records evaluated have no hydrogen atoms",
        "2 of 2",
    ),
    Case(
        "heavy atoms only (XYZ)",
        lambda d: evaluate_args(heavy_only(d, "noh.xyz")),
        0,
        "warning: 2 of 2 records evaluated have no hydrogen atoms",
        "2 of 2",
    ),
    Case(
        "bond to an atom that does not exist",
        lambda d: evaluate_args(bond_to_nowhere(d)),
        0,
        "bond 1: line ' 1 99  1  0' names atoms '1' and '99', not 2 of the 9",
        "3 of 4",
    ),
]
CASES += HOSTILE_CASES


def _read(path: str, **kwargs):
    import molguide

    return molguide.read(path, **kwargs)


def _evaluate(mols, **kwargs):
    import molguide

    return molguide.evaluate(mols, **{"novelty": False, "descriptors": False, **kwargs})


def _write_sdf(mols, path):
    import molguide

    return molguide.write_sdf(mols, path)


def with_env(name: str, value: str, call: Callable[[], object]) -> object:
    """``call()`` with the environment variable set, restored afterwards."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        return call()
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def _molecule(z, positions):
    from molguide.data.molecules import Molecule

    return Molecule(z, positions, name="m")


API_CASES = [
    ApiCase("evaluate([None])", lambda d: _evaluate([None]), TypeError, "mols[0] (molecule 1): NoneType"),
    ApiCase("evaluate('CCO')", lambda d: _evaluate("CCO"), TypeError, "not a str ('CCO')"),
    ApiCase("evaluate(b'CCO')", lambda d: _evaluate(b"CCO"), TypeError, "not a bytes"),
    ApiCase("evaluate(None)", lambda d: _evaluate(None), TypeError, "mols: give a list of RDKit molecules"),
    ApiCase(
        "evaluate(one Mol)", lambda d: _evaluate(embedded("CCO")), TypeError, "for one molecule use [mol]"
    ),
    ApiCase(
        "evaluate([mol, 'CCO'])",
        lambda d: _evaluate([embedded("CCO"), "CCO"]),
        TypeError,
        "mols[1] (molecule 2): str 'CCO'",
    ),
    ApiCase(
        "evaluate: a Molecule with atomic number 200",
        lambda d: _evaluate([_molecule([6, 200], [[0, 0, 0], [1.5, 0, 0]])]),
        ValueError,
        "atomic number 200 is not an element",
    ),
    ApiCase(
        "evaluate: novelty='no'",
        lambda d: _evaluate([embedded("O")], novelty="no"),
        TypeError,
        "novelty: give True or False, not 'no'",
    ),
    ApiCase(
        "write_sdf of nothing",
        lambda d: _write_sdf([], d / "empty.sdf"),
        ValueError,
        "empty.sdf: no molecules to write",
    ),
    ApiCase("write_sdf('CCO')", lambda d: _write_sdf("CCO", d / "a.sdf"), TypeError, "not a str ('CCO')"),
    ApiCase(
        "write_sdf([None])", lambda d: _write_sdf([None], d / "a.sdf"), TypeError, "mols[0] (molecule 1)"
    ),
    ApiCase("write_sdf to a folder", lambda d: _write_sdf([embedded("O")], d), ValueError, "is a folder"),
    ApiCase("read(None)", lambda d: _read(None), TypeError, "path: give a file name"),
    ApiCase("read a FIFO", lambda d: _read(fifo(d, "p.xyz")), MoleculeFileError, "p.xyz: is a FIFO"),
    ApiCase(
        "read /dev/zero",
        lambda d: _read(link(d, "z.sdf", "/dev/zero")),
        MoleculeFileError,
        "z.sdf: is a character device",
    ),
    ApiCase(
        "read a symlink loop",
        lambda d: _read(link(d, "l.xyz", str(d / "l.xyz"))),
        MoleculeFileError,
        "l.xyz: symlink loop",
    ),
    ApiCase(
        "read over max_mb",
        lambda d: _read(too_big(d), max_mb=0.001),
        MoleculeFileError,
        "KB, over the 1.02 KB limit for molecule files",
    ),
    ApiCase(
        "read with max_mb=-1",
        lambda d: _read(too_big(d), max_mb=-1),
        ValueError,
        "max_mb must be a positive number of megabytes, not -1",
    ),
    ApiCase(
        "read over MOLGUIDE_MAX_FILE_MB",
        lambda d: with_env("MOLGUIDE_MAX_FILE_MB", "0.001", lambda: _read(too_big(d))),
        MoleculeFileError,
        "over the 1.02 KB limit",
    ),
    ApiCase(
        "MOLGUIDE_MAX_FILE_MB not a number",
        lambda d: with_env("MOLGUIDE_MAX_FILE_MB", "lots", lambda: _read(too_big(d))),
        MoleculeFileError,
        "MOLGUIDE_MAX_FILE_MB='lots': not a positive number of megabytes",
    ),
    ApiCase(
        "read: only a record with two atoms in one place",
        lambda d: _read(write(d, "dup.sdf", sdf_text(moved(embedded("CCO"), 1, 0)))).require_molecules(),
        MoleculeFileError,
        "record 1 (line 1): atoms 1 (C) and 2 (C) are 0.000 Angstrom apart",
    ),
]

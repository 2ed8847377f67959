"""Fuzz: randomly corrupted SDF records never take molguide down, and none goes missing.

2,000 records made from real molecules (ZINC-style records and RDKit-embedded drugs) are
corrupted by a seeded generator (byte flips, truncations, deleted, duplicated and swapped
lines, swapped fields, counts and bond lines that lie, unknown elements, coordinates set to
another atom's, to NaN or to huge values, jittered) and read, evaluated and written back in
this process: every line of the file must be in exactly one record, every record loaded or
listed with its reason, evaluated or counted as unread, and written back to ``--out``.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

from molecule_files import sdf_records, zinc_style_sdf

import molguide
from molguide.chem.evaluate import evaluate, write_evaluated_sdf
from molguide.data.io import read_sdf

SEED = 24
N_RECORDS = 2000
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C1CC1C#N", "O=C=O", "CN1C=NC2=C1C(=O)N(C)C(=O)N2C",
          "FC(F)(F)C(=O)O", "C[NH3+]", "OC1OC(CO)C(O)C(O)C1O"]  # fmt: skip
SYMBOLS = ["C", "N", "O", "H", "D", "T", "Cl", "Hg", "U", "Og", "Q", "*", "Xx", "R#", "c", "LP", ""]


def _base_records(folder: Path) -> list[str]:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    records = sdf_records(zinc_style_sdf(folder / "zinc.sdf"))
    for k, smiles in enumerate(SMILES):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=k)
        mol.SetProp("_Name", smiles)
        mol.SetProp("source_id", str(k))
        records.append(Chem.MolToMolBlock(mol) + f">  <source_id>\n{k}\n\n")
    return records


def _atom_lines(lines: list[str]) -> range:
    try:
        n = int(lines[3][:3])
    except (IndexError, ValueError):
        return range(0)
    return range(4, min(4 + n, len(lines)))


def _set_coords(line: str, xyz: str) -> str:
    return xyz + line[30:] if len(line) >= 30 else line


def _mutate(text: str, rng: random.Random) -> str:
    """One or two corruptions of one record's text (without its ``$$$$``)."""
    for _ in range(rng.randint(1, 2)):
        lines = text.split("\n")
        atoms = _atom_lines(lines)
        # Jittered geometries (kind 11) load and reach bond perception, its fallback included.
        kind = rng.choice([*range(14), 11, 11, 11, 11, 6, 7])
        if kind == 0:  # flip bytes (no NUL: that makes the whole file binary, tested elsewhere)
            data = bytearray(text.encode("utf-8", "surrogateescape"))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randint(1, 255)
            text = data.decode("utf-8", errors="surrogateescape")
            continue
        if kind == 1:  # truncate
            text = text[: rng.randrange(len(text))]
            continue
        k = rng.randrange(len(lines))
        if kind == 2:
            del lines[k]
        elif kind == 3:
            lines.insert(k, lines[k])
        elif kind == 4:
            j = rng.randrange(len(lines))
            lines[k], lines[j] = lines[j], lines[k]
        elif kind == 5 and atoms:  # swap the element and a coordinate
            a = rng.choice(atoms)
            fields = lines[a].split()
            if len(fields) >= 4:
                fields[0], fields[3] = fields[3], fields[0]
                lines[a] = " ".join(fields)
        elif kind == 6 and len(atoms) >= 2:  # one atom on another
            a, b = rng.sample(list(atoms), 2)
            lines[a] = _set_coords(lines[a], lines[b][:30])
        elif kind == 7 and atoms:  # NaN, infinite or huge coordinates
            value = rng.choice(["nan", "inf", "1e300", "99999.9999", "-0.0000", "1.2.3"])
            lines[rng.choice(atoms)] = _set_coords(lines[rng.choice(atoms)], f"{value:>10}" * 3)
        elif kind == 8 and len(lines) > 3:  # a counts line that lies
            n = rng.choice([0, 1, 2, 999, 12345])
            lines[3] = (
                f"{n:3d}" + lines[3][3:] if rng.random() < 0.5 else lines[3][:3] + f"{n:3d}" + lines[3][6:]
            )
        elif kind == 9 and atoms:  # bond lines to atoms that are not there
            end = atoms.stop
            if end < len(lines):
                lines[end] = rng.choice(
                    ["  1999  1  0", "  0  1  1  0", "  1  1  1  0", "  1  2  9  0", "abc"]
                )
        elif kind == 10 and atoms:  # another element
            a = rng.choice(atoms)
            if len(lines[a]) >= 34:
                lines[a] = lines[a][:31] + f"{rng.choice(SYMBOLS):<3}" + lines[a][34:]
        elif kind == 11 and atoms:  # jittered geometry (bond perception may need the fallback)
            sigma = rng.choice([0.05, 0.15, 0.3, 0.6])
            for a in atoms:
                fields = lines[a].split()
                try:
                    xyz = [float(f) + rng.gauss(0.0, sigma) for f in fields[:3]]
                except ValueError:
                    continue
                lines[a] = _set_coords(lines[a], "".join(f"{c:10.4f}" for c in xyz))
        elif kind == 12:  # everything in z = 0, or the 2D flag
            for a in atoms:
                lines[a] = lines[a][:20] + f"{0.0:10.4f}" + lines[a][30:]
            if len(lines) > 1:
                lines[1] = lines[1].replace("3D", "2D")
        elif kind == 13:  # charges, a missing M  END, or stray text after it
            extra = rng.choice(["M  CHG  1   1   5", "M  RAD  1   1   2", "stray text", "M  ISO  1   1 999"])
            if "M  END" in lines and rng.random() < 0.3:
                lines.remove("M  END")
            else:
                lines.insert(min(len(lines), (atoms.stop or 4) + rng.randrange(3)), extra)
        text = "\n".join(lines)
    return text


def _content(text: str) -> list[str]:
    """The lines that a record must keep: everything but blank lines and ``$$$$``."""
    return [ln for ln in text.split("\n") if ln.strip() and ln.strip() != "$$$$"]


def test_corrupted_sdf_records_are_all_accounted_for(tmp_path):
    rng = random.Random(SEED)
    base = _base_records(tmp_path)
    texts = []
    for _ in range(N_RECORDS):
        text = rng.choice(base)
        texts.append(_mutate(text, rng) if rng.random() < 0.9 else text)  # some stay intact
    path = tmp_path / "fuzz.sdf"
    path.write_bytes("".join(t.rstrip("\n") + "\n$$$$\n" for t in texts).encode("utf-8", "surrogateescape"))

    report = read_sdf(path)
    n = report.n_records
    numbers = sorted([m.source.record for m in report.molecules] + [e.record for e in report.errors])
    assert numbers == list(range(1, n + 1))  # every record once: loaded or listed
    assert all(e.reason and e.text is not None for e in report.errors)
    by_number = {m.source.record: m.source.text for m in report.molecules}
    by_number.update({e.record: e.text for e in report.errors})
    kept = [line for k in range(1, n + 1) for line in _content(by_number[k])]
    file_lines = _content(path.read_bytes().decode("utf-8", "surrogateescape"))
    assert kept == file_lines  # no line of the file lost, duplicated or moved
    # Splitting at a lying '$$$$' or counts line may change the count, never by much.
    assert 0.9 * N_RECORDS <= n <= 1.2 * N_RECORDS
    assert 0.05 * n < len(report.molecules) < 0.95 * n  # the corruptions bite, not all of them

    evaluation = evaluate(
        report.molecules, reference_smiles=[], descriptors=False, read_errors=report.errors, progress=False
    )
    result = evaluation.to_dict()
    assert result["n_input"] == n and result["n_evaluated"] == len(report.molecules)
    assert len(evaluation.molecules) == len(report.molecules)
    assert write_evaluated_sdf(evaluation, report.molecules, tmp_path / "out.sdf", path, report.errors) == n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # some lost their hydrogens: said once
        public = molguide.evaluate(report.molecules[:200], novelty=False, descriptors=False)
    assert public["n_evaluated"] == public["n_input"] == min(200, len(report.molecules))

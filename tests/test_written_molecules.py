"""What every written SDF carries: bonds (never none for a molecule called valid) and a
CSV table beside it with the same per-molecule results."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from molguide.chem.evaluate import evaluate, write_annotated_sdf, write_evaluated_sdf
from molguide.data.io import read_molecules
from molguide.data.molecules import Molecule

# A methyl radical: EDM-valid (sanitising fills nothing, a carbon may have three bonds),
# but bond perception with total charge 0 fails (an odd electron count).
METHYL = Molecule(
    np.array([6, 1, 1, 1]),
    np.array([[0, 0, 0], [1.09, 0, 0], [-0.545, 0.944, 0], [-0.545, -0.944, 0]], dtype=float),
    name="methyl",
)
# Two atoms in one place: no bonds can be written and the molecule is not valid.
COINCIDENT = Molecule(np.array([6, 8]), np.zeros((2, 3)), name="coincident")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_molecules_whose_perception_fails_are_written_with_edm_table_bonds(tmp_path, qm9):
    from rdkit import Chem

    real = qm9[7]
    mols = [real, METHYL, COINCIDENT]
    ev = evaluate(mols, reference_smiles=[], descriptors=False)
    assert [r.valid for r in ev.molecules] == [True, True, False]
    assert ev.molecules[1].mol is None  # perception failed: the case this test is about
    sdf = tmp_path / "out.sdf"
    assert write_annotated_sdf(ev, mols, sdf) == 3
    written = list(Chem.SDMolSupplier(str(sdf), removeHs=False, sanitize=False))
    assert [m.GetProp("bonds") for m in written] == ["perceived", "edm_table", "none"]
    assert written[1].GetNumBonds() == 3 and written[2].GetNumBonds() == 0
    for mol, result in zip(written, ev.molecules):
        if result.valid:
            assert mol.GetNumBonds() > 0, mol.GetProp("_Name")
    rows = _rows(tmp_path / "out.csv")
    assert [r["name"] for r in rows] == [m.GetProp("_Name") for m in written]
    assert [r["bonds"] for r in rows] == ["perceived", "edm_table", "none"]
    assert [r["valid"] for r in rows] == ["1", "1", "0"]
    assert rows[0]["smiles"] and rows[0]["valid_strict"] == "1" and rows[0]["charged_atoms"] == "0"
    assert rows[1]["n_atoms"] == "4" and "bond perception failed" in rows[1]["notes"]


def test_evaluated_sdf_has_a_csv_with_every_record_including_unread_ones(tmp_path, qm9):
    from molguide.data.io import write_sdf

    source = tmp_path / "mine.sdf"
    write_sdf([qm9[3], qm9[4]], source)
    text = source.read_text()
    broken = text + "broken\n  no atoms here\n\n  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n"
    source.write_text(broken)
    report = read_molecules(source)
    assert len(report.errors) == 1
    ev = evaluate(report.molecules, reference_smiles=[], descriptors=True, read_errors=report.errors)
    out = tmp_path / "results.sdf"
    write_evaluated_sdf(ev, report.molecules, out, source, report.errors)
    rows = _rows(tmp_path / "results.csv")
    assert len(rows) == 3
    assert rows[2]["name"] == "record 3" and rows[2]["error"]
    assert all(r["valid"] == "1" for r in rows[:2]) and all(float(r["qed"]) > 0 for r in rows[:2])


def test_the_csv_beside_an_sdf_never_overwrites_the_input(tmp_path, qm9):
    """A user's table (e.g. the CSV of SMILES the molecules came from) is never written over."""
    from molguide.data.io import MoleculeFileError, write_sdf

    source = tmp_path / "mine.sdf"
    write_sdf([qm9[3]], source)
    report = read_molecules(source)
    ev = evaluate(report.molecules, reference_smiles=[], descriptors=False)
    table = tmp_path / "designs.csv"
    table.write_text("smiles,gap\nC,1.0\n")
    with pytest.raises(MoleculeFileError, match="input file"):
        write_evaluated_sdf(ev, report.molecules, tmp_path / "designs.sdf", table)
    assert table.read_text() == "smiles,gap\nC,1.0\n" and not (tmp_path / "designs.sdf").exists()


def test_evaluate_out_refuses_a_csv_name_and_an_input_beside_it_before_evaluating(tmp_path, capsys):
    """`--out x.csv` would have its SDF replaced by the table; `--out mols.sdf` for input
    mols.csv would write the table over the input. Both are one line, before any work."""
    from molguide.cli import main

    table = tmp_path / "mols.csv"
    table.write_text("smiles,gap\nCCO,1.0\n")
    assert main(["evaluate", str(table), "--out", str(tmp_path / "mols.sdf")]) == 2
    err = capsys.readouterr().err
    assert f"{table}: is the input file" in err and not (tmp_path / "mols.sdf").exists()
    assert main(["evaluate", str(table), "--out", str(tmp_path / "results.csv")]) == 2
    assert "name the SDF file to write" in capsys.readouterr().err
    assert table.read_text() == "smiles,gap\nCCO,1.0\n"

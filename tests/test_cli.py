import json
import subprocess
import sys
from pathlib import Path

from molguide.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures"


def test_data_info_json(qm9, capsys):
    assert main(["data", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_molecules"] == 130_831
    assert info["splits"]["train"] == 100_000
    assert info["splits"]["valid"] == 17_748
    assert info["splits"]["test"] == 13_083
    assert info["properties"]["gap_eV"]["unit"] == "eV"
    assert info["properties"]["mu_D"]["min"] == 0.0


def test_evaluate_json_is_one_object_with_design_keys(qm9, capsys):
    assert main(["evaluate", str(FIXTURES / "mixed_bad.xyz"), "--json", "--no-xtb"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)  # exactly one JSON document
    for key in ("validity", "validity_strict", "atom_stability", "mol_stability", "uniqueness", "novelty"):
        assert 0.0 <= result[key] <= 1.0
    assert result["n_input"] == 8 and result["n_evaluated"] == 5
    assert [e["record"] for e in result["errors"]] == [2, 4, 6]


def test_evaluate_qm9_sample_with_xtb_and_annotated_output(qm9, capsys, tmp_path):
    out_sdf = tmp_path / "annotated.sdf"
    code = main(["evaluate", str(FIXTURES / "qm9_sample.xyz"), "--json", "--out", str(out_sdf)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_evaluated"] == 100 and result["validity"] >= 0.99
    assert result["atom_stability"] > 0.98 and result["mol_stability"] > 0.9
    # The sample comes from the test split; EDM's distance-table bonds (with the hydrogens
    # sanitisation adds) turn one of them (gdb_126217, a triazole) into a training
    # molecule's SMILES, as EDM's own novelty would.
    assert result["novelty"] >= 0.98
    assert result["validity_strict"] >= 0.98
    assert result["properties"]["xtb_gap_eV"]["n"] == 100
    from molguide.data import read_sdf

    annotated = read_sdf(out_sdf)
    assert len(annotated.molecules) == 100
    first = annotated.molecules[0]
    assert first.properties["molguide_valid"] == 1 and "molguide_xtb_gap_eV" in first.properties
    assert "molguide_smiles" in first.tags


def test_bad_input_is_one_line_not_a_traceback(tmp_path):
    empty = tmp_path / "empty.sdf"
    empty.write_text("")
    for args in (["evaluate", str(empty)], ["evaluate", str(tmp_path / "missing.xyz")],
                 ["evaluate", str(tmp_path)]):  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", "molguide.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().startswith("molguide: error:")
        assert len(proc.stderr.strip().splitlines()) == 1


def test_run_config_problems_are_one_line_naming_the_key(tmp_path, capsys):
    cases = {
        "guide.clasifier=1": "guide.clasifier: Extra inputs are not permitted",
        "guide.n_samples=-1": "guide.n_samples: Input should be greater than or equal to 2",
        "target.property=gap": "target.property: Input should be 'gap_eV'",
        "classifier.train.lr=fast": "classifier.train.lr: Input should be a valid number",
    }
    for override, message in cases.items():
        assert main(["run", "quickstart", "--set", override, "--set", f"output_dir={tmp_path}"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert not any(tmp_path.iterdir())  # nothing ran


def test_evaluate_out_keeps_every_record_and_adds_prefixed_results(qm9, tmp_path, capsys):
    from molecule_files import sdf_records, zinc_style_sdf
    from rdkit import Chem

    source = zinc_style_sdf(tmp_path / "zinc.sdf")
    out = tmp_path / "evaluated.sdf"
    assert main(["evaluate", str(source), "--no-xtb", "--no-novelty", "--out", str(out)]) == 0
    assert "3 of 3 records evaluated" in capsys.readouterr().out
    written = sdf_records(out)
    assert len(written) == 3
    for given, got in zip(sdf_records(source), written):
        assert got.startswith(given)  # atoms, bonds and every tag byte for byte
    inputs = Chem.SDMolSupplier(str(source), sanitize=False, removeHs=False)
    outputs = Chem.SDMolSupplier(str(out), sanitize=False, removeHs=False)
    valid = []
    for a, b in zip(inputs, outputs):
        bonds = [
            {(x.GetBeginAtomIdx(), x.GetEndAtomIdx(), x.GetBondType()) for x in m.GetBonds()} for m in (a, b)
        ]  # noqa: E501
        assert bonds[0] == bonds[1]
        props = b.GetPropsAsDict()
        assert {k: props[k] for k in a.GetPropsAsDict()} == a.GetPropsAsDict()  # qed, logp, smiles kept
        assert "molguide_qed" in props and props["molguide_bonds"] == "perceived"
        valid.append((props["molguide_valid"], props["molguide_valid_strict"]))
    # EDM's validity has no charges: the zwitterion fails it; strict validity names its charges.
    assert valid == [(1, 1), (1, 1), (0, 0)]
    assert b.GetProp("vendor") == "Mcule <on request>" and b.GetProp("molguide_charged_atoms") == "2"

    # Evaluating the output again replaces the earlier molguide_ tags instead of doubling them.
    again = tmp_path / "again.sdf"
    assert main(["evaluate", str(out), "--no-xtb", "--no-novelty", "--out", str(again)]) == 0
    assert sdf_records(again) == written
    assert main(["evaluate", str(out), "--no-xtb", "--out", str(out)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert sdf_records(out) == written


def test_evaluate_counts_a_record_whose_separator_is_missing(qm9, tmp_path, capsys):
    from molecule_files import zinc_style_sdf

    text = zinc_style_sdf(tmp_path / "zinc.sdf").read_text()
    path = tmp_path / "missing.sdf"
    path.write_text(text.replace("$$$$\n", "", 1))
    out_sdf = tmp_path / "out.sdf"
    assert main(["evaluate", str(path), "--no-xtb", "--no-novelty", "--out", str(out_sdf)]) == 0
    out = capsys.readouterr().out
    assert "2 of 3 records evaluated" in out and "record 1 (line 1): no '$$$$' line" in out
    # The unread record is kept too, in its place, saying why it was not evaluated.
    from molecule_files import sdf_records

    first, second, third = sdf_records(out_sdf)
    given = text.split("$$$$\n")
    assert (
        first.startswith(given[0].rstrip("\n"))
        and "molguide_error" in first
        and "molguide_valid" not in first
    )
    assert second.startswith(given[1]) and third.startswith(given[2]) and "molguide_valid" in third


def test_when_no_record_loads_every_reason_is_shown(tmp_path, capsys):
    path = tmp_path / "bad.xyz"
    path.write_text("2\nflat?\nH 0 0 0\nX 0 0 1\n3\nshort\nH 0 0 0\n")
    assert main(["evaluate", str(path), "--no-xtb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"molguide: error: {path}: none of the 2 records could be read:"
    assert "record 1 (line 1): atom 2 (line 4): unknown element 'X'" in err[1]
    assert "record 2 (line 5): declares 3 atoms but has 1 atom lines" in err[2]
    assert main(["evaluate", str(path), "--no-xtb", "--json"]) == 2
    result = json.loads(capsys.readouterr().out)
    assert result["n_input"] == 2 and result["n_evaluated"] == 0
    assert [e["record"] for e in result["errors"]] == [1, 2]

"""What users read about sample quality: strict validity beside EDM's validity in the
summary tables and ``molguide compare``, and the sample grid (strictly valid molecules
first, the others labelled by what is wrong)."""

from __future__ import annotations

import numpy as np
import pytest

from molguide.data.molecules import Molecule


def _mol(smiles: str, name: str, **tags: str):
    """An RDKit molecule with hydrogens and a 3D conformer, carrying ``tags`` as properties."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    mol.SetProp("_Name", name)
    for key, value in tags.items():
        mol.SetProp(key, value)
    return mol


def _strict(name: str, gap: float | None = None):
    mol = _mol("CCO", name, valid="1", valid_strict="1", charged_atoms="0", radical_electrons="0")
    mol.SetProp("fragments", "1")
    mol.SetProp("missing_h", "0")
    if gap is not None:
        mol.SetProp("evaluator_gap_eV", repr(gap))
    return mol


def _bondless(name: str):
    """Atoms only, as annotated_mols returns a molecule whose bonds could not be perceived."""
    from molguide.data.io import molecule_to_rdkit

    z = np.array([6, 6, 8, 1, 1])
    xyz = np.array([[0, 0, 0], [4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0], [4.0, 4.0, 0]])
    mol = molecule_to_rdkit(Molecule(z, xyz, name=name))
    mol.SetProp("valid", "0")
    mol.SetProp("valid_strict", "0")
    return mol


def _rows():
    charged = _mol("C[N+](=O)[O-]", "charged", valid="0", valid_strict="0", charged_atoms="2")
    charged.SetProp("radical_electrons", "0")
    charged.SetProp("fragments", "1")
    charged.SetProp("missing_h", "0")
    radical = _mol("[CH2]C", "radical", valid="1", valid_strict="0", charged_atoms="0", radical_electrons="1")
    radical.SetProp("fragments", "1")
    radical.SetProp("missing_h", "0")
    frags = _mol("C.O", "frags", valid="1", valid_strict="0", charged_atoms="0", radical_electrons="0")
    frags.SetProp("fragments", "2")
    frags.SetProp("missing_h", "0")
    unguided = [charged, _strict("s1", 5.5), _bondless("nobonds"), radical, _strict("s2"), frags]
    guided = [_bondless("lost"), _strict("g1", 7.25)]
    return {"unguided": unguided, "w2": guided}


def test_grid_draws_the_strictly_valid_molecules_first_then_the_others_labelled():
    from molguide.diagnostics.plots import grid_cells

    cells = grid_cells(_rows(), per_row=4, label_prop="evaluator_gap_eV", strict_only=False)
    names = [None if mol is None else mol.GetProp("_Name") for mol, _ in cells]
    legends = [legend for _, legend in cells]
    # Row 1: both strict ones in their order, then the others in theirs up to per_row.
    assert names[:4] == ["s1", "s2", "charged", "nobonds"]
    assert legends[:4] == [
        "unguided: gap 5.50 eV",
        "unguided",
        "unguided (EDM-invalid, charged)",
        "unguided (EDM-invalid, no bonds)",
    ]
    # Row 2: padded with empty cells so that each setting keeps its row.
    assert names[4:] == ["g1", "lost", None, None]
    assert legends[4:] == ["w2: gap 7.25 eV", "w2 (EDM-invalid, no bonds)", "", ""]
    wide = grid_cells(_rows(), per_row=6, strict_only=False)
    assert [legend for _, legend in wide[4:6]] == ["unguided (radical)", "unguided (2 frags)"]
    # By default only the strictly valid ones, the rest of the row left empty.
    strict = grid_cells(_rows(), per_row=4, label_prop="evaluator_gap_eV")
    assert [None if mol is None else mol.GetProp("_Name") for mol, _ in strict] == [
        "s1", "s2", None, None, "g1", None, None, None,
    ]  # fmt: skip


def test_strict_problems_read_the_tags_of_annotated_mols():
    from molguide.diagnostics.plots import strict_problems

    assert strict_problems(_strict("ok")) == ""
    assert strict_problems(_bondless("x")) == "EDM-invalid, no bonds"
    missing = _mol("CC", "m", valid="1", valid_strict="0", charged_atoms="0", radical_electrons="0")
    missing.SetProp("fragments", "1")
    missing.SetProp("missing_h", "2")
    assert strict_problems(missing) == "missing H"
    unsanitisable = _mol("CC", "u", valid="1", valid_strict="0", fragments="0")
    assert strict_problems(unsanitisable) == "unsanitisable"
    assert strict_problems(_mol("CC", "plain")) == "not evaluated"


def test_grid_of_evaluated_molecules_draws_every_kind_including_those_without_bonds(tmp_path):
    from rdkit import Chem

    from molguide.chem.evaluate import annotated_mols, evaluate
    from molguide.diagnostics.plots import grid_cells, plot_molecule_grid

    def molecule(smiles: str, name: str) -> Molecule:
        mol = _mol(smiles, name)
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        return Molecule(z, mol.GetConformer().GetPositions(), name=name)

    scattered = Molecule(np.array([6, 6, 8]), np.array([[0, 0, 0], [5.0, 0, 0], [0, 5.0, 0]]), name="far")
    mols = [scattered, molecule("C[N+](=O)[O-]", "nitro"), molecule("CCO", "ethanol")]
    ev = evaluate(mols, reference_smiles=[], descriptors=False, progress=False)
    assert [r.valid_strict for r in ev.molecules] == [False, False, True]
    rdkit_mols = annotated_mols(ev, mols)
    cells = grid_cells({"": rdkit_mols}, per_row=4, strict_only=False)
    assert [m.GetProp("_Name") for m, _ in cells[:3]] == ["ethanol", "far", "nitro"]
    assert cells[0][1] == "" and "no bonds" in cells[1][1] and "charged" in cells[2][1]
    assert Chem.Mol(rdkit_mols[0]).GetNumBonds() == 0
    path = plot_molecule_grid({"": rdkit_mols, "other": _rows()["w2"]}, tmp_path / "grid.png", per_row=4)
    assert path.stat().st_size > 1000


def test_summary_tables_show_strict_validity_beside_validity():
    from molguide.diagnostics.tables import guidance_table, sampling_table

    quality = {"validity": 0.9, "validity_strict": 0.7512, "atom_stability": 0.98, "mol_stability": 0.8}
    guide = {
        "target": "gap_eV high",
        "n_samples": 8,
        "sampling_steps": 40,
        "results": {"unguided": quality, "classifier_w2": {**quality, "validity_strict": None}},
    }
    lines = guidance_table(guide).splitlines()
    header = lines[1].split()
    assert header.index("strict") == header.index("validity") + 1
    assert "0.900      0.751" in lines[2] and "0.900          -" in lines[3]
    sample = sampling_table({"results": {"ancestral100": {**quality, "sample_s_per_molecule": 0.2}}})
    header, row = sample.splitlines()
    assert "validity strict val atom stab" in " ".join(header.split())
    assert row.split()[1:3] == ["0.900", "0.751"]


def test_compare_shows_validity_strict_beside_validity():
    from molguide.runs.compare import KEY_METRICS, to_csv, to_table

    assert KEY_METRICS.index("validity_strict") == KEY_METRICS.index("validity") + 1
    row = {"run_id": "0123456789abcdef", "experiment": "molguide-x", "run_name": "r", "status": "FINISHED"}
    row["start"] = "2026-01-01 00:00"
    row.update({k: None for k in KEY_METRICS})
    row.update(validity=0.9, validity_strict=0.625)
    header, line = to_table([row]).splitlines()
    assert header.split()[-2:] == ["validity", "validity_strict"]
    assert line.split()[-2:] == ["0.900", "0.625"]
    assert "validity,validity_strict," in to_csv([row]).splitlines()[0]


@pytest.mark.parametrize("lost", [0, 2])
def test_strict_validity_of_judged_samples_counts_lost_ones_as_invalid(lost):
    """judge: a valid_strict array beside valid, and validity_strict over all requested."""
    import torch

    from molguide.diagnostics.report import judge
    from molguide.guidance.targets import PropertyTarget
    from molguide.models.predictor import MoleculePredictor
    from molguide.storage.metadata import EvaluatorRecord

    def molecule(smiles: str, name: str) -> Molecule:
        mol = _mol(smiles, name)
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        return Molecule(z, mol.GetConformer().GetPositions(), name=name)

    made = [molecule("CCO", "a"), molecule("C[N+](=O)[O-]", "b")]
    mols = [*made, *([None] * lost)]
    torch.manual_seed(0)
    evaluator = MoleculePredictor(time_input=False, hidden=8, num_layers=1)
    target = PropertyTarget("gap_eV", thresholds=[5.0, 7.0], target="high").fit(np.zeros(1))
    record = EvaluatorRecord(property=target.name, mean=6.0, std=1.0)
    out = judge(mols, {}, len(mols), evaluator, record, target, 1.0, [], False, None)
    assert out["valid_strict"].tolist() == [True, False, *([False] * lost)]
    assert out["metrics"]["validity_strict"] == pytest.approx(1 / len(mols))
    assert out["metrics"]["validity"] == pytest.approx(out["valid"].sum() / len(mols))

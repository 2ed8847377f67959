"""Sampling from given molecules: a start part-way along the noise (lead optimisation) and
atoms kept fixed (inpainting), on the shipped QM9 generator and real QM9 molecules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from exploding import ExplodingScore

from molguide.diffusion.editing import MoleculeEdit
from molguide.diffusion.steps import time_grid
from molguide.generation.from_molecules import kabsch_rmsd


@pytest.fixture(scope="module")
def pipe():
    from molguide.generation.pipeline import MoleculeDiffusionPipeline

    return MoleculeDiffusionPipeline.from_pretrained("qm9")


@pytest.fixture(scope="module")
def leads(qm9):
    from molguide.data.registry import get_dataset

    dataset = get_dataset("qm9")
    molecules = dataset.load()
    return molecules.subset(dataset.splits(len(molecules))["valid"][:6])


def _edit(pipe, leads, t_start=1.0, keep=None) -> MoleculeEdit:
    index = {z: k for k, z in enumerate(pipe.atom_types)}
    positions = [m.positions for m in leads]
    types = [np.array([index[int(z)] for z in m.atomic_numbers]) for m in leads]
    return MoleculeEdit(positions, types, t_start, keep)


def test_the_time_grid_starts_at_t_start_and_keeps_the_schedule_points():
    grid = time_grid(10, 1000, 1.0, 0.3)
    assert float(grid[0]) == pytest.approx(0.3) and float(grid[-1]) == 0.0
    assert bool((grid[:-1] > grid[1:]).all()) and torch.equal(grid * 1000, torch.round(grid * 1000))
    assert torch.equal(time_grid(10, 1000, 2.0), time_grid(10, 1000, 2.0, 1.0))
    with pytest.raises(ValueError, match=r"steps must be in \[1, 20\] from t_start 0.02, got 50"):
        time_grid(50, 1000, 1.0, 0.02)
    with pytest.raises(ValueError, match="t_start 0.0004 is below the schedule's first step, 1/1000"):
        time_grid(1, 1000, 1.0, 0.0004)


def test_an_edit_from_pure_noise_that_keeps_nothing_is_plain_sampling(pipe, leads):
    counts = [len(m.atomic_numbers) for m in leads]
    plain = pipe(counts, seed=3, steps=20)
    edited = pipe(counts, seed=3, steps=20, edit=_edit(pipe, leads))
    for a, b in zip(plain.molecules, edited.molecules):
        assert np.array_equal(a.atomic_numbers, b.atomic_numbers) and np.allclose(
            a.positions, b.positions - b.positions.mean(0) + a.positions.mean(0)
        )


def test_a_start_near_the_data_returns_the_lead_and_a_later_one_moves_further(pipe, leads):
    counts = [len(m.atomic_numbers) for m in leads]
    rmsd = {}
    for t_start in (0.02, 0.5):
        result = pipe(counts, seed=0, steps=20, edit=_edit(pipe, leads, t_start))
        out = result.by_index()
        rmsd[t_start] = [
            kabsch_rmsd(o.positions, lead.positions) for o, lead in zip(out, leads) if o is not None
        ]
        if t_start == 0.02:
            same = [np.array_equal(o.atomic_numbers, lead.atomic_numbers) for o, lead in zip(out, leads) if o]
            assert all(same)
            # The output overlays the lead: same centre, not the origin.
            assert all(
                np.allclose(o.positions.mean(0), lead.positions.mean(0), atol=1e-4)
                for o, lead in zip(out, leads)
                if o
            )
    assert max(rmsd[0.02]) < 0.2  # Angstrom: a light touch keeps the geometry
    assert np.mean(rmsd[0.5]) > 3 * np.mean(rmsd[0.02])


def test_kept_atoms_are_the_references_exactly_and_the_others_are_generated(pipe, leads):
    counts = [len(m.atomic_numbers) for m in leads]
    keep = [np.arange(n) < max(1, n // 2) for n in counts]  # the first half of each molecule
    result = pipe(counts, seed=1, steps=30, edit=_edit(pipe, leads, 1.0, keep))
    assert result.molecules
    for index, out in zip(result.indices, result.molecules):
        lead, mask = leads[index], keep[index]
        assert np.array_equal(out.atomic_numbers[mask], lead.atomic_numbers[mask])
        np.testing.assert_allclose(out.positions[mask], lead.positions[mask], atol=1e-4)
        assert not np.allclose(out.positions[~mask], lead.positions[~mask], atol=0.5)


def test_a_bad_edit_names_what_is_wrong(pipe, leads):
    with pytest.raises(ValueError, match=r"t_start must be in \(0, 1\]"):
        MoleculeEdit([np.zeros((2, 3))], [np.zeros(2, dtype=int)], 0.0)
    with pytest.raises(ValueError, match="a keep mask of 1 for 2 atoms"):
        MoleculeEdit([np.zeros((2, 3))], [np.zeros(2, dtype=int)], 1.0, [np.ones(1, dtype=bool)])
    with pytest.raises(ValueError, match="give n as the edit's atom counts"):
        pipe([5] * len(leads), seed=0, steps=5, edit=_edit(pipe, leads))


@pytest.fixture(scope="module")
def lead():
    """A QM9-sized lead with hydrogens and a 3D conformer (RDKit ETKDG + MMFF)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("OCc1ccc(C)o1"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    AllChem.MMFFOptimizeMolecule(mol)
    return mol


def test_optimize_keeps_the_lead_at_a_small_t0_and_reports_how_far_it_moved(lead):
    import molguide

    designer = molguide.load("qm9")
    close = designer.optimize(lead, n=6, t0=0.05, seed=0)
    assert close and all(m.GetNumAtoms() == lead.GetNumAtoms() for m in close)
    assert designer.last_metrics["rmsd_to_lead"] < 0.2 and designer.last_metrics["tanimoto_to_lead"] == 1.0
    assert designer.last_metrics["scaffold_kept"] == 1.0
    assert all(m.GetProp("molguide_t0") == "0.05" for m in close)
    far = designer.optimize(lead, n=6, t0=0.6, seed=0)
    assert designer.last_metrics["rmsd_to_lead"] > 0.5  # a deeper start moves the molecule
    assert all(m.HasProp("valid_strict") for m in far)


def test_optimize_with_a_kept_ring_leaves_those_atoms_exactly_in_place(lead):
    from rdkit import Chem

    import molguide

    ring = sorted(lead.GetSubstructMatch(Chem.MolFromSmarts("c1ccoc1")))
    designer = molguide.load("qm9")
    mols = designer.optimize(lead, n=4, t0=0.3, keep="c1ccoc1", seed=1)
    reference = lead.GetConformer().GetPositions()[ring]
    for mol in mols:
        np.testing.assert_allclose(mol.GetConformer().GetPositions()[ring], reference, atol=1e-4)
        assert [mol.GetAtomWithIdx(i).GetAtomicNum() for i in ring] == [
            lead.GetAtomWithIdx(i).GetAtomicNum() for i in ring
        ]


def test_generate_around_a_kept_fragment_grows_larger_molecules_that_contain_it(lead):
    import molguide

    designer = molguide.load("qm9")
    mols = designer.generate(6, keep=(lead, [0, 1, 2]), seed=2)  # O, C and a ring carbon of the lead
    reference = lead.GetConformer().GetPositions()[[0, 1, 2]]
    for mol in mols:
        assert mol.GetNumAtoms() > 3
        np.testing.assert_allclose(mol.GetConformer().GetPositions()[:3], reference, atol=1e-4)
        assert [a.GetAtomicNum() for a in mol.GetAtoms()][:3] == [8, 6, 6]
    smarts = designer.generate(4, keep=(lead, "c1ccoc1"), seed=2)
    assert all(m.HasProp("keep_matched") for m in smarts)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d, lead: d.optimize(lead, t0=0), r"t0 must be a number in \(0, 1\]"),
        (lambda d, lead: d.optimize(lead, keep="[Si]"), "'\\[Si\\]' does not match the molecule"),
        (lambda d, lead: d.optimize(lead, keep=[0, 99]), r"atom indices must be distinct and in \[0, 16\)"),
        (lambda d, lead: d.optimize("CCO"), "give an RDKit Mol with a 3D conformer"),
        (lambda d, lead: d.generate(2, keep=(lead,)), r"keep: give \(mol, 'SMARTS'\)"),
    ],
)
def test_bad_leads_and_keeps_name_the_argument(lead, call, message):
    import molguide

    with pytest.raises(ValueError, match=message):
        call(molguide.load("qm9"), lead)


def test_a_smarts_on_an_unsanitised_lead_matches_or_says_why(lead):
    from rdkit import Chem

    from molguide.generation.from_molecules import kept_atoms

    raw = Chem.MolFromMolBlock(Chem.MolToMolBlock(lead), sanitize=False, removeHs=False)
    assert kept_atoms(raw, "[OX2H]", raw.GetNumAtoms()) == [0]  # ring and valence data filled in first


def test_a_lead_with_elements_the_generator_lacks_is_named():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    import molguide

    mol = Chem.AddHs(Chem.MolFromSmiles("CCS"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    with pytest.raises(ValueError, match="lead holds S; this generator makes H C N O F only"):
        molguide.load("qm9").optimize(mol)


def test_the_command_line_makes_variants_of_a_lead_and_grows_around_kept_atoms(lead, tmp_path, capsys):
    import json

    from rdkit import Chem

    from molguide.cli import main

    path = tmp_path / "lead.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(lead)
    out = tmp_path / "variants.sdf"
    assert (
        main(["generate", "qm9", "--from", str(path), "--t0", "0.1", "-n", "4", "--out", str(out), "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["rmsd_to_lead"] < 0.3 and result["n_generated"] == 4
    assert "tanimoto_to_lead" in out.read_text() and out.with_suffix(".csv").exists()
    assert main(["generate", "qm9", "--from", str(path), "--keep", "c1ccoc1", "-n", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_generated"] >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--t0", "0.3"], "--t0 and --keep need --from FILE"),
        (["--from", "LEAD"], "--from FILE needs --t0"),
        (["--from", "LEAD", "--t0", "1.5"], r"--t0 '1.5': give a number in \(0, 1\]"),
        (["--from", "LEAD", "--keep", "[Si]"], r"keep: '\[Si\]' does not match the molecule"),
    ],
)
def test_bad_design_options_are_one_line(lead, tmp_path, capsys, args, message):
    import re

    from rdkit import Chem

    from molguide.cli import main

    path = tmp_path / "lead.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(lead)
    args = [str(path) if a == "LEAD" else a for a in args]
    assert main(["generate", "qm9", *args, "-n", "2"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(message, err[-1]) and err[-1].startswith("molguide: error:")


def test_the_lead_optimisation_example_makes_variants_and_grows_around_a_ring(lead, tmp_path, capsys):
    import runpy

    from own_data import ROOT
    from rdkit import Chem

    path = tmp_path / "lead.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(lead)
    example = runpy.run_path(str(ROOT / "examples" / "lead_optimisation.py"))
    summary = example["main"]([str(path), "--t0", "0.1,0.3", "-n", "3", "--out", str(tmp_path)])
    assert set(summary) == {0.1, 0.3} and summary[0.1]["unguided"]["rmsd_to_lead"] < 0.3
    assert (tmp_path / "variants_t0.1.sdf").exists() and (tmp_path / "variants_t0.1.csv").exists()
    assert "t0 0.1: unguided: Tanimoto" in capsys.readouterr().out
    grown = example["main"]([str(path), "--grow", "c1ccoc1", "-n", "2", "--out", str(tmp_path)])
    assert "validity_strict" in grown["grown"] and (tmp_path / "grown.csv").exists()


def test_the_design_pipeline_logs_a_run_per_start_level_with_its_variants(
    lead, tmp_path, monkeypatch, capsys
):
    import mlflow
    from rdkit import Chem

    from molguide.cli import main
    from molguide.runs.config import load_config
    from molguide.runs.design import design_from_lead

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = tmp_path / "lead.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(lead)
    overrides = [
        f"output_dir={tmp_path / 'run'}",
        f"design.lead={path}",
        "design.model=qm9",
        "design.t0=[0.1, 0.3]",
        "design.n=3",
    ]
    out = design_from_lead(load_config(None, overrides), progress=False)
    assert [(r["t0"], r["setting"]) for r in out["rows"]] == [(0.1, "unguided"), (0.3, "unguided")]
    assert out["rows"][0]["rmsd_to_lead"] < out["rows"][1]["rmsd_to_lead"]
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(out["run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{out['run_id']}'")
    params = sorted((r.data.params["t0"], r.data.params["guidance"]) for r in children)
    assert params == [("0.1", "none"), ("0.3", "none")]
    assert all("tanimoto_to_lead" in r.data.metrics and "validity_strict" in r.data.metrics for r in children)
    folder = tmp_path / "run" / "design"
    assert (folder / "t0.1_unguided.sdf").exists() and (folder / "t0.3_unguided.csv").exists()
    assert (folder / "lead_curve.png").exists() and "t0 0.1" in parent.data.tags["mlflow.note.content"]
    capsys.readouterr()
    assert (
        main(["run", "design", "--set", f"output_dir={tmp_path / 'other'}", "--set", "design.model=qm9"]) != 0
    )
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "molguide: error: design.lead: name an SDF whose first molecule is the lead (3D, with hydrogens)"
    )


def test_improvement_over_a_lead_counts_towards_the_goal():
    from molguide.generation.designer import _towards_goal
    from molguide.guidance.goals import parse_goals

    values = np.array([1.0, 3.0])
    assert _towards_goal(values, 2.0, [], "p").tolist() == [-1.0, 1.0]  # no goal: the plain difference
    assert _towards_goal(values, 2.0, parse_goals({"p": "low"}), "p").tolist() == [1.0, -1.0]
    assert _towards_goal(values, 2.0, parse_goals({"p": 1.5}), "p").tolist() == [0.0, -1.0]  # closer to 1.5


def test_a_design_keep_that_does_not_match_is_one_line_before_any_run(lead, tmp_path, monkeypatch, capsys):
    import mlflow
    from rdkit import Chem

    from molguide.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = tmp_path / "lead.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(lead)
    args = ["run", "design", "--set", f"output_dir={tmp_path / 'run'}", "--set", f"design.lead={path}"]
    assert main([*args, "--set", "design.model=qm9", "--set", "design.keep='[Si]'"]) != 0  # quoted: YAML
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "molguide: error: keep: '[Si]' does not match the molecule"
    )
    if (tmp_path / "mlflow.db").exists():  # no run was opened for the refused design
        assert mlflow.MlflowClient(uri).get_experiment_by_name("molguide-design") is None


def test_a_design_whose_every_variant_diverges_is_one_line(lead, tmp_path, monkeypatch, capsys):
    from rdkit import Chem

    from molguide.cli import main
    from molguide.generation import designer as designer_module

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    path = tmp_path / "lead.sdf"
    with Chem.SDWriter(str(path)) as writer:
        writer.write(lead)
    real_load = designer_module.Designer.load

    def exploding_load(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        loaded.pipeline = loaded.pipeline.with_model(ExplodingScore())
        return loaded

    monkeypatch.setattr(designer_module.Designer, "load", exploding_load)
    args = ["run", "design", "--set", f"output_dir={tmp_path / 'run'}", "--set", f"design.lead={path}"]
    rc = main([*args, "--set", "design.model=qm9", "--set", "design.t0=[0.3]", "--set", "design.n=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert err[-1].startswith("molguide: error: design at t0 0.3 (unguided): all 2 samples diverged")
    assert not any(line.startswith("Traceback") for line in err)

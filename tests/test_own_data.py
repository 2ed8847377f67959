"""A user's own molecules (``data.path``): an SDF or CSV with elements QM9 lacks and a property
of their own trains, guides and evaluates end to end; every record is loaded or reported."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from own_data import SMILES, crippen_logp, write_own_csv, write_own_sdf

from molguide.runs.config import ConfigError, load_config

TINY = [
    "model.backbone_kwargs={hidden: 16, num_layers: 2}",
    # 400 steps (3 s): fewer leave a generator whose samples all diverge.
    "train={steps: 400, batch_size: 16, lr: 0.002, log_every: 100, checkpoint_every: 400}",
    "classifier.backbone_kwargs={hidden: 16, num_layers: 2}",
    "classifier.train={steps: 20, batch_size: 16, lr: 0.001, log_every: 10}",
    "classifier.holdout=20",
    "evaluator.backbone_kwargs={hidden: 16, num_layers: 2}",
    "evaluator.train={steps: 20, batch_size: 16, lr: 0.001, log_every: 10}",
    "evaluator.holdout=20",
    "guide={classifier: 2.0, reward: 0, diagnostics_molecules: 10, n_samples: 6, steps: 20, batch_size: 6}",
    "guide.xtb=false",
]
LOGP = "data.properties={logP: {unit: log units, description: Crippen logP}}"


@pytest.fixture(scope="module")
def own_sdf(tmp_path_factory):
    return write_own_sdf(tmp_path_factory.mktemp("own") / "own.sdf")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLGUIDE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_an_sdf_with_sulfur_and_chlorine_trains_guides_and_generates_with_its_own_property(
    own_sdf, cache, tmp_path, monkeypatch, caplog
):
    import molguide
    from molguide.runs.guide import guided_sample
    from molguide.runs.train import train_classifier, train_evaluator, train_score
    from molguide.storage.trained_run import TrainedRun

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    folder = tmp_path / "run"
    config = load_config(
        None, [f"output_dir={folder}", f"data.path={own_sdf}", LOGP, "data.split=train", *TINY]
    )
    assert config.target.property == "logP" and config.data.dataset is None  # the file's property
    with caplog.at_level(logging.INFO):
        score = train_score(config, progress=False)
        train_classifier(config, progress=False)
    # Record 11 is not a molecule and record 4 has no logP: both named, neither silently dropped.
    assert "record 11 (line 316): molecule has no atoms" in caplog.text
    assert "1 of 94 molecules have no numeric logP (records 4)" in caplog.text
    splits = {name: len(ix) for name, ix in molguide_splits(config).items()}
    assert score["n_molecules"] == splits["train"]  # the generator learns every training molecule
    # Record 4 (no logP) fell in the validation split: the classifier's held-out molecules leave it
    # out and say so; every training molecule has a value.
    held = f"{splits['valid'] - 1} of {splits['valid']} molecules of split valid have a value of logP"
    assert held in caplog.text and f"target class 2; {splits['train']} training molecules" in caplog.text
    train_evaluator(config, progress=False)

    run = TrainedRun.from_pretrained(folder)
    assert run.atom_types == (1, 6, 7, 8, 16, 17)  # the file's elements, in every network
    assert run.network("classifier").config["atom_types"] == [1, 6, 7, 8, 16, 17]
    assert run.binning("logP").name == "logP"

    out = guided_sample(config, progress=False)
    assert set(out["results"]) == {"unguided", "classifier_w2"}
    report = (folder / "guided" / "report.html").read_text()
    assert "logP" in report and "log units" in report

    mols = molguide.load(folder).generate(8, seed=0)  # a tiny generator: some samples diverge
    assert mols and all(m is not None for m in mols)
    for mol in mols:
        assert {a.GetSymbol() for a in mol.GetAtoms()} <= {"H", "C", "N", "O", "S", "Cl"}


def molguide_splits(config):
    from molguide.data.registry import dataset_of

    dataset = dataset_of(config.data)
    return dataset.splits(len(dataset.load()))


def test_evaluating_the_users_molecules_says_where_edm_has_no_table(own_sdf):
    import molguide

    report = molguide.evaluate(molguide.read(own_sdf).molecules, novelty=False)
    reasons = {e["name"]: e["reason"] for e in report["errors"]}
    assert reasons["own_0"] == "stability and EDM validity undefined: no EDM bond table for S"
    assert "no EDM bond table for Cl" in reasons["own_18"] and "own_34" not in reasons  # ethanol has one
    assert report["n_evaluated"] == 94 and report["validity_strict"] > 0.9  # real molecules


def test_a_csv_of_smiles_embeds_conformers_keeps_them_together_and_caches_the_conversion(
    tmp_path, cache, caplog
):
    from molguide.data.registry import dataset_of

    csv = write_own_csv(tmp_path / "own.csv", SMILES[:40])
    overrides = [f"data.path={csv}", "data.properties=[logP]", "data.conformers=2"]
    config = load_config(None, overrides)
    with caplog.at_level(logging.INFO):
        dataset = dataset_of(config.data)
    mols = dataset.load()
    assert len(mols) == 2 * 40  # two conformers of each of the 40 good SMILES
    assert "SMILES does not parse" in caplog.text and "record 6 (line 7)" in caplog.text
    values = dict(zip(mols.names, mols.properties["logP"]))
    assert values["own_0"] == pytest.approx(crippen_logp(SMILES[0]), abs=1e-4)
    splits = dataset.splits(len(mols))
    for name in ("valid", "test"):
        assert not set(mols.names[splits[name]]) & set(mols.names[splits["train"]])
    halves = np.sort(np.concatenate([splits["evaluator_half"], splits["generator_half"]]))
    assert np.array_equal(halves, np.sort(splits["train"]))
    # The second conformer is another geometry of the same molecule.
    first = [i for i, n in enumerate(mols.names) if n == "own_0"]
    assert len(first) == 2 and not np.allclose(mols[first[0]].positions, mols[first[1]].positions)

    caplog.clear()
    config = load_config(None, [*overrides, "data.split_seed=3"])  # another split, same conversion
    with caplog.at_level(logging.INFO):
        again = dataset_of(config.data)
    assert "converting" not in caplog.text and np.array_equal(again.load().positions, mols.positions)
    assert len(list((cache / "files").glob("own-*.npz"))) == 1
    assert len(list((cache / "files").glob("own-*.skipped.csv"))) == 1


def test_a_scaffold_split_puts_each_scaffold_in_one_split(own_sdf, cache):
    from molguide.data.registry import dataset_of
    from molguide.data.user_files import scaffold_of

    config = load_config(None, [f"data.path={own_sdf}", LOGP, "data.split_by=scaffold", "data.split_seed=1"])
    dataset = dataset_of(config.data)
    mols = dataset.load()
    splits = dataset.splits(len(mols))
    scaffolds = {name: {scaffold_of(s) for s in mols.smiles[ix]} for name, ix in splits.items()}
    assert not scaffolds["train"] & scaffolds["valid"] and not scaffolds["train"] & scaffolds["test"]
    assert not scaffolds["valid"] & scaffolds["test"]
    assert sum(len(splits[n]) for n in ("train", "valid", "test")) == len(mols)
    assert len(splits["evaluator_half"]) > 0 and len(splits["generator_half"]) > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.dataset=qm9", "data.path=x.sdf"], "give data.dataset or data.path, not both"),
        (["data.properties=[logP]"], "data.properties describes data.path's columns"),
        (["data.path=x.sdf", "data.properties=[logP]", "target.property=gap_eV"], "Input should be 'logP'"),
        (["data.path=x.sdf", "data.split_fractions=[0.8, 0.3, 0.1]"], "summing to 1"),
    ],
)
def test_bad_data_keys_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_a_missing_column_and_a_pretrained_generator_without_the_files_elements_are_one_line(
    own_sdf, cache, tmp_path
):
    from molguide.data.io import MoleculeFileError
    from molguide.data.registry import dataset_of
    from molguide.runs.training_specs import atom_types

    config = load_config(None, [f"data.path={own_sdf}", "data.properties={pIC50: {column: IC50}}"])
    with pytest.raises(
        MoleculeFileError, match=r"no record has a numeric 'IC50' \(numeric tags/columns found: \['logP'\]\)"
    ):
        dataset_of(config.data)
    config = load_config(None, [f"data.path={own_sdf}", LOGP, "model.pretrained=qm9"])
    with pytest.raises(ValueError, match="generates H C N O F; own.sdf also holds S Cl"):
        atom_types(config)


def test_the_quickstart_on_a_users_file_aims_at_its_property():
    """The quickstart's defaults name QM9's gap; on a user's file its first property replaces them."""
    from molguide.runs.pipeline_help import pipeline_defaults

    config = load_config(
        None, ["data.path=x.sdf", "data.properties=[logP, tpsa]"], base=pipeline_defaults("quickstart")
    )
    assert config.target.property == "logP" and config.target.thresholds is None
    assert config.protocol.properties == ["logP", "tpsa"]
    named = load_config(None, ["data.path=x.sdf", "data.properties=[logP, tpsa]", "target.property=tpsa"],
                        base=pipeline_defaults("quickstart"))  # fmt: skip
    assert named.target.property == "tpsa"
    # Touching the target keeps the file's property: the defaults' QM9 gap goes all the same.
    low = load_config(None, ["data.path=x.sdf", "data.properties=[logP]", "target.target=low"],
                      base=pipeline_defaults("quickstart"))  # fmt: skip
    assert (low.target.property, low.target.target) == ("logP", "low")
    goals = load_config(None, ["data.path=x.sdf", "data.properties=[logP]", "target.goals={logP: high}"],
                        base=pipeline_defaults("quickstart"))  # fmt: skip
    assert goals.target.property == "logP"
    with pytest.raises(ConfigError, match="protocol.enabled: EDM's protocol is QM9's benchmark"):
        load_config(None, ["data.path=x.sdf", "data.properties=[logP]", "protocol.enabled=true"])


def test_the_own_data_example_trains_and_designs_on_a_users_file(own_sdf, cache, tmp_path, monkeypatch):
    import runpy
    import sys

    from own_data import ROOT

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    example = runpy.run_path(str(ROOT / "examples" / "own_data.py"))
    tiny = ["model.backbone_kwargs={hidden: 16, num_layers: 2}", "train.lr=0.002",
            "classifier.backbone_kwargs={hidden: 16, num_layers: 2}", "classifier.holdout=20",
            "evaluator.backbone_kwargs={hidden: 16, num_layers: 2}", "evaluator.holdout=20"]  # fmt: skip
    argv = [str(own_sdf), "--property", "logP", "--out", str(tmp_path / "mine"), "--steps", "400", "-n", "8"]
    monkeypatch.setattr(sys, "argv", ["own_data.py"])
    summary = example["main"]([*argv, *[a for item in tiny for a in ("--set", item)]])
    assert set(summary) == {"unguided", "designed"}
    assert summary["designed"]["n"] > 0 and summary["designed"]["logP_mean"] is not None
    assert (tmp_path / "mine" / "designed.sdf").exists() and (tmp_path / "mine" / "unguided.sdf").exists()


def test_max_atoms_and_elements_leave_molecules_out_by_record(own_sdf, cache, caplog):
    from molguide.data.registry import dataset_of

    config = load_config(
        None, [f"data.path={own_sdf}", LOGP, "data.max_atoms=12", "data.elements=[H, C, N, O, S]"]
    )
    with caplog.at_level(logging.WARNING):
        dataset = dataset_of(config.data)
    mols = dataset.load()
    assert mols.num_atoms.max() <= 12 and dataset.atom_types == (1, 6, 7, 8, 16)
    assert "molecules left out, more than data.max_atoms = 12 atoms (records " in caplog.text
    assert (
        "molecules left out, elements outside data.elements ['H', 'C', 'N', 'O', 'S'] (records 20,"
        in caplog.text
    )
    with pytest.raises(ConfigError, match="'Xx' is not an element symbol"):
        load_config(None, [f"data.path={own_sdf}", "data.elements=[H, Xx]"])


def test_the_shipped_generator_fine_tunes_on_a_file_with_new_elements(own_sdf, cache, tmp_path, monkeypatch):
    """train.init_from=qm9 on a file with S and Cl: the networks read QM9's five types then the
    file's new ones, and the score network starts from the shipped weights with two more
    type channels (tests/test_growth.py checks that it computes the same at step 0)."""
    from molguide.runs.train import train_score
    from molguide.storage.checkpoints import load_checkpoint
    from molguide.storage.trained_run import TrainedRun

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'tuned'}",
            f"data.path={own_sdf}",
            LOGP,
            "model.backbone_kwargs={hidden: 64, num_layers: 4, coords_range: 3.75}",  # the shipped network's
            "model.parameterisation=x0",
            "model.self_condition=true",
            "train={steps: 4, batch_size: 8, lr: 0.0001, log_every: 2, checkpoint_every: 4, init_from: qm9}",
        ],
    )
    summary = train_score(config, progress=False)
    assert np.isfinite(summary["final_loss"])
    state = load_checkpoint(tmp_path / "tuned" / "score" / "last.pt")
    assert (
        state["warm_start"]["source"] == "qm9" and state["warm_start"]["model_config"]["num_atom_types"] == 5
    )
    assert TrainedRun.from_pretrained(tmp_path / "tuned").atom_types == (1, 6, 7, 8, 9, 16, 17)


def test_a_warm_start_whose_channels_mean_other_elements_is_refused(own_sdf, cache, tmp_path, monkeypatch):
    """A CFG model started from the shipped generator on a file of H, C, N, O and S has five
    type channels too, but its fifth is S where the generator's is F: refused, not trained."""
    from molguide.runs.train import train_network

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'cfg'}",
            f"data.path={own_sdf}",
            LOGP,
            "data.elements=[H, C, N, O, S]",
            "cfg.train={steps: 2, batch_size: 8, init_from: qm9}",
        ],
    )
    with pytest.raises(
        ValueError, match=r"reads atom types \[1, 6, 7, 8, 9\]; this run's are \[1, 6, 7, 8, 16\]"
    ):
        train_network("cfg", config, progress=False)

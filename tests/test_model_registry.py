"""Trained networks as registered MLflow models: logged with a signature, loadable by
``molguide.load("models:/...")`` and by MLflow's own pyfunc loader (a real SQLite store)."""

from __future__ import annotations

import numpy as np
import pytest

from molguide.runs.config import load_config


@pytest.fixture(scope="module")
def registered(tmp_path_factory, molguide_cache):
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:  # the module's store, restored afterwards
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        from molguide.runs.train import train_classifier, train_evaluator, train_score

        config = load_config(
            None,
            [
                f"output_dir={tmp / 'run'}",
                "name=regtest",
                "data.max_molecules=200",
                "model.pretrained=qm9",
                "classifier.backbone_kwargs={hidden: 16, num_layers: 2}",
                "classifier.train={steps: 5, batch_size: 16, log_every: 5}",
                "classifier.holdout=20",
                "evaluator.backbone_kwargs={hidden: 16, num_layers: 2}",
                "evaluator.train={steps: 5, batch_size: 16, log_every: 5}",
                "evaluator.holdout=20",
            ],
        )
        summaries = {
            "score": train_score(config, progress=False),
            "classifier": train_classifier(config, progress=False),
            "evaluator": train_evaluator(config, progress=False),
        }
        yield {"uri": uri, "summaries": summaries, "folder": tmp / "run"}


def test_every_trained_network_is_a_registered_model_with_a_signature(registered):
    import mlflow

    client = mlflow.MlflowClient(registered["uri"])
    names = {m.name for m in client.search_registered_models()}
    assert names == {"molguide-regtest-score", "molguide-regtest-classifier", "molguide-regtest-evaluator"}
    for kind, summary in registered["summaries"].items():
        assert summary["registered_model"] == f"models:/molguide-regtest-{kind}/1"
        version = client.get_model_version(f"molguide-regtest-{kind}", "1")
        assert version.run_id == summary["run_id"]  # the registry links back to the training run
    info = mlflow.models.get_model_info("models:/molguide-regtest-evaluator/1")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["molblock"]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["gap_eV"]


def test_load_a_registered_generator_with_registered_guidance(registered):
    import molguide

    designer = molguide.load(
        "models:/molguide-regtest-score/latest",
        guidance=["models:/molguide-regtest-classifier/1", "models:/molguide-regtest-evaluator/1"],
    )
    assert designer.properties == ["gap_eV"]
    mols = designer.generate(3, target={"gap_eV": "high"}, guidance={"classifier": 1.0}, seed=0, steps=20)
    assert len(mols) + len(designer.last_failures) == 3
    assert all(m.HasProp("evaluator_gap_eV") for m in mols)


def test_mlflow_pyfunc_predicts_like_the_network(registered, qm9):
    import mlflow.pyfunc
    import pandas as pd
    from rdkit import Chem

    from molguide.data.io import molecule_to_rdkit
    from molguide.data.molecules import MoleculeSet
    from molguide.models.predictor import predict_property
    from molguide.storage.trained_run import read_network

    evaluator = mlflow.pyfunc.load_model("models:/molguide-regtest-evaluator/1")
    molecules = [qm9[k] for k in (3, 10, 20)]
    blocks = [Chem.MolToMolBlock(molecule_to_rdkit(m)) for m in molecules]
    got = evaluator.predict(pd.DataFrame({"molblock": blocks}))["gap_eV"].to_numpy()
    local = read_network(registered["folder"] / "evaluator")
    record = local.record
    want = predict_property(
        local.network, MoleculeSet.from_molecules(molecules), record.mean, record.std, record.onehot_scale
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    generator = mlflow.pyfunc.load_model("models:/molguide-regtest-score/1")
    frame = generator.predict(pd.DataFrame({"n": [2], "seed": [0]}))
    assert list(frame.columns) == ["smiles", "molblock"] and 0 < len(frame) <= 2
    assert all(
        Chem.MolFromMolBlock(b, removeHs=False, sanitize=False).GetNumConformers() == 1
        for b in frame["molblock"]
    )


def test_training_runs_log_their_molecules_as_datasets(registered):
    """MLflow's Dataset column: each split's name, a content digest, the context and size."""
    import mlflow

    client = mlflow.MlflowClient(registered["uri"])
    inputs = {}
    for kind in ("classifier", "evaluator"):
        run = client.get_run(registered["summaries"][kind]["run_id"])
        for entry in run.inputs.dataset_inputs:
            tags = {t.key: t.value for t in entry.tags}
            inputs[kind, tags["mlflow.data.context"]] = (entry.dataset, int(tags["molecules"]))
    assert set(inputs) == {
        ("classifier", "training"),
        ("classifier", "validation"),  # the held-out molecules of the per-noise-level diagnostics
        ("evaluator", "training"),
        ("evaluator", "evaluation"),  # the generator-half molecules of the lower-bound row
    }
    assert inputs["classifier", "training"][0].name == "qm9:generator_half[:200]"
    assert inputs["classifier", "validation"][0].name == "qm9:valid[:20]"
    assert inputs["evaluator", "training"][0].name == "qm9:evaluator_half[:200]"
    assert inputs["evaluator", "evaluation"][0].name == "qm9:generator_half[:20]"
    assert [inputs[k][1] for k in sorted(inputs)] == [200, 20, 20, 200]
    digests = {dataset.digest for dataset, _ in inputs.values()}
    assert len(digests) == 4  # four different sets of molecules, four digests

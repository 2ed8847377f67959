"""train-score and sample end to end on a tiny config, logged to a real SQLite MLflow store."""

import json

import mlflow
import pytest

from molguide.cli import main


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_train_then_sample_through_the_cli(qm9, reference_smiles, tmp_path, tracking, capsys):
    common = [
        "--set", f"output_dir={tmp_path / 'run'}",
        "--set", "data.max_molecules=256",
        "--set", "model.backbone_kwargs={hidden: 16, num_layers: 2}",
    ]  # fmt: skip
    train = ["run", "train-score", *common, "--set", "train.steps=12", "--set", "train.log_every=4",
             "--set", "train.checkpoint_every=6", "--set", "train.batch_size=16"]  # fmt: skip
    assert main(train) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 12 and summary["train_steps_per_s"] > 0
    # Running again resumes from the checkpoint: nothing left to do at 12 of 12 steps.
    assert main(train) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 12

    sample = ["run", "sample", *common, "--set", "sample.n_samples=6", "--set", "sample.steps=[4]",
              "--set", "sample.batch_size=3"]  # fmt: skip
    assert main(sample) == 0
    result = json.loads(capsys.readouterr().out)
    metrics = result["results"]["ancestral4"]
    assert result["trained_steps"] == 12
    assert 0.0 <= metrics["validity"] <= 1.0 and metrics["sample_s_per_molecule"] > 0
    assert 0.0 <= metrics["validity_strict"] <= 1.0

    mlflow.set_tracking_uri(tracking)
    runs = mlflow.search_runs(experiment_names=["molguide-score"], output_format="list")
    by_name = {r.info.run_name: r for r in runs}
    train_run = by_name["molguide-train"]
    assert train_run.info.status == "FINISHED"
    client = mlflow.MlflowClient()
    losses = client.get_metric_history(train_run.info.run_id, "loss")
    assert [m.step for m in losses][:3] == [1, 2, 3] and len(losses) == 12  # two runs, second empty
    assert "molguide.git_commit" in train_run.data.tags
    child = by_name["molguide-ancestral4"]
    for key in ("validity", "validity_strict", "mol_stability", "sample_failures", "sample_s_per_molecule"):
        assert key in child.data.metrics
    # A 12-step model may lose samples (they explode); lost ones count as invalid.
    lost = child.data.metrics["sample_failures"]
    assert 0 <= lost <= 6 and child.data.metrics["validity"] <= (6 - lost) / 6
    assert child.data.metrics["validity_strict"] <= (6 - lost) / 6
    if lost < 6:
        assert "atom_stability" in child.data.metrics
    artifacts = [a.path for a in client.list_artifacts(child.info.run_id, "samples")]
    assert artifacts == ["samples/samples_ancestral4.csv", "samples/samples_ancestral4.sdf"]


def test_bad_backbone_kwargs_are_one_clear_error(tmp_path, tracking, capsys):
    code = main(["run", "train-score", "--set", f"output_dir={tmp_path}", "--set",
                 "model.backbone_kwargs={hiden: 3}", "--set", "data.max_molecules=10"])  # fmt: skip
    assert code == 2
    assert "model.backbone_kwargs" in capsys.readouterr().err


def test_a_bond_head_trains_through_the_cli_and_its_exported_model_returns_its_bonds(
    qm9, tmp_path, tracking, capsys
):
    import molguide

    run = tmp_path / "bonds"
    train = ["run", "train-score", "--set", f"output_dir={run}", "--set", "data.max_molecules=64",
             "--set", "model.backbone_kwargs={hidden: 16, num_layers: 2, coords_range: 3.75}",
             "--set", "model.parameterisation=x0", "--set", "model.bond_head=true",
             "--set", "train.steps=6", "--set", "train.batch_size=16"]  # fmt: skip
    assert main(train) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 6
    # The reward model fine-tunes the base's score; it needs no bond head (nor bond labels).
    reward = [*train[:-4], "--set", "reward.train.steps=2", "--set", "reward.train.batch_size=8"]
    assert main(["run", "train-reward", *reward[2:]]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    assert main(["export", str(run / "score" / "last.pt"), str(tmp_path / "model")]) == 0
    capsys.readouterr()
    designer = molguide.load(str(tmp_path / "model"))
    assert designer.run.network("score").bond_head is not None
    mols = designer.generate(4, steps=5, seed=0)
    assert "validity_strict_predicted_bonds" in designer.last_metrics
    assert {m.GetProp("bonds") for m in mols} == {"predicted"}
    molguide.write_sdf(mols, tmp_path / "out.sdf")
    assert "valid_strict_predicted_bonds" in (tmp_path / "out.sdf").read_text()
    # A bond head on an eps network is refused before any training, naming the key.
    bad = [*train[:-4], "--set", "model.parameterisation=eps", "--set", "output_dir=" + str(tmp_path / "b")]
    assert main(bad) == 2
    assert "bond_head" in capsys.readouterr().err


def test_a_wider_deeper_run_starts_from_a_smaller_runs_weights(qm9, tmp_path, tracking, capsys, caplog):
    caplog.set_level("INFO")
    """train.init_from: the grown network computes what the small one did (step 0), records
    where it came from, and a resumed run ignores init_from (its own checkpoint wins)."""
    import torch

    from molguide.data.geometry import remove_mean
    from molguide.data.graphs import fully_connected_edges
    from molguide.storage.checkpoints import load_checkpoint
    from molguide.storage.trained_run import read_network

    base = ["--set", "data.max_molecules=128", "--set", "model.parameterisation=x0",
            "--set", "model.self_condition=true", "--set", "train.batch_size=16"]  # fmt: skip
    small_dir, big_dir = tmp_path / "small", tmp_path / "big"
    small = ["run", "train-score", *base, "--set", f"output_dir={small_dir}", "--set", "train.steps=6",
             "--set", "model.backbone_kwargs={hidden: 16, num_layers: 2, coords_range: 5.0}"]  # fmt: skip
    assert main(small) == 0
    capsys.readouterr()
    big = ["run", "train-score", *base, "--set", f"output_dir={big_dir}", "--set", "train.steps=1",
           "--set", "train.lr=1.0e-12", "--set", f"train.init_from={small_dir / 'score' / 'last.pt'}",
           "--set", "model.backbone_kwargs={hidden: 24, num_layers: 3, coords_range: 5.0}"]  # fmt: skip
    assert main(big) == 0
    capsys.readouterr()
    state = load_checkpoint(big_dir / "score" / "last.pt")
    assert state["warm_start"]["steps"] == 6 and state["warm_start"]["cpu_seconds"] > 0
    assert state["warm_start"]["model_config"]["backbone_kwargs"]["hidden"] == 16
    # One step at a negligible learning rate: the grown EMA network still computes the small one's function.
    small_net = read_network(small_dir / "score").network
    big_net = read_network(big_dir / "score").network
    assert big_net.config["backbone_kwargs"]["hidden"] == 24
    g = torch.Generator().manual_seed(0)
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([5, 7]))
    x = remove_mean(torch.randn(12, 3, generator=g), batch)
    h, t = torch.randn(12, 5, generator=g), torch.tensor([0.3, 0.7])
    edges = fully_connected_edges(batch)
    with torch.no_grad():
        for a, b in zip(big_net(x, h, t, batch, edges), small_net(x, h, t, batch, edges)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # Again with more steps: it resumes its own checkpoint, not the small run's weights.
    again = [a.replace("train.steps=1", "train.steps=2") for a in big]
    assert main(again) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    assert "resuming" in caplog.text and "starting from the weights" not in caplog.text.split("resuming")[-1]

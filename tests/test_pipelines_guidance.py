"""End to end on a tiny config: every guidance pipeline into a SQLite MLflow store."""

from __future__ import annotations

import math

import pytest

from molguide.runs.config import load_config

TINY = [
    "data.max_molecules=400",
    "model.backbone_kwargs={hidden: 16, num_layers: 2}",
    "train.steps=30",
    "train.batch_size=32",
    "train.log_every=10",
    "classifier.backbone_kwargs={hidden: 16, num_layers: 2}",
    "classifier.train={steps: 30, batch_size: 32, lr: 0.001, log_every: 10}",
    "classifier.holdout=40",
    "evaluator.backbone_kwargs={hidden: 16, num_layers: 2}",
    "evaluator.train={steps: 30, batch_size: 32, lr: 0.001, log_every: 10}",
    "evaluator.holdout=60",
    "reward.train={steps: 10, batch_size: 32, log_every: 5}",
    "cfg.train={steps: 10, batch_size: 32, log_every: 5}",
    "guide.diagnostics_molecules=20",
    "guide.n_samples=8",
    "guide.steps=40",
    "guide.batch_size=8",
    "guide.xtb=true",
]


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_guidance_pipelines_run_end_to_end_and_log_the_diagnostics(tmp_path, mlflow_store, qm9):
    import mlflow

    from molguide.runs.guide import guided_sample
    from molguide.runs.train import (
        train_cfg,
        train_classifier,
        train_evaluator,
        train_reward,
        train_score,
    )

    config = load_config(None, [f"output_dir={tmp_path / 'runs'}", *TINY])
    train_score(config, progress=False)
    clf = train_classifier(config, progress=False)
    assert len(clf["noise_levels"]) == 10
    assert all(
        0 < row["classifier_ce"] < 5 and 0 <= row["classifier_ece"] <= 1 for row in clf["noise_levels"]
    )
    ev = train_evaluator(config, progress=False)
    assert ev["evaluator_mae"] > 0 and ev["naive_mae"] > ev["atoms_mae"] * 0.5
    rw = train_reward(config, progress=False)
    assert 0 < rw["reward_weight_ess_fraction"] <= 1
    train_cfg(config, progress=False)
    out = guided_sample(config, progress=False)
    assert set(out["results"]) == {"unguided", "classifier_w1", "reward_w1", "cfg_unconditional", "cfg_w0"}

    client = mlflow.MlflowClient(mlflow_store)
    parent = client.get_run(out["run_id"])
    history = client.get_metric_history(parent.info.run_id, "classifier_ce")
    assert sorted(m.step for m in history) == list(range(10))
    assert parent.data.tags["molguide.guidance_mse_kind"] == "cfg"  # a conditional model exists
    assert len(client.get_metric_history(parent.info.run_id, "guidance_mse_est")) == 10
    assert parent.data.metrics["reward_weight_ess"] == pytest.approx(rw["reward_weight_ess"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_name = {r.info.run_name: r.data.metrics for r in children}
    assert set(by_name) == {"unguided", "classifier_w1", "reward_w1", "cfg_unconditional", "cfg_w0"}
    for name, metrics in by_name.items():
        assert 0 <= metrics["validity"] <= 1 and 0 <= metrics["target_hit_rate"] <= 1, name
        assert 0 <= metrics["validity_strict"] <= 1, name
        assert metrics["sample_s_per_molecule"] > 0
    for name in ("classifier_w1", "reward_w1", "cfg_w0"):
        m = by_name[name]
        assert (
            m["target_hit_rate_gain_ci_low"] <= m["target_hit_rate_gain"] <= m["target_hit_rate_gain_ci_high"]
        )
        assert m["guided_step_cost_ratio"] > 0 and "target_hit_rate_unguided" in m
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/property_histograms.png", "plots/improvement_vs_weight.png"} <= arts
    assert math.isfinite(out["results"]["unguided"]["sample_s_per_molecule"])


def test_guide_without_a_classifier_checkpoint_names_the_file(tmp_path, mlflow_store):
    from molguide.runs.guide import guided_sample
    from molguide.storage.checkpoints import CheckpointError

    config = load_config(None, [f"output_dir={tmp_path / 'nothing'}"])
    with pytest.raises(CheckpointError, match="nothing: no such folder"):
        guided_sample(config, progress=False)


def test_a_longer_run_resumes_a_finished_evaluator_exactly(tmp_path, mlflow_store, qm9):
    """A finished run's checkpoint keeps the raw weights, so extending it equals training longer at once."""
    import torch

    from molguide.runs.train import train_evaluator
    from molguide.storage.checkpoints import load_checkpoint

    tiny = [
        "data.max_molecules=200",
        "evaluator.backbone_kwargs={hidden: 16, num_layers: 2}",
        "evaluator.holdout=20",
        "evaluator.train.batch_size=16",
        "evaluator.train.log_every=5",
    ]
    resumed = [f"output_dir={tmp_path / 'resumed'}", *tiny]
    train_evaluator(load_config(None, [*resumed, "evaluator.train.steps=10"]), progress=False)
    train_evaluator(load_config(None, [*resumed, "evaluator.train.steps=20"]), progress=False)
    once = [f"output_dir={tmp_path / 'once'}", *tiny, "evaluator.train.steps=20"]
    train_evaluator(load_config(None, once), progress=False)
    a = load_checkpoint(tmp_path / "resumed" / "evaluator" / "last.pt")
    b = load_checkpoint(tmp_path / "once" / "evaluator" / "last.pt")
    assert a["step"] == b["step"] == 20
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_residual_reward_and_invariant_classifier_train_and_guide(tmp_path, mlflow_store, qm9):
    """reward.correction trains a correction on the frozen score network (the base's weights
    stay as trained), classifier coordinate_updates: false trains an invariant classifier,
    and both guide, through the pipeline and through molguide.load(run folder)."""
    import torch

    import molguide
    from molguide.runs.guide import guided_sample
    from molguide.runs.train import train_classifier, train_evaluator, train_reward, train_score
    from molguide.storage.checkpoints import load_checkpoint
    from molguide.storage.trained_run import read_network

    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'runs'}",
            *TINY,
            "classifier.backbone_kwargs={hidden: 16, num_layers: 2, coordinate_updates: false}",
            "reward.correction={hidden: 8, num_layers: 2}",
            "reward.train={steps: 20, batch_size: 32, lr: 0.002, log_every: 5}",
            "guide.cfg=0",
        ],
    )
    train_score(config, progress=False)
    train_classifier(config, progress=False)
    train_evaluator(config, progress=False)
    train_reward(config, progress=False)
    runs = tmp_path / "runs"
    reward = read_network(runs / "reward").network
    score = read_network(runs / "score").network
    assert reward.config["correction"] == {"backbone_kwargs": {"hidden": 8, "num_layers": 2}}
    assert reward.has_base(score)  # frozen: the base is still the score network
    trained = load_checkpoint(runs / "reward" / "last.pt")["model"]
    moved = [k for k in trained if k.startswith("correction.") and trained[k].abs().sum() > 0]
    assert any("readout" in k for k in moved)  # the zero-started output layer learned
    clf = read_network(runs / "classifier").network
    assert not any("coord" in name for name, _ in clf.named_parameters())

    out = guided_sample(config, progress=False)
    assert {"unguided", "classifier_w1", "reward_w1"} <= set(out["results"])
    # molguide.load(run folder) rebuilds the residual network on the run's own score network
    # (sampling from a 30-step score model diverges, so the designer's networks are checked).
    designer = molguide.load(str(runs))
    loaded = designer.run.network("reward")
    assert loaded.has_base(designer.pipeline.model)
    torch.testing.assert_close(loaded.state_dict(), reward.state_dict())


@pytest.fixture(scope="module")
def x0_run(tmp_path_factory, qm9):
    """A tiny run with every guidance network (x0 networks: an untrained eps network's first
    steps blow the coordinates up; the reward model fine-tuned gently so its guided samples stay)."""
    from molguide.runs.train import train_cfg, train_classifier, train_network, train_reward, train_score

    folder = tmp_path_factory.mktemp("x0_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        config = load_config(
            None,
            [
                f"output_dir={folder / 'runs'}",
                *TINY,
                "model.parameterisation=x0",
                "reward.train={steps: 10, batch_size: 32, log_every: 5, lr: 0.00001}",
                "regressor.backbone_kwargs={hidden: 16, num_layers: 2}",
                "regressor.train={steps: 30, batch_size: 32, lr: 0.001, log_every: 10}",
                "regressor.holdout=40",
            ],
        )
        for train in (train_score, train_classifier, train_reward, train_cfg):
            train(config, progress=False)
        regressor = train_network("regressor", config, progress=False)
    rows = regressor["noise_levels"]  # its diagnostics per noise level, kept in its record
    assert len(rows) == 10 and all(
        math.isfinite(r["regressor_nll"]) and 0 <= r["regressor_coverage"] <= 1 for r in rows
    )
    return folder / "runs"


def _positions(mols) -> list:
    return [m.GetConformer().GetPositions() for m in mols]


@pytest.mark.parametrize("kind", ["classifier", "reward", "cfg", "density", "energy", "tfg"])
def test_the_designer_generates_with_each_guidance_kind(x0_run, kind):
    """generate(guidance={kind: w}) builds the kind's term from the registry and samples with it:
    the molecules differ from the unguided ones of the same seed and say how they were made."""
    import numpy as np

    import molguide
    from molguide.guidance.kinds import GUIDANCE_KINDS

    assert set(GUIDANCE_KINDS) == {
        "classifier",
        "reward",
        "cfg",
        "density",
        "energy",
        "tfg",
    }  # a new kind: a case here
    designer = molguide.load(str(x0_run))
    assert kind in designer.guidance_kinds
    name = designer.target.name
    target = {name: designer.target.edges[0]} if GUIDANCE_KINDS[kind].takes_values else {name: "high"}
    plain = designer.generate(6, seed=0, steps=20, evaluate=False)
    guided = designer.generate(6, target=target, guidance={kind: 1.5}, seed=0, steps=20, evaluate=False)
    assert len(plain) == len(guided) == 6 and not designer.last_failures
    assert [m.GetNumAtoms() for m in guided] == [m.GetNumAtoms() for m in plain]  # paired sizes
    assert any(not np.allclose(a, b) for a, b in zip(_positions(guided), _positions(plain)))
    label = guided[0].GetProp("molguide_guidance")
    assert label.startswith(
        f"{kind}=1.5; target {name} {'=' if GUIDANCE_KINDS[kind].takes_values else '>='} "
    )


def test_cfg_at_weight_zero_is_plain_conditional_sampling(x0_run):
    """{"cfg": 0} samples the conditional network with the label (not the unguided score model)."""
    import numpy as np

    import molguide

    designer = molguide.load(str(x0_run))
    target = {designer.target.name: "high"}
    plain = designer.generate(4, seed=1, steps=10, evaluate=False)
    conditional = designer.generate(4, target=target, guidance={"cfg": 0.0}, seed=1, steps=10, evaluate=False)
    assert conditional[0].GetProp("molguide_guidance").startswith("cfg=0;")
    assert any(not np.allclose(a, b) for a, b in zip(_positions(conditional), _positions(plain)))


def test_value_kinds_need_a_value_goal_and_a_tolerance_changes_the_density_term(x0_run):
    import numpy as np

    import molguide

    designer = molguide.load(str(x0_run))
    name, value = designer.target.name, designer.target.edges[0]
    with pytest.raises(ValueError, match=f"it aims at a value; {name}'s goal is 'high'"):
        designer.generate(2, target={name: "high"}, guidance={"density": 1.0}, steps=2)
    exact = designer.generate(
        4, target={name: value}, guidance={"density": 1.0}, seed=2, steps=10, evaluate=False
    )
    loose = {name: {"value": value, "tolerance": 1.0}}
    interval = designer.generate(4, target=loose, guidance={"density": 1.0}, seed=2, steps=10, evaluate=False)
    assert interval[0].GetProp("molguide_guidance").endswith(f"= {value:g} +- 1")
    assert any(not np.allclose(a, b) for a, b in zip(_positions(exact), _positions(interval)))


def test_cfg_model_is_fine_tuned_from_the_pretrained_generator(tmp_path, mlflow_store, qm9):
    """With ``model.pretrained``, train-cfg starts from that generator's weights: its
    architecture plus zero context inputs (tests/test_growth.py checks the function)."""
    from molguide.runs.settings import guide_settings
    from molguide.runs.train import train_cfg, train_classifier, train_score
    from molguide.storage.checkpoints import load_checkpoint
    from molguide.storage.trained_run import TrainedRun

    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'runs'}",
            *TINY,
            "model.pretrained=qm9",
            "cfg.train={steps: 3, batch_size: 16, log_every: 1}",
            "guide.cfg=2.0",
        ],
    )
    train_score(config, progress=False)
    train_classifier(config, progress=False)
    train_cfg(config, progress=False)
    state = load_checkpoint(tmp_path / "runs" / "cfg" / "last.pt")
    shipped = TrainedRun.from_pretrained("qm9").network("score").config
    assert state["warm_start"]["source"] == "qm9"
    assert state["model_config"] == {**shipped, "context_dim": 3}
    run = TrainedRun.from_pretrained(tmp_path / "runs")
    names = [s.name for s in guide_settings(config.guide, run)]
    assert "cfg_unconditional" in names and "cfg_w2" in names

"""End to end: a tiny quickstart through the command line into a real SQLite MLflow store,
then the doors users open afterwards: the summary, MLflow, compare, molguide.load, the
README example, and ``run evaluate``."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from molguide.cli import main

ROOT = Path(__file__).resolve().parents[1]

# The quickstart's own generator is the shipped one (model.pretrained: qm9); the tiny
# score model below is for the tests that train one from scratch (FROM_SCRATCH).
FROM_SCRATCH = [
    "model.pretrained=null",
    "model.backbone_kwargs={hidden: 16, num_layers: 2}",
    "train.steps=40",
    "train.batch_size=32",
    "train.log_every=10",
]
TINY_QUICKSTART = [
    "data.max_molecules=400",
    "classifier.backbone_kwargs={hidden: 16, num_layers: 2}",
    "classifier.train.steps=40",
    "classifier.train.batch_size=32",
    "classifier.holdout=40",
    "evaluator.backbone_kwargs={hidden: 16, num_layers: 2}",
    "evaluator.train.steps=40",
    "evaluator.train.batch_size=32",
    "evaluator.holdout=60",
    "reward.train.steps=10",
    "reward.train.batch_size=32",
    "guide.diagnostics_molecules=20",
    "guide.n_samples=12",
    "guide.steps=30",
    "guide.batch_size=12",
]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def run_tiny_quickstart(folder: Path) -> tuple[str, str]:
    """The tiny quickstart into ``folder`` (MLflow store: ``$MLFLOW_TRACKING_URI``);
    returns its parent run id and what it printed."""
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["-q", "run", "quickstart", "--no-progress", *_sets([f"output_dir={folder}", *TINY_QUICKSTART])]
        )
    assert code == 0
    text = out.getvalue()
    return text.split("MLflow run ")[1].split(";")[0], text


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory, molguide_cache):
    """Run the tiny quickstart once for this module; yields (run folder, tracking URI, run id, stdout)."""
    tmp = tmp_path_factory.mktemp("quickstart")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:  # the module's store, restored afterwards
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        run_id, text = run_tiny_quickstart(tmp / "runs")
        yield tmp / "runs", uri, run_id, text


def test_quickstart_prints_the_summary_table_and_the_ui_command(quickstart_run):
    _, uri, _, text = quickstart_run
    for heading in (
        "trained",
        "train-score",
        "improvement",
        "classifier_w2",
        "reward_w2",
        "validity",
        "strict val",
        "classifier_ce",
    ):
        assert heading in text
    assert "mlflow ui --backend-store-uri sqlite:///" in text and uri.split("///")[1] in text
    # MLflow 3.17 opens experiments in its GenAI view unless the link asks for the classic one.
    link = text.split("then its run (classic model-training view):\n  ")[1].split()[0]
    assert link.startswith("http://127.0.0.1:5000/#/experiments/") and link.endswith(
        "?workflowType=machine_learning"
    )


def test_quickstart_describes_its_run_and_registers_its_networks(quickstart_run):
    import mlflow

    folder, uri, run_id, _ = quickstart_run
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(run_id)
    description = parent.data.tags["mlflow.note.content"]
    assert description.startswith("**molguide quickstart") and "classifier_w2" in description
    assert (folder / "summary.txt").read_text().strip() in description
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    names = {m.name for m in client.search_registered_models()}
    assert {
        "molguide-quickstart-score",
        "molguide-quickstart-classifier",
        "molguide-quickstart-evaluator",
    } <= names
    # One page a person reads: the table, the loss curves and the guidance plots, the command.
    report = (folder / "report.html").read_text()
    assert "molguide quickstart: quickstart" in report and "<script" not in report
    assert report.count("data:image/png;base64,") == 5  # loss curves + 4 guidance plots
    assert f"molguide run quickstart -c {folder / 'resolved_config.yaml'}" in report
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert "report.html" in artifacts


def test_quickstart_logs_metrics_plots_models_and_nested_steps(quickstart_run):
    import mlflow

    _, uri, run_id, _ = quickstart_run
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert client.get_experiment(parent.info.experiment_id).name == "molguide-quickstart"
    tags = parent.data.tags
    assert tags["molguide.dataset"] == "qm9" and tags["molguide.split_half"] == "generator_half"
    assert "molguide.git_commit" in tags
    # Every metric named by the setting it comes from; the headline setting is a tag.
    assert tags["molguide.headline_setting"] == "classifier_w2"
    metrics = parent.data.metrics
    assert not {"property_improvement", "validity", "target_hit_rate"} & set(metrics)
    m = {k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith("classifier_w2.")}
    assert m["property_improvement_ci_low"] <= m["property_improvement"] <= m["property_improvement_ci_high"]
    for key in (
        "target_hit_rate",
        "target_hit_rate_unguided",
        "validity",
        "validity_strict",
        "atom_stability",
    ):
        assert 0 <= m[key] <= 1, key
    assert m["inv_prob_median"] >= 1
    assert 0 <= metrics["unguided.validity"] <= 1 and "reward_w2.reward_improvement" in metrics
    ce = client.get_metric_history(run_id, "classifier_ce")
    assert sorted(x.step for x in ce) == list(range(10)) and all(0 < x.value < 10 for x in ce)
    assert len(client.get_metric_history(run_id, "guidance_mse_est")) == 10
    root_artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "summary.txt", "summary.json", "plots"} <= root_artifacts
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    for png in ("noise_levels", "property_histograms", "improvement_vs_weight", "sample_molecules"):
        assert f"plots/{png}.png" in plots
    config_text = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    assert "max_molecules: 400" in config_text  # the resolved config, overrides applied

    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    by_pipeline = {r.data.tags["molguide.pipeline"]: r for r in children}
    assert set(by_pipeline) == {"train-score", "train-classifier", "train-evaluator", "train-reward", "guide"}
    for name in ("train-score", "train-classifier", "train-evaluator", "train-reward"):
        run = by_pipeline[name]
        if name != "train-score":
            assert run.data.metrics["train_steps_per_s"] > 0
        assert any(a.path == "trained_run" for a in client.list_artifacts(run.info.run_id)), name
    shipped = by_pipeline["train-score"].data
    assert shipped.tags["molguide.pretrained"] == "qm9" and int(shipped.params["pretrained.steps"]) > 0
    assert shipped.tags["molguide.split_half"] == "generator_half"
    guide = by_pipeline["guide"].info.run_id
    settings = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{guide}'")
    assert {r.info.run_name for r in settings} == {"unguided", "classifier_w2", "reward_w2"}
    name = settings[0].info.run_name
    files = {a.path for a in client.list_artifacts(settings[0].info.run_id, "samples")}
    assert files == {f"samples/{name}.sdf", f"samples/{name}.csv"}  # the molecules and their table


def test_load_a_run_id_or_folder_and_generate_rdkit_molecules(quickstart_run, tmp_path):
    import molguide

    folder, _, run_id, _ = quickstart_run
    for source in (f"runs:/{run_id}", str(folder)):
        designer = molguide.load(source)
        assert designer.target.name == "gap_eV" and designer.guidance_kinds == ["classifier", "reward"]
    designer = molguide.load(f"runs:/{run_id}")
    plain = designer.generate(6, seed=3, steps=20)
    guided = designer.generate(6, target={"gap_eV": "high"}, guidance={"classifier": 2.0}, seed=3, steps=20)
    assert 0 < len(plain) <= 6 and 0 < len(guided) <= 6
    mol = guided[0]
    assert mol.GetNumConformers() == 1 and mol.GetConformer().Is3D()
    assert (
        mol.HasProp("evaluator_gap_eV")
        and mol.HasProp("valid")
        and mol.HasProp("valid_strict")
        and "classifier=2" in mol.GetProp("molguide_guidance")
    )
    strict = [int(m.GetProp("valid_strict")) for m in guided]
    assert designer.last_metrics["validity_strict"] == pytest.approx(sum(strict) / len(guided))
    again = designer.generate(6, seed=3, steps=20)  # same seed, same molecules
    assert [m.GetNumAtoms() for m in again] == [m.GetNumAtoms() for m in plain]
    assert molguide.write_sdf(guided, tmp_path / "g.sdf") == len(guided)
    report = molguide.evaluate(guided, novelty=False)
    assert report["n_evaluated"] == len(guided) and 0 <= report["validity"] <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": {"mu_D": "high"}}, "trained for 'gap_eV'"),
        ({"guidance": {"clasifier": 1.0}}, "unknown term"),
        ({"guidance": {"cfg": 1.0}}, "has no cfg model"),
        ({"target": {"gap_eV": "low"}, "guidance": {"reward": 1.0}}, "the target asks the opposite"),
        ({"target": {"gap_eV": {"bin": 7}}}, "bin 7 is outside 0..2"),
        ({"target": {"gap_eV": "high", "mu_D": "low"}}, "trained for 'gap_eV'"),
    ],
)
def test_generate_rejects_bad_arguments_with_a_clear_message(quickstart_run, kwargs, message):
    import molguide

    designer = molguide.load(str(quickstart_run[0]))
    with pytest.raises(ValueError, match=message):
        designer.generate(2, steps=5, **kwargs)


def test_numpy_weights_are_weights(quickstart_run):
    import numpy as np

    import molguide

    designer = molguide.load(str(quickstart_run[0]))
    weights = {"classifier": np.float32(2.0), "reward": np.float64(1.0)}
    mols = designer.generate(2, target={"gap_eV": "high"}, guidance=weights, steps=5, evaluate=False)
    assert mols and "classifier=2, reward=1" in mols[0].GetProp("molguide_guidance")


def test_readme_example_runs_on_the_quickstart_output(quickstart_run, tmp_path):
    folder, uri, run_id, _ = quickstart_run
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "design_with_python.py"), f"runs:/{run_id}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "guided:" in out.stdout and "unguided:" in out.stdout and "strict validity" in out.stdout
    assert (tmp_path / "guided.sdf").stat().st_size > 0


def test_compare_lists_the_quickstart_run_as_a_table_and_as_csv(quickstart_run, capsys):
    _, _, run_id, _ = quickstart_run
    assert main(["compare", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    mine = [r for r in rows if r["run_id"] == run_id]
    assert len(mine) == 1 and mine[0]["experiment"] == "molguide-quickstart"
    assert float(mine[0]["property_improvement_ci_low"]) <= float(mine[0]["property_improvement"])
    assert 0 <= float(mine[0]["validity_strict"]) <= 1  # logged beside validity
    # The parent's row is its headline setting's, and says so.
    import mlflow

    logged = mlflow.MlflowClient(quickstart_run[1]).get_run(run_id).data.metrics
    assert mine[0]["setting"] == "classifier_w2"
    assert float(mine[0]["validity"]) == pytest.approx(logged["classifier_w2.validity"])
    assert float(mine[0]["property_improvement"]) == pytest.approx(
        logged["classifier_w2.property_improvement"]
    )
    assert main(["compare", "--experiment", "molguide-quickstart"]) == 0
    table = capsys.readouterr().out
    assert run_id[:8] in table and "property_improvement" in table and "validity_strict" in table
    assert main(["compare", "--experiment", "no-such-experiment"]) == 2
    assert "no experiment 'no-such-experiment'" in capsys.readouterr().err


def test_run_evaluate_logs_a_molecule_file(quickstart_run, capsys):
    import mlflow

    folder, uri, _, _ = quickstart_run
    sdf = folder / "guided" / "unguided.sdf"
    args = ["run", "evaluate", "--json", "--no-progress", "--set", f"output_dir={folder}"]
    assert main([*args, "--set", f"evaluate.file={sdf}", "--set", "evaluate.xtb=false"]) == 0

    result = json.loads(capsys.readouterr().out)
    assert result["n_input"] == sdf.read_text().count("$$$$") > 0
    assert 0 <= result["validity"] <= 1 and "evaluator_gap_eV_mean" in result
    run = mlflow.MlflowClient(uri).get_run(result["run_id"])
    assert run.data.metrics["n_evaluated"] == result["n_evaluated"]
    assert main([*args]) == 2
    assert "evaluate.file" in capsys.readouterr().err


def test_toy_pipeline_prints_its_checks_and_logs_the_theory_metrics(tmp_path, monkeypatch, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["-q", "run", "toy", "--no-progress", "--set", f"output_dir={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    assert "classifier guidance, exact classifier, w = 1" in out and "inv_prob exact" in out
    run_id = out.split("MLflow run ")[1].split(";")[0]
    client = mlflow.MlflowClient(uri)
    counts = {
        name: len(client.get_metric_history(run_id, name))
        for name in ("guidance_mse_exact", "guidance_mse_est", "excess_ce_exact", "classifier_ce")
    }
    assert all(n >= 5 for n in counts.values()), counts
    inv = sorted(client.get_metric_history(run_id, "inv_prob_mean"), key=lambda m: m.step)
    assert len(inv) == 5 and inv[0].value > inv[-1].value  # E[1/p] falls as the CFG weight grows
    reward = sorted(client.get_metric_history(run_id, "reward_improvement"), key=lambda m: m.step)
    assert [round(m.value, 6) for m in reward][0] == 0 and reward[-1].value > reward[1].value > 0
    assert "plots/toy_theory.png" in {a.path for a in client.list_artifacts(run_id, "plots")}


def test_full_runs_every_step_including_cfg_and_unconditional_sampling(tmp_path, monkeypatch, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    extra = ["cfg.enabled=true", "cfg.train.steps=10", "cfg.train.batch_size=32"]
    extra += ["sample.n_samples=6", "sample.steps=[20]", "sample.batch_size=6"]
    sets = _sets([f"output_dir={tmp_path / 'runs'}", *TINY_QUICKSTART, *FROM_SCRATCH, *extra])
    assert main(["-q", "run", "full", "--no-progress", "--json", *sets]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["steps"]) == [
        "train-score",
        "train-classifier",
        "train-evaluator",
        "train-reward",
        "train-cfg",
        "sample",
        "guide",
    ]
    assert set(out["steps"]["guide"]["results"]) == {
        "unguided",
        "classifier_w1",
        "reward_w1",
        "cfg_unconditional",
        "cfg_w0",
    }
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(out["run_id"])
    assert client.get_experiment(parent.info.experiment_id).name == "molguide-full"
    guide_id = out["steps"]["guide"]["run_id"]
    assert client.get_run(guide_id).data.tags["molguide.guidance_mse_kind"] == "cfg"  # CFG-based estimate
    assert client.get_run(guide_id).data.tags["mlflow.parentRunId"] == out["run_id"]
    assert len(client.get_metric_history(out["run_id"], "guidance_mse_est")) == 10
    assert "ancestral20" in out["steps"]["sample"]["results"]

"""Goals per property: parsing, the classes a goal accepts, class-set guidance against its
closed form, improvements against unguided molecules, and generation towards two
properties at once from Python and the command line (tiny networks trained here)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from molguide.guidance.goals import Goal, parse_goal_text, parse_goals
from molguide.guidance.targets import PropertyTarget

BINNING = PropertyTarget("gap_eV", n_bins=4).fit(np.arange(1.0, 9.0))  # edges 2.75, 4.5, 6.25


# ----------------------------------------------------------------------------- parsing


def test_every_goal_form_parses_and_a_number_is_always_a_value():
    goals = parse_goals(
        {
            "gap_eV": "high",
            "mu_D": "low",
            "alpha_bohr3": 2,  # a whole number is a value, not bin 2
            "homo_eV": {"value": -6.5, "tolerance": 0.2, "weight": 2, "t_max": 0.8},
            "lumo_eV": {"bin": 3},
            "cv_calmolK": {"goal": "high", "t_min": 0.1},
        }
    )
    assert [g.kind for g in goals] == ["high", "low", "value", "value", "bin", "high"]
    assert goals[2].value == 2.0 and goals[2].bin is None
    assert (goals[3].value, goals[3].tolerance, goals[3].weight, goals[3].t_max) == (-6.5, 0.2, 2.0, 0.8)
    assert goals[4].bin == 3 and goals[5].t_min == 0.1
    assert [g.direction for g in goals] == [1.0, -1.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"gap_eV": True}, "give 'high', 'low', a value"),
        ({"gap_eV": "higher"}, "give 'high', 'low', a value"),
        ({"gap_eV": float("nan")}, "give 'high', 'low', a value"),
        ({"gap_eV": {"bin": 1.5}}, "a bin is a whole number >= 0, got 1.5"),
        ({"gap_eV": {"bin": 1, "value": 2.0}}, "give one of 'goal', 'value' or 'bin'"),
        ({"gap_eV": {"value": 2.0, "tolerance": -1}}, "tolerance must be > 0"),
        ({"gap_eV": {"value": 2.0, "tolerance": 0}}, "tolerance must be > 0, got 0"),
        ({"gap_eV": {"goal": "high", "tolerance": 1}}, "a tolerance belongs to a value goal"),
        ({"gap_eV": {"goal": "high", "weight": "2"}}, "weight must be a finite number"),
        ({"gap_eV": {"goal": "high", "t_min": 0.9, "t_max": 0.1}}, "t_min 0.9 is above t_max 0.1"),
        ({"gap_eV": {"goal": "high", "windw": 1}}, "unknown key 'windw'"),
        ({}, "give goals by property"),
        (["gap_eV"], "give goals by property"),
    ],
)
def test_bad_goals_name_the_property_and_what_is_wrong(target, message):
    with pytest.raises(ValueError, match=message):
        parse_goals(target)


def test_command_line_goals_parse_into_the_python_forms():
    assert parse_goal_text("gap_eV=high") == ("gap_eV", {"goal": "high"})
    with_tolerance = {"value": 2.5, "tolerance": 0.3, "weight": 2.0}
    assert parse_goal_text("mu_D=2.5+-0.3,weight=2") == ("mu_D", with_tolerance)
    assert parse_goal_text("lumo_eV=bin:3,t_max=0.8") == ("lumo_eV", {"bin": 3, "t_max": 0.8})
    assert parse_goal_text("homo_eV=-6.5") == ("homo_eV", {"value": -6.5})
    for bad, message in (
        ("gap_eV", "give PROPERTY=GOAL"),
        ("mu_D=abc", "give high, low, a value .* got 'abc'"),
        ("mu_D=1+-x", "'x' is not a float"),
        ("mu_D=low,colour=2", "options are weight="),
    ):
        with pytest.raises(ValueError, match=message):
            parse_goal_text(bad)


# ----------------------------------------------------------------------------- classes and hits


def test_a_goal_accepts_the_bins_it_names_and_a_value_the_bins_its_tolerance_meets():
    assert Goal("gap_eV", "high").classes(BINNING) == [3]
    assert Goal("gap_eV", "low").classes(BINNING) == [0]
    assert Goal("gap_eV", "bin", bin=2).classes(BINNING) == [2]
    assert Goal("gap_eV", "value", value=5.0).classes(BINNING) == [2]
    assert Goal("gap_eV", "value", value=4.4, tolerance=0.5).classes(BINNING) == [1, 2]
    assert Goal("gap_eV", "value", value=5.0, tolerance=10).classes(BINNING) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="bin 4 is outside 0..3"):
        Goal("gap_eV", "bin", bin=4).classes(BINNING)
    values = np.array([1.0, 3.0, 4.6, 7.0, np.nan])
    np.testing.assert_array_equal(Goal("gap_eV", "high").hits(values, BINNING), [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(Goal("gap_eV", "low").hits(values, BINNING), [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(
        Goal("gap_eV", "value", value=4.4, tolerance=0.3).hits(values, None), [0, 0, 1, 0, 0]
    )
    assert Goal("gap_eV", "high").describe(BINNING) == "gap_eV >= 6.25"
    assert Goal("gap_eV", "bin", bin=1).describe(BINNING) == "gap_eV in [2.75, 4.5)"
    weighted = Goal("gap_eV", "value", value=4.4, tolerance=0.3, weight=2)
    assert weighted.describe() == "gap_eV = 4.4 +- 0.3 (weight 2)"


class _LinearClassifier(torch.nn.Module):
    """logits of a molecule = sum over its atoms of zh @ A (so d logit_k / d zh_i = A[:, k])."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = a

    def forward(self, zx, zh, t, batch, num_graphs, edge_index):
        per_atom = zh @ self.a + 0 * zx.sum(-1, keepdim=True)  # positions unused, still in the graph
        return torch.zeros(num_graphs, self.a.shape[1], dtype=zh.dtype).index_add(0, batch, per_atom)


def test_class_set_guidance_is_the_gradient_of_the_log_probability_of_the_set():
    """grad_zh log sum_{k in S} p_k = sum_{k in S} (p_k / p_S) A_k - sum_k p_k A_k, in float64."""
    from molguide.diffusion.sampling import GuidanceState
    from molguide.guidance.terms import classifier_log_prob_gradient

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1])
    zx, zh = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    state = GuidanceState(zx=zx, zh=zh, t=torch.full((2,), 0.5, dtype=torch.float64), batch=batch,
                          num_graphs=2, edge_index=torch.zeros(2, 0, dtype=torch.long),
                          score_x=torch.zeros_like(zx), score_h=torch.zeros_like(zh))  # fmt: skip
    mask = torch.tensor([False, True, True, False])
    _, gh = classifier_log_prob_gradient(_LinearClassifier(a), state, mask)
    p = torch.softmax(torch.zeros(2, 4, dtype=torch.float64).index_add(0, batch, zh @ a), -1)
    in_set = p * mask
    expected_per_mol = (in_set / in_set.sum(-1, keepdim=True)) @ a.T - p @ a.T
    torch.testing.assert_close(gh, expected_per_mol[batch], rtol=1e-12, atol=1e-12)
    _, single = classifier_log_prob_gradient(_LinearClassifier(a), state, 2)
    one_class = torch.tensor([False, False, True, False])
    _, one_class_mask = classifier_log_prob_gradient(_LinearClassifier(a), state, one_class)
    torch.testing.assert_close(single, one_class_mask, rtol=1e-12, atol=1e-12)


def test_improvements_per_goal_with_intervals_and_joint_hit_rates():
    from molguide.diagnostics.goals import goal_improvements

    rng = np.random.default_rng(0)
    unguided = {"gap_eV": rng.normal(5, 1, 400), "mu_D": rng.normal(3, 1, 400)}
    guided = {"gap_eV": unguided["gap_eV"] + 1.0, "mu_D": unguided["mu_D"] * 0 + 2.0}
    goals = [Goal("gap_eV", "high"), Goal("mu_D", "value", value=2.0, tolerance=0.5)]
    m = goal_improvements(goals, guided, unguided, {"gap_eV": BINNING, "mu_D": None})
    assert m["gap_eV_improvement"] == pytest.approx(1.0)
    assert m["gap_eV_improvement_ci_low"] < 1.0 < m["gap_eV_improvement_ci_high"]
    closer = np.abs(unguided["mu_D"] - 2.0).mean()  # guided molecules sit on the value
    assert m["mu_D_improvement"] == pytest.approx(closer)
    assert m["mu_D_hit_rate"] == 1.0 and m["mu_D_hit_rate_unguided"] < 0.5
    joint = (BINNING.labels(guided["gap_eV"]) == 3).mean()
    assert m["joint_hit_rate"] == pytest.approx(joint) and m["joint_hit_rate_unguided"] < joint


# ----------------------------------------------------------------------------- two properties at once

TINY = [
    "data.max_molecules=300",
    "model.pretrained=qm9",  # the shipped generator: a tiny one's samples diverge
    "classifier.backbone_kwargs={hidden: 16, num_layers: 2}",
    "classifier.train={steps: 20, batch_size: 32, lr: 0.001, log_every: 10}",
    "classifier.holdout=40",
    "evaluator.backbone_kwargs={hidden: 16, num_layers: 2}",
    "evaluator.train={steps: 20, batch_size: 32, lr: 0.001, log_every: 10}",
    "evaluator.holdout=40",
]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, qm9):
    """On the shipped generator: a run with a gap classifier and evaluator, another with a
    4-bin mu classifier and evaluator (tiny networks)."""
    from molguide.runs.config import load_config
    from molguide.runs.train import train_classifier, train_evaluator, train_score

    folder = tmp_path_factory.mktemp("two_targets")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        gap = load_config(None, [f"output_dir={folder / 'gap'}", *TINY])
        train_score(gap, progress=False)
        train_classifier(gap, progress=False)
        train_evaluator(gap, progress=False)
        shutil.copytree(folder / "gap" / "score", folder / "mu" / "score")
        mu_target = ["target.property=mu_D", "target.n_bins=4"]
        mu = load_config(None, [f"output_dir={folder / 'mu'}", *TINY, *mu_target])
        train_classifier(mu, progress=False)
        train_evaluator(mu, progress=False)
    return folder / "gap", folder / "mu"


def test_generate_towards_two_properties_from_python(two_runs, tmp_path):
    import molguide
    from molguide.storage.trained_run import TrainedRun

    gap, mu = two_runs
    designer = molguide.load(str(gap), guidance=[str(mu)])
    assert designer.properties == ["gap_eV", "mu_D"]
    assert designer.run.has("classifier", "mu_D") and designer.run.binning("mu_D").n_bins == 4
    target = {"gap_eV": "high", "mu_D": {"goal": "low", "weight": 2.0}}
    plain = designer.generate(8, seed=0, steps=30, evaluate=False)
    both = designer.generate(8, target=target, guidance={"classifier": 1.0}, seed=0, steps=30, evaluate=False)
    assert not designer.last_failures
    assert [m.GetNumAtoms() for m in both] == [m.GetNumAtoms() for m in plain]
    moved = [not np.allclose(a.GetConformer().GetPositions(), b.GetConformer().GetPositions())
             for a, b in zip(both, plain)]  # fmt: skip
    assert any(moved)
    label = both[0].GetProp("molguide_guidance")
    mu_edge = designer.run.binning("mu_D").edges[0]
    gap_edge = designer.target.edges[-1]
    assert label == f"classifier=1; target gap_eV >= {gap_edge:.4g}, mu_D < {mu_edge:.4g} (weight 2)"
    assert both[0].HasProp("evaluator_gap_eV") and both[0].HasProp("evaluator_mu_D")
    m = designer.last_metrics
    assert {"gap_eV_hit_rate", "mu_D_hit_rate", "joint_hit_rate"} <= set(m)
    assert m["joint_hit_rate"] <= min(m["gap_eV_hit_rate"], m["mu_D_hit_rate"])

    # A combined run saves as one folder (the second property's networks as <kind>.mu_D) and reads back.
    saved = designer.run.save_pretrained(tmp_path / "combined")
    assert (saved / "classifier.mu_D" / "model.safetensors").is_file()
    again = TrainedRun.from_pretrained(saved)
    assert again.properties == ["gap_eV", "mu_D"]
    assert again.binning("mu_D").edges == designer.run.binning("mu_D").edges


def test_two_goals_add_their_terms_each_with_its_own_weight(two_runs):
    """The terms of {gap: high, mu: low (weight 2)} at weight 1.5 sum to the gap term at 1.5
    plus the mu term at 3, each towards its own class (float64)."""
    import molguide
    from molguide.data.graphs import fully_connected_edges
    from molguide.diffusion.sampling import GuidanceState
    from molguide.guidance.terms import TimeWindow, classifier_log_prob_gradient

    gap, mu = two_runs
    designer = molguide.load(str(gap), guidance=[str(mu)])
    goals = designer.resolve_goals({"gap_eV": "high", "mu_D": {"goal": "low", "weight": 2.0}})
    terms, _ = designer._terms({"classifier": 1.5}, goals, TimeWindow())
    assert [t.weight for t in terms] == [1.5, 3.0]
    gen = torch.Generator().manual_seed(1)
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    zx, zh = torch.randn(7, 3, generator=gen), torch.randn(7, 5, generator=gen)
    state = GuidanceState(
        zx=zx, zh=zh, t=torch.tensor([0.3, 0.6], dtype=torch.float64), batch=batch, num_graphs=2,
        edge_index=fully_connected_edges(batch), score_x=torch.zeros_like(zx), score_h=torch.zeros_like(zh),
    )  # fmt: skip
    total = [sum(parts) for parts in zip(*(term(state) for term in terms))]
    gap_x, gap_h = classifier_log_prob_gradient(designer.run.network("classifier"), state, 2)
    mu_x, mu_h = classifier_log_prob_gradient(designer.run.network("classifier", "mu_D"), state, 0)
    torch.testing.assert_close(total[0], 1.5 * gap_x + 3.0 * mu_x)
    torch.testing.assert_close(total[1], 1.5 * gap_h + 3.0 * mu_h)


@pytest.mark.parametrize(
    ("target", "guidance", "message"),
    [
        ({"homo_eV": "high"}, None, "'homo_eV': this run's guidance networks were trained for 'gap_eV', 'mu"),
        ({"mu_D": {"bin": 4}}, None, "bin 4 is outside 0..3"),
        ({"gap_eV": "high"}, {"reward": 1.0}, "has no reward model"),
    ],
)
def test_goals_a_run_cannot_serve_are_named(two_runs, target, guidance, message):
    import molguide

    gap, mu = two_runs
    designer = molguide.load(str(gap), guidance=[str(mu)])
    with pytest.raises(ValueError, match=message):
        designer.generate(2, target=target, guidance=guidance, steps=2)


def test_a_run_cannot_take_a_second_network_for_a_property_it_has(two_runs):
    import molguide

    gap, _ = two_runs
    with pytest.raises(ValueError, match="has its (classifier|evaluator) network for gap_eV already"):
        molguide.load(str(gap), guidance=[str(gap)])


def test_generate_towards_two_properties_from_the_command_line(two_runs, tmp_path, capsys):
    import molguide
    from molguide.cli import main

    gap, mu = two_runs
    out = tmp_path / "two.sdf"
    args = ["-q", "generate", str(gap), "--guidance-from", str(mu), "--target", "gap_eV=high",
            "--target", "mu_D=1.5+-1.0,weight=1.5", "--guidance", "classifier=1", "-n", "6", "--steps", "30",
            "--compare-unguided", "--out", str(out), "--json"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_requested"] == 6 and result["guidance"].endswith("mu_D = 1.5 +- 1 (weight 1.5)")
    improvement = result["improvement"]
    for key in ("gap_eV_improvement", "mu_D_improvement", "joint_hit_rate", "joint_hit_rate_unguided"):
        assert key in improvement
    assert improvement["gap_eV_improvement_ci_low"] <= improvement["gap_eV_improvement"]
    mu_classifier = result["classifiers"]["mu_D"]
    assert mu_classifier["n_bins"] == 4 and len(mu_classifier["classifier_ce"]) == 10
    assert all(v > 0 for v in mu_classifier["classifier_ce"] + mu_classifier["guidance_mse_est"])
    mols = molguide.read(out).molecules
    assert len(mols) == result["n_generated"]
    assert main(["generate", str(gap), "--target", "gap_eV=hgh", "-n", "2"]) == 2
    assert "--target 'gap_eV=hgh': give high, low, a value" in capsys.readouterr().err


def test_a_goal_without_bins_reports_its_shift_but_no_hit_rate():
    """A property guided by a regressor alone has no binning: "low" and a bare value are
    improvements (mean shift, distance), not hit rates, and nothing raises."""
    from molguide.diagnostics.goals import goal_improvements

    rng = np.random.default_rng(1)
    unguided = {"mu_D": rng.normal(3, 1, 200)}
    guided = {"mu_D": unguided["mu_D"] - 0.5}
    for goal in (Goal("mu_D", "low"), Goal("mu_D", "value", value=2.5)):
        m = goal_improvements([goal], guided, unguided, {"mu_D": None})
        assert "mu_D_improvement" in m and "mu_D_hit_rate" not in m
    assert goal_improvements([Goal("mu_D", "low")], guided, unguided, {})[
        "mu_D_improvement"
    ] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- goals in configs


def test_config_goals_train_one_network_per_property_and_report_each_goal(tmp_path, qm9, monkeypatch):
    """``target.goals`` with two properties: train-classifier and train-evaluator train one
    network each per property (the second in ``<kind>.<property>/``), the guide pipeline
    steers both with one term each and reports both goals' improvements and the joint hit rate."""
    import mlflow

    from molguide.runs.config import load_config
    from molguide.runs.guide import guided_sample
    from molguide.runs.settings import guide_settings
    from molguide.runs.train import train_classifier, train_evaluator, train_score
    from molguide.storage.trained_run import TrainedRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tiny = [
        "data.max_molecules=300",
        "model.pretrained=qm9",
        "classifier.backbone_kwargs={hidden: 16, num_layers: 2}",
        "classifier.train={steps: 20, batch_size: 32, lr: 0.001, log_every: 10}",
        "classifier.holdout=40",
        "evaluator.backbone_kwargs={hidden: 16, num_layers: 2}",
        "evaluator.train={steps: 20, batch_size: 32, lr: 0.001, log_every: 10}",
        "evaluator.holdout=60",
        "guide.classifier=2.0",
        "guide.reward=0",
        "guide.diagnostics_molecules=20",
        "guide.n_samples=6",
        "guide.steps=20",
        "guide.batch_size=6",
        "guide.xtb=false",
        "target.goals={gap_eV: high, mu_D: {goal: low, weight: 0.5, t_max: 0.8}}",
    ]
    config = load_config(None, [f"output_dir={tmp_path / 'run'}", *tiny])
    assert config.target.property == "gap_eV" and config.target.further_properties() == ["mu_D"]
    train_score(config, progress=False)
    clf = train_classifier(config, progress=False)
    assert set(clf["parts"]) == {"classifier.mu_D"} and clf["parts"]["classifier.mu_D"]["steps"] == 20
    train_evaluator(config, progress=False)
    run = TrainedRun.from_pretrained(tmp_path / "run")
    assert run.properties == ["gap_eV", "mu_D"]
    assert run.record("classifier", "mu_D").property_target.name == "mu_D"
    assert run.record("evaluator", "mu_D").property == "mu_D"

    settings = {s.name: s for s in guide_settings(config.guide, run, config.target.goal_list())}
    terms = settings["classifier_w2"].terms
    assert len(terms) == 2  # one per property
    weights = sorted(term.weight for term in terms)
    assert weights == pytest.approx([1.0, 2.0])  # mu_D's goal weight 0.5 times the kind's 2

    out = guided_sample(config, progress=False)
    metrics = out["results"]["classifier_w2"]
    for prop in ("gap_eV", "mu_D"):
        assert metrics[f"{prop}_improvement_ci_low"] <= metrics[f"{prop}_improvement"]
        assert metrics[f"{prop}_improvement"] <= metrics[f"{prop}_improvement_ci_high"]
        assert 0 <= metrics[f"{prop}_hit_rate"] <= 1
    assert 0 <= metrics["joint_hit_rate"] <= min(metrics["gap_eV_hit_rate"], metrics["mu_D_hit_rate"])
    parent = mlflow.MlflowClient(uri).get_run(out["run_id"])
    assert parent.data.tags["molguide.target"].startswith("gap_eV >= ")
    assert "; mu_D < " in parent.data.tags["molguide.target"]
    client = mlflow.MlflowClient(uri)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    params = {r.info.run_name: r.data.params for r in children}
    assert (
        params["classifier_w2"]["guidance"] == "classifier" and float(params["classifier_w2"]["weight"]) == 2
    )
    assert params["classifier_w2"]["target"] == parent.data.tags["molguide.target"]
    assert params["unguided"]["reference"] == "none" and params["classifier_w2"]["reference"] == "unguided"
    description = parent.data.tags["mlflow.note.content"]
    assert "```text" in description and "classifier_w2" in description
    report = (tmp_path / "run" / "guided" / "report.html").read_text()
    assert "gap_eV &gt;= " in report and report.count("data:image/png;base64,") == 4
    sdf = (tmp_path / "run" / "guided" / "classifier_w2.sdf").read_text()
    assert "evaluator_mu_D" in sdf and "evaluator_gap_eV" in sdf
    import csv

    with open(tmp_path / "run" / "guided" / "classifier_w2.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert 0 < len(rows) <= 6
    assert {r["molguide_setting"] for r in rows} == {"classifier_w2"}
    assert {r["molguide_weight"] for r in rows} == {"2"} and {r["molguide_seed"] for r in rows} == {"0"}
    assert all(r["molguide_target"] == parent.data.tags["molguide.target"] for r in rows)
    assert all(r["bonds"] != "none" for r in rows if r["valid"] == "1")


@pytest.mark.parametrize(
    ("goals", "message"),
    [
        ("{foo: high}", "'foo' is not a property"),
        ("{gap_eV: up}", "give 'high', 'low'"),
        ("{gap_eV: {value: 3, tolerance: -1}}", "tolerance must be > 0"),
    ],
)
def test_config_goals_bad_input_names_the_key(goals, message):
    from molguide.runs.config import load_config

    with pytest.raises(ValueError, match=message) as err:
        load_config(None, [f"target.goals={goals}"])
    assert "target" in str(err.value)


def test_a_config_with_goals_reads_back_from_its_own_dump(tmp_path):
    """A run's logged config.yaml (and `config show`'s output) loads again unchanged."""
    from molguide.runs.config import dump_config, load_config

    config = load_config(None, ["target.goals={mu_D: low, gap_eV: {value: 7.0, tolerance: 0.5}}"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    again = load_config(str(path), [])
    assert again.target == config.target and again.target.property == "mu_D" and again.target.target == "low"


def test_goals_given_over_a_pipelines_defaults_replace_its_single_target(caplog):
    """The quickstart's defaults name gap_eV high; --set target.goals wins, and says so."""
    from molguide.runs.config import load_config
    from molguide.runs.pipeline_help import pipeline_defaults

    base = pipeline_defaults("quickstart")
    assert base["target"]["property"] == "gap_eV" and base["target"]["target"] == "high"
    with caplog.at_level("WARNING", logger="molguide"):
        config = load_config(None, ["target.goals={mu_D: low, gap_eV: high}"], base=base)
    assert (config.target.property, config.target.target) == ("mu_D", "low")
    assert config.target.further_properties() == ["gap_eV"] and config.target.n_bins == 3
    assert "target.property = 'gap_eV' is replaced by target.goals' first goal (mu_D)" in caplog.text

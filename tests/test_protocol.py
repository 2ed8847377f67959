"""EDM's QM9 protocol: the tables' maths, resumable batched sampling, and the published
config run end to end at tiny sizes (``molguide run full -c configs/qm9_edm_protocol.yaml``
with --set overrides) into a SQLite MLflow store, then run again to show it resumes."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from molguide.cli import main
from molguide.data.molecules import Molecule
from molguide.diagnostics.baselines import mean_absolute_error, reference_maes
from molguide.diagnostics.published import PUBLISHED_MAE, PUBLISHED_STABILITY, TABLE_UNITS, to_table_units
from molguide.diagnostics.tables import conditional_mae_table, stability_table
from molguide.generation.sample_store import BatchedSamples, batch_seed

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "qm9_edm_protocol.yaml"
PROPERTIES = ("alpha_bohr3", "gap_eV")

# The published config made tiny: two properties, 24 samples of 50 steps, networks of a few
# dozen steps. The score model stays close to its initial weights (low lr, slow EMA):
# a few dozen steps at a high rate give a model whose samples explode at the first step.
TINY = [
    "device=cpu",
    "data.max_molecules=300",
    "model.backbone_kwargs={hidden: 16, num_layers: 2, coords_range: 7.5}",  # EDM: 15 A over the layers
    # 40 steps make no usable model: its samples all diverge, which leaves the tables without
    # molguide rows; the fixed-decay EMA (mostly the initial weights) keeps them finite.
    "train={steps: 40, batch_size: 32, lr: 5.0e-4, warmup_steps: 100, ema_decay: 0.995, "
    "ema_warmup: false, log_every: 20}",
    "classifier.backbone_kwargs={hidden: 16, num_layers: 2}",
    "classifier.train={steps: 30, batch_size: 32, lr: 1.0e-3, ema_decay: 0.9, log_every: 10}",
    "classifier.holdout=20",
    "evaluator.backbone_kwargs={hidden: 16, num_layers: 2}",
    "evaluator.train={steps: 60, batch_size: 32, lr: 2.0e-3, ema_decay: 0.9, log_every: 20}",
    "evaluator.holdout=50",
    f"protocol.properties=[{', '.join(PROPERTIES)}]",
    "protocol.n_samples=24",
    "protocol.n_bins=4",
    "protocol.classifier_weights=[1.0, 2.0]",  # two weights: one is chosen on the generator half
    "cfg.enabled=true",
    "cfg.train={steps: 10, batch_size: 32, warmup_steps: 0, ema_decay: 0.9, log_every: 10}",
    "protocol.cfg_weights=[1.0]",
    "regressor.backbone_kwargs={hidden: 16, num_layers: 2}",
    "regressor.train={steps: 30, batch_size: 32, lr: 1.0e-3, ema_decay: 0.9, log_every: 10}",
    "regressor.holdout=20",
    "protocol.density_weights=[1.0]",
    f"protocol.pairs=[[{PROPERTIES[0]}, {PROPERTIES[1]}]]",  # EEGSDE's multi-property rows
    "protocol.xtb_molecules=4",  # the xTB judge of gap's rows
    "protocol.n_reference=50",
    "protocol.steps=50",
    "sample.batch_size=12",
]
ROWS = (
    "naive",
    "atoms",
    "lower_bound",
    "unguided",
    "classifier_selected",
    "cfg_selected",
    "density_selected",
)


# ----------------------------------------------------------------------------- maths


def test_units_of_the_published_table():
    assert to_table_units("gap_eV", 0.655) == pytest.approx(655.0)  # eV -> meV
    assert to_table_units("homo_eV", 0.356) == pytest.approx(356.0)
    assert to_table_units("mu_D", 1.111) == 1.111 and to_table_units("alpha_bohr3", 2.76) == 2.76
    assert set(TABLE_UNITS) == {"alpha_bohr3", "gap_eV", "homo_eV", "lumo_eV", "mu_D", "cv_calmolK"}
    with pytest.raises(ValueError, match="no published unit"):
        to_table_units("zpve_eV", 1.0)


def test_reference_rows_naive_shuffles_targets_atoms_and_lower_bound():
    rng = np.random.default_rng(0)
    values = rng.normal(5.0, 2.0, 500)
    pred = values + rng.normal(0.0, 0.1, 500)  # a good evaluator
    atoms = np.full(500, values.mean())  # a predictor that knows nothing but the mean
    rows = reference_maes(pred, values, atoms, np.random.default_rng(7))
    # Naive: the evaluator's predictions against a permutation of the targets.
    shuffled = np.random.default_rng(7).permutation(values)
    assert rows["naive"] == pytest.approx(np.abs(pred - shuffled).mean())
    assert rows["lower_bound"] == pytest.approx(np.abs(pred - values).mean()) and rows["lower_bound"] < 0.1
    assert rows["atoms"] == pytest.approx(np.abs(values - values.mean()).mean())
    # Shuffling pairs independent draws: E|X - Y| = 2 sigma / sqrt(pi) for Gaussians.
    assert rows["naive"] == pytest.approx(2 * 2.0 / math.sqrt(math.pi), rel=0.1)
    # A lost sample (NaN prediction) is left out, not counted as zero error.
    assert mean_absolute_error(np.array([1.0, np.nan, 3.0]), np.array([0.0, 100.0, 1.0])) == 1.5


def test_tables_carry_published_rows_in_their_units():
    rows = [{"source": "measured", "row": "molguide unguided", "mae": {"gap_eV": 812.4, "mu_D": 1.2345}}]
    rows += [{"source": "published", "row": name, "mae": v} for name, v in PUBLISHED_MAE.items()]
    table = conditional_mae_table(rows, TABLE_UNITS)
    lines = table.splitlines()
    assert "gap (meV)" in lines[0] and "alpha (bohr^3)" in lines[0] and "Cv (cal/mol K)" in lines[0]
    assert "| 812 " in lines[2] and "| 1.234 " in lines[2] and lines[2].count(" - ") == 4
    edm = next(line for line in lines if "EDM (conditional model)" in line)
    assert "| 655 " in edm and "| 2.76 " in edm and "| 1.101 " in edm
    stab = stability_table([{"source": "measured", "row": "x", "n": 10000, "atom_stability": 0.987}])
    assert "| 98.70 " in stab and "10,000" in stab


def test_stability_table_has_strict_validity_beside_validity_and_none_published():
    measured = {"source": "measured", "row": "molguide", "n": 100, "atom_stability": 0.99}
    measured.update(mol_stability=0.9, validity=0.95, validity_strict=0.8123, valid_unique=0.94)
    rows = [measured, *({"source": "published", "n": None, **r} for r in PUBLISHED_STABILITY)]
    lines = stability_table(rows).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[3:] == ["atom stab %", "mol stab %", "valid %", "strict valid %", "valid*unique %"]

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip("|").split("|")]

    assert cells(lines[2])[5:7] == ["95.00", "81.23"]
    published = [cells(line) for line in lines[3:]]
    assert [c[1] for c in published] == ["QM9 data", "EDM (1000 steps)", "GeoLDM", "GeoBFN (1000 steps)"]
    assert all(c[6] == "-" for c in published)  # the papers report no strict validity
    assert published[1][3:8] == ["98.70", "82.00", "91.90", "-", "90.70"]  # EDM's row, in its columns


def test_the_data_row_is_measured_again_when_its_cache_is_of_an_older_quality_version(qm9, molguide_cache):
    from molguide.diagnostics.quality import QUALITY_VERSION, qm9_reference_row
    from molguide.runs.config import load_config

    config = load_config(CONFIG, ["device=cpu", "data.max_molecules=300", "protocol.n_reference=8"])
    row = qm9_reference_row(config, progress=False)
    assert row["n"] == 8 and 0 <= row["validity_strict"] <= 1 and row["validity"] > 0.5
    (path,) = [p for p in (molguide_cache / "protocol").glob("*_n8_*.json")]
    assert json.loads(path.read_text()) == {"quality_version": QUALITY_VERSION, "row": row}
    path.write_text(json.dumps({"n": 8, "validity": 0.0, "atom_stability": 0.0}))  # an older cache
    assert qm9_reference_row(config, progress=False) == row
    assert json.loads(path.read_text())["quality_version"] == QUALITY_VERSION


def test_protocol_config_steps_and_per_property_copies(tmp_path):
    from molguide.runs.config import ConfigError, load_config
    from molguide.runs.protocol import property_config
    from molguide.runs.workflow import full_steps

    config = load_config(
        CONFIG, ["device=cpu", f"output_dir={tmp_path}", "protocol.classifier_weights=[3, 1, 1]"]
    )
    assert config.protocol.enabled and config.protocol.n_samples == 10000 and config.protocol.steps == 1000
    assert config.protocol.properties == ["alpha_bohr3", "gap_eV", "homo_eV", "lumo_eV", "mu_D", "cv_calmolK"]
    assert config.protocol.classifier_weights == [1.0, 3.0]
    assert full_steps(config) == ("train-score", "protocol-train", "protocol")
    mu = property_config(config, "mu_D")
    assert mu.target.property == "mu_D" and mu.target.n_bins == 10 and mu.target.thresholds is None
    assert mu.output_dir == str(tmp_path / "protocol" / "mu_D") and mu.name == "qm9-edm-protocol-mu_D"
    assert config.target.property == "gap_eV" and config.output_dir == str(
        tmp_path
    )  # the original is untouched
    for bad, message in (
        ("protocol.properties=[gap_eV, gap_eV]", "each property once"),
        ("protocol.n_bins=1", "n_bins"),
        ("protocol.pairs=[[gap_eV, gap_eV]]", "gap_eV twice in one pair"),
        ("protocol={properties: [gap_eV], pairs: [[gap_eV, mu_D]]}", "mu_D is not in protocol.properties"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(CONFIG, [bad])


# ----------------------------------------------------------------------------- batched samples


def _fake_batch(k: int, start: int, end: int):
    """Deterministic 'samples' from the batch's seed; sample 1 of every batch is lost."""
    rng = np.random.default_rng(batch_seed(0, k))
    mols = [Molecule(np.ones(3, dtype=int), rng.normal(size=(3, 3))) for _ in range(start, end)]
    mols[1] = None
    return mols, {1: "exploded"}


def test_batched_samples_resume_after_an_interruption_with_the_same_molecules(tmp_path):
    calls = []

    def interrupted(k, start, end):
        if k == 2:
            raise KeyboardInterrupt
        calls.append(k)
        return _fake_batch(k, start, end)

    store = BatchedSamples(tmp_path / "a", {"steps": 5}, n=11, batch_size=3)
    with pytest.raises(KeyboardInterrupt):
        store.fill(interrupted, "test", progress=False)
    assert calls == [0, 1]
    again = BatchedSamples(tmp_path / "a", {"steps": 5}, n=11, batch_size=3)
    again.fill(lambda k, s, e: (calls.append(k), _fake_batch(k, s, e))[1], "test", progress=False)
    assert calls == [0, 1, 2, 3]  # only the missing batches
    straight = BatchedSamples(tmp_path / "b", {"steps": 5}, n=11, batch_size=3)
    straight.fill(_fake_batch, "test", progress=False)
    (resumed, fails, _), (plain, fails_plain, _) = again.load(), straight.load()
    assert fails == fails_plain == {k: "exploded" for k in (1, 4, 7, 10)}
    for a, b in zip(resumed, plain):
        assert (a is None and b is None) or np.allclose(a.positions, b.positions, atol=1e-6)
    # Other inputs: the old batches are discarded, not mixed in.
    BatchedSamples(tmp_path / "a", {"steps": 6}, n=11, batch_size=3)
    assert not list((tmp_path / "a").glob("batch_*.npz"))


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def protocol_runs(tmp_path_factory, molguide_cache):
    """The tiny protocol run twice with the same command; yields what the tests look at."""
    tmp = tmp_path_factory.mktemp("protocol")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    old_uri, threads = os.environ.get("MLFLOW_TRACKING_URI"), torch.get_num_threads()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    # Tiny networks run as fast on one thread, and one thread does not stall when other
    # processes share the two cores (OpenMP threads spin-waiting on a busy core).
    torch.set_num_threads(1)
    sets = [arg for item in [*TINY, f"output_dir={tmp / 'runs'}"] for arg in ("--set", item)]
    command = ["-q", "run", "full", "-c", str(CONFIG), "--no-progress", *sets]
    runs = []
    try:
        for extra in ([], ["--json"]):
            out = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(out):
                assert main([*command, *extra]) == 0
            runs.append((time.perf_counter() - t0, out.getvalue()))
        yield {"uri": uri, "runs": runs, "folder": tmp / "runs"}
    finally:
        torch.set_num_threads(threads)
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri


def test_protocol_prints_and_logs_both_tables_with_sane_rows(protocol_runs):
    import mlflow

    _, text = protocol_runs["runs"][0]
    assert "unconditional (%)" in text and "conditional MAE" in text
    assert "| published | EDM (1000 steps)" in text and "| published | EEGSDE" in text
    run_id = text.split("MLflow run ")[1].split(";")[0]
    client = mlflow.MlflowClient(protocol_runs["uri"])
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert client.get_experiment(parent.info.experiment_id).name == "molguide-full"
    artifacts = {a.path for a in client.list_artifacts(run_id, "protocol")}
    assert {
        "protocol/stability_table.md",
        "protocol/conditional_mae_table.md",
        "protocol/tables.json",
    } <= artifacts
    stability = mlflow.artifacts.load_text(f"runs:/{run_id}/protocol/stability_table.md")
    assert "| measured  | molguide (EGNN 16x2, 40 training steps; ancestral sampler, 50 steps)" in stability
    assert "| measured  | QM9 data (generator_half)" in stability and "| published | GeoBFN" in stability
    assert "| strict valid % |" in stability
    tables = mlflow.artifacts.load_dict(f"runs:/{run_id}/protocol/tables.json")
    assert [r["row"] for r in tables["conditional_mae"] if r["source"] == "measured"] == [
        "Naive (shuffled targets)",
        "#Atoms",
        "molguide unguided",
        "molguide classifier-guided, w chosen on the generator half",
        "molguide CFG, w chosen on the generator half",
        "molguide density-guided, w chosen on the generator half",
        "lower bound (evaluator on data)",
    ]

    # GFN2-xTB judges gap's rows again (alpha is not an xTB property).
    assert "GFN2-xTB as a second judge" in text
    xtb_rows = tables["metrics"]
    assert 0 < xtb_rows["xtb_mae_gap_eV_lower_bound"] < 3000  # meV: xTB shifted onto DFT, 4 real molecules
    assert "xtb_mae_alpha_bohr3_unguided" not in xtb_rows
    gap_xtb = json.loads((protocol_runs["folder"] / "protocol" / "gap_eV" / "results.json").read_text())[
        "xtb"
    ]
    # (a tiny model's molecules may defeat xTB: a row then has n 0 and no MAE)
    assert set(gap_xtb["n"]) == {
        "lower_bound",
        "unguided",
        "classifier_selected",
        "cfg_selected",
        "density_selected",
    }
    assert gap_xtb["n"]["lower_bound"] == 4 and gap_xtb["n_molecules"] == 4

    # The theory beside the rows: per property and kind, the network's integrated CE and
    # guidance-error estimate, the row's MAE ratio and E[1/p(c|x)]; the rank correlation.
    assert "the theory beside the rows" in text and "Spearman rank correlation" in text
    points = tables["theory"]["points"]
    assert {(p["property"], p["kind"]) for p in points} == {
        (p, k) for p in PROPERTIES for k in ("classifier", "density")
    }
    clf = next(p for p in points if p["kind"] == "classifier")
    assert (
        clf["cross_entropy_kind"] == "CE / log K" and clf["cross_entropy"] > 0 and clf["guidance_mse_est"] > 0
    )
    assert clf["inv_prob_median"] >= 1 and clf["mae_ratio"] > 0
    assert tables["theory"]["correlations"]["classifier"]["mae_vs_cross_entropy"]["n"] == 2  # (rho needs 3)
    assert "protocol/mae_against_theory.png" in artifacts | {
        a.path for a in client.list_artifacts(run_id, "protocol")
    }

    # Both properties at once: each kind at the weights chosen for each property alone.
    assert "several properties at once (MAE of both)" in text
    pair_rows = [r["row"] for r in tables["multi_property"]]
    assert pair_rows[0] == "molguide unguided" and pair_rows[-1] == "lower bound (evaluator on data)"
    assert any(r.startswith("molguide classifier-guided, w = ") for r in pair_rows)
    assert any(r.startswith("molguide density-guided, w = 1 / 1") for r in pair_rows)

    m = parent.data.metrics
    assert m["pair.alpha_bohr3.gap_eV.unguided.mae_gap_eV"] == pytest.approx(m["mae_gap_eV_unguided"])
    for prop in PROPERTIES:
        for row in ROWS:
            value = m[f"mae_{prop}_{row}"]
            assert math.isfinite(value) and value > 0, (prop, row)
    # alpha grows with molecule size: the atom count alone beats shuffled targets, and the
    # evaluator (trained on the other half) beats them on real molecules.
    assert m["mae_alpha_bohr3_atoms"] < m["mae_alpha_bohr3_naive"]
    assert m["mae_alpha_bohr3_lower_bound"] < m["mae_alpha_bohr3_naive"]
    for key in (
        "validity",
        "validity_strict",
        "mol_stability",
        "valid_unique",
        "uniqueness",
        "atom_stability",
    ):
        if key in m:  # atom_stability and uniqueness are undefined when every sample is lost or invalid
            assert 0 <= m[key] <= 1, key
    assert m["qm9_data_atom_stability"] > 0.95 and m["qm9_data_validity"] > 0.9  # real molecules
    assert 0 <= m["validity"] <= 1 and m["sample_failures"] < 24
    assert 0 <= m["validity_strict"] <= 1 and 0.5 < m["qm9_data_validity_strict"] <= 1
    for prop in PROPERTIES:
        assert 0 <= m[f"{prop}.classifier_w2.validity_strict"] <= 1

    # The parent's table-unit MAE is the nested run's property-unit MAE times 1000 (eV -> meV).
    protocol_run = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{run_id}' and tags.`molguide.pipeline` = 'protocol'",
    )[0]
    settings = {
        r.info.run_name: r
        for r in client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{protocol_run.info.run_id}'"
        )
    }
    pair = "+".join(PROPERTIES)
    assert {name for name in settings if not name.startswith(pair)} == {
        "unconditional",
        *(f"{p}-{s}" for p in PROPERTIES for s in ("classifier_w1", "classifier_w2", "cfg_w1", "density_w1")),
    }
    assert {name.split("_w")[0] for name in settings if name.startswith(pair)} == {
        f"{pair}-classifier",
        f"{pair}-density",  # not CFG: its network replaces the score model
    }
    # Weights are chosen by the selector; the evaluator judges the chosen setting alone.
    chosen = tables["chosen_weights"]["gap_eV"]["classifier"]
    assert chosen["weight"] in (1.0, 2.0) and "Weights chosen on the generator half" in text
    gap = settings[f"gap_eV-{chosen['setting']}"].data.metrics
    assert gap["mae_table_units"] == pytest.approx(1000 * gap["mae_to_target"])
    assert m["mae_gap_eV_classifier_selected"] == pytest.approx(gap["mae_table_units"])
    other = "classifier_w1" if chosen["setting"] == "classifier_w2" else "classifier_w2"
    unjudged = settings[f"gap_eV-{other}"].data.metrics
    assert "selector_mae" in unjudged and "mae_to_target" not in unjudged
    sdfs = [a.path for a in client.list_artifacts(settings["unconditional"].info.run_id, "samples")]
    assert sdfs == ["samples/samples.csv", "samples/samples.sdf"]  # the molecules and their table
    params = settings[f"gap_eV-{other}"].data.params  # params, so MLflow's compare view plots them
    assert params["guidance"] == "classifier" and params["property"] == "gap_eV"
    assert float(params["weight"]) in (1.0, 2.0)


def test_protocol_trains_each_half_separately_under_one_parent(protocol_runs):
    import mlflow

    _, text = protocol_runs["runs"][0]
    run_id = text.split("MLflow run ")[1].split(";")[0]
    client = mlflow.MlflowClient(protocol_runs["uri"])
    exp = client.get_run(run_id).info.experiment_id

    def children(rid):
        return client.search_runs([exp], f"tags.mlflow.parentRunId = '{rid}'", order_by=["start_time ASC"])

    steps = [r.info.run_name for r in children(run_id)]
    assert steps == ["qm9-edm-protocol-train", "protocol-alpha_bohr3", "protocol-gap_eV", "protocol"]
    group = next(r for r in children(run_id) if r.info.run_name == "protocol-gap_eV")
    halves = {
        r.data.tags["molguide.pipeline"]: r.data.tags["molguide.split_half"]
        for r in children(group.info.run_id)
    }
    assert halves == {
        "train-classifier": "generator_half",
        "train-evaluator": "evaluator_half",
        "train-cfg": "generator_half",
        "train-regressor": "generator_half",
        "train-selector": "generator_half",
    }
    folder = protocol_runs["folder"] / "protocol"
    for prop in PROPERTIES:
        results = json.loads((folder / prop / "results.json").read_text())
        assert results["unit"] == TABLE_UNITS[prop][0] and set(results["mae"]) == set(ROWS)
        assert (folder / prop / "classifier" / "last.pt").exists() and (
            folder / prop / "evaluator" / "last.pt"
        ).exists()


def test_the_same_command_again_skips_finished_work_and_gives_the_same_tables(protocol_runs):
    (first_s, text), (second_s, raw) = protocol_runs["runs"]
    again = json.loads(raw)
    assert list(again["steps"]) == ["train-score", "protocol-train", "protocol"]
    parts = again["steps"]["protocol-train"]["parts"]
    kinds = ("classifier", "evaluator", "cfg", "regressor", "selector")
    assert set(parts) == {f"{p} {k}" for p in PROPERTIES for k in kinds}
    assert all(part["reused"] for part in parts.values())
    edm = again["steps"]["protocol"]
    assert edm["reused"] == ["unconditional", *PROPERTIES]
    assert math.isnan(again["steps"]["train-score"]["train_steps_per_s"])  # resumed at its last step
    first_table = text.split("conditional MAE")[1].split("MLflow run")[0].strip()
    assert edm["conditional_mae_table"] in first_table
    assert second_s < first_s / 2, (first_s, second_s)


def test_a_time_boxed_score_model_stops_the_protocol_before_the_later_steps(tmp_path, monkeypatch, capsys):
    """max_minutes is a session's time box here: no per-property training or sampling on a half model."""
    from molguide.runs.workflow import unfinished_trainings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    sets = [*TINY, f"output_dir={tmp_path / 'runs'}", "train.steps=100000", "train.max_minutes=0.002"]
    command = ["-q", "run", "full", "-c", str(CONFIG), "--no-progress"]
    assert main([*command, *[arg for item in sets for arg in ("--set", item)]]) == 0
    text = capsys.readouterr().out
    assert "not finished: train-score (step " in text and "Run the same command again" in text
    assert (tmp_path / "runs" / "score" / "last.pt").exists()
    assert not (tmp_path / "runs" / "protocol").exists()
    stopped_part = {"parts": {"gap_eV evaluator": {"finished": False, "steps": 3}}}
    assert unfinished_trainings("protocol-train", stopped_part) == ["gap_eV evaluator (step 3)"]
    assert not unfinished_trainings("train-score", {"finished": True, "steps": 40})


def test_the_protocol_score_model_does_not_diverge_in_its_first_steps(qm9):
    """EGNN 256x9 with 15 A per layer diverged at step 2 (loss 1e10); EDM's 15 / 9 per layer does not."""
    from molguide.diffusion.objective import DiffusionTrainer
    from molguide.diffusion.process import VPDiffusion
    from molguide.models.build import build_score_model
    from molguide.runs.config import load_config
    from molguide.training.trainer import TrainConfig

    config = load_config(CONFIG, [])
    torch.manual_seed(0)
    model = build_score_model(config.model.model_dump())
    diffusion = VPDiffusion.from_config(config.diffusion.model_dump())
    train = TrainConfig(steps=4, batch_size=16, lr=config.train.lr, warmup_steps=config.train.warmup_steps)
    trainer = DiffusionTrainer(model, diffusion, qm9.subset(np.arange(2000)), train)
    trainer.train()
    losses = [e.loss for e in trainer.history]
    assert all(math.isfinite(v) for v in losses) and max(losses[1:]) < 50, losses


def test_the_protocol_samples_with_edms_settings_or_the_models_own(tmp_path):
    """protocol.sampler: edm is protocol.method on the even grid; model is the sampler the
    score network recommends (the shipped generator's dpmpp2m_sde, eta 2, grid u^2)."""
    from molguide.runs.config import load_config
    from molguide.runs.protocol import _protocol_pipeline, sampler_description
    from molguide.storage.trained_run import TrainedRun

    shipped = TrainedRun.from_pretrained("qm9")
    for choice, expected in (
        ("edm", "ancestral sampler, 100 steps"),
        ("model", "dpmpp2m_sde sampler (the model's: grid u^2, eta 2), 100 steps"),
    ):
        config = load_config(CONFIG, ["device=cpu", f"protocol.sampler={choice}", "protocol.steps=100"])
        pipe = _protocol_pipeline(config, shipped)
        assert sampler_description(config, pipe) == expected
        assert (pipe.sampler, pipe.grid_power) == (
            ("ancestral", 1.0) if choice == "edm" else ("dpmpp2m_sde", 2.0)
        )


def test_a_weight_is_chosen_by_the_selector_among_those_that_keep_validity():
    from molguide.runs.protocol import choose_weights

    settings = {
        "classifier_w1": {"kind": "classifier", "selector_mae": 0.30, "validity_strict": 0.80},
        "classifier_w2": {"kind": "classifier", "selector_mae": 0.20, "validity_strict": 0.77},
        "classifier_w4": {
            "kind": "classifier",
            "selector_mae": 0.10,
            "validity_strict": 0.60,
        },  # breaks molecules
        "density_w1": {"kind": "density", "selector_mae": float("nan"), "validity_strict": 0.5},
        "density_w2": {"kind": "density", "selector_mae": 0.4, "validity_strict": 0.4},
    }
    chosen = choose_weights(settings, unguided_strict=0.81, max_drop=0.05)
    # density keeps validity nowhere: its lowest finite MAE among all its settings
    assert chosen == {"classifier": "classifier_w2", "density": "density_w2"}
    assert choose_weights(settings, unguided_strict=0.81, max_drop=0.5)["classifier"] == "classifier_w4"

"""Composite pipelines: ``quickstart`` and ``full`` (every step under one parent run) and
``evaluate`` (a molecule file, judged and logged).

A composite pipeline is a thin sequence of the single pipelines: each step opens its
own MLflow run, nested under the parent, and writes its checkpoint into the shared
``output_dir``; running the same command again resumes every unfinished training
and redoes only the work after it. The parent run carries the headline metrics of
README "Set up and run the quickstart", the plots and a plain-text summary table. With
``protocol.enabled``, ``full`` is EDM's QM9 protocol (:mod:`molguide.runs.protocol`),
whose finished trainings, sample batches and results a rerun skips.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

from molguide.data.registry import dataset_label
from molguide.diagnostics.tables import run_summary_table
from molguide.runs import guide, protocol, sample, train
from molguide.runs.config import RunConfig
from molguide.runs.guide import SETTING_METRIC_PREFIXES
from molguide.runs.pipeline_help import pipeline_defaults
from molguide.runs.tracking import (
    HEADLINE_TAG,
    describe_run,
    log_config,
    log_metrics_batch,
    mlflow_run,
    ui_command,
    ui_link,
)
from molguide.runs.training_specs import TRAINING_SPECS

log = logging.getLogger(__name__)

STEPS: dict[str, Callable[[RunConfig, bool | None], dict]] = {
    **{f"train-{kind}": functools.partial(train.train_network, kind) for kind in TRAINING_SPECS},
    "sample": sample.sample_and_evaluate,
    "guide": guide.guided_sample,
    "protocol-train": protocol.train_protocol_models,
    "protocol": protocol.run_protocol,
}
QUICKSTART_STEPS = ("train-score", "train-classifier", "train-evaluator", "train-reward", "guide")


def quickstart_defaults() -> dict:
    """The quickstart's own configuration (``molguide/runs/quickstart.yaml``)."""
    return pipeline_defaults("quickstart")


def full_steps(config: RunConfig) -> tuple[str, ...]:
    """The steps of ``full``: every training, unconditional sampling, then guided sampling.

    With ``protocol.enabled``: the score model, the per-property models of EDM's
    protocol (``protocol-train``: classifier, evaluator, CFG model per property) and
    the protocol's sampling and tables (``protocol``, whose unguided samples are the
    unconditional ones).
    """
    if config.protocol.enabled:
        return ("train-score", "protocol-train", "protocol")
    steps = ["train-score", "train-classifier", "train-evaluator", "train-reward"]
    if config.cfg.enabled:
        steps.append("train-cfg")
    return (*steps, "sample", "guide")


def run_steps(config: RunConfig, pipeline: str, steps: tuple[str, ...], progress: bool | None = None) -> dict:
    """Run ``steps`` as nested runs of one parent run; returns every step's summary and a table."""
    import mlflow

    out: dict = {"pipeline": pipeline, "steps": {}}
    tags = {"molguide.pipeline": pipeline, "molguide.dataset": dataset_label(config.data)}
    tags["molguide.split_half"] = config.data.split
    with mlflow_run(f"molguide-{pipeline}", config.name, tags) as run:
        log_config(config)
        for k, name in enumerate(steps, start=1):
            log.info("%s step %d of %d: %s", pipeline, k, len(steps), name)
            out["steps"][name] = STEPS[name](config, progress)
            unfinished = unfinished_trainings(name, out["steps"][name])
            # The protocol's max_minutes is a session's time box (not a training budget, as in
            # the CPU configs): sampling 10,000 molecules from half-trained models would be wasted.
            if unfinished and config.protocol.enabled and k < len(steps):
                out["unfinished"] = unfinished
                mlflow.set_tag("molguide.unfinished", ", ".join(unfinished))
                log.warning(
                    "%s: %s stopped before its configured steps (time limit); the later steps wait. "
                    "Run the same command again to continue.",
                    pipeline,
                    ", ".join(unfinished),
                )
                break
        guide = out["steps"].get("guide")
        if guide is not None:
            _log_headline(guide, Path(config.output_dir) / "guided")
        if "protocol" in out["steps"]:  # the parent carries the protocol's tables and metrics
            protocol.log_protocol(out["steps"]["protocol"])
        out["table"] = run_summary_table(out, config)
        describe_run(f"molguide {pipeline}: {config.name}", out["table"])
        mlflow.log_text(out["table"], "summary.txt")
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / "summary.txt").write_text(out["table"] + "\n")
        mlflow.log_artifact(str(write_report(config, pipeline, out)))
        mlflow.log_text(json.dumps(out, indent=2, default=_jsonable), "summary.json")
        out["run_id"] = run.info.run_id
        out["mlflow_link"] = ui_link(run.info.experiment_id, run.info.run_id)
    out["mlflow_ui"] = ui_command()
    return out


def write_report(config: RunConfig, pipeline: str, out: dict) -> Path:
    """``<output_dir>/report.html``: the summary table, the loss curves, the guidance plots
    and the config with the command that reproduces the run (one self-contained page)."""
    import shlex

    import mlflow

    from molguide.diagnostics.html_report import write_html_report
    from molguide.diagnostics.plots import plot_loss_curves
    from molguide.runs.config import dump_config

    folder = Path(config.output_dir)
    config_file = folder / "resolved_config.yaml"  # never a user's config.yaml
    config_file.write_text(dump_config(config))
    plots = []
    curves = _loss_curves(out["steps"])
    if curves:
        (folder / "plots").mkdir(exist_ok=True)
        plots.append(plot_loss_curves(curves, folder / "plots" / "loss_curves.png"))
        mlflow.log_artifact(str(plots[-1]), "plots")
    guided = folder / "guided"
    names = ("noise_levels", "property_histograms", "improvement_vs_weight", "sample_molecules")
    plots += [guided / f"{n}.png" for n in names if (guided / f"{n}.png").is_file()]
    command = f"molguide run {pipeline} -c {shlex.quote(str(config_file))}"
    title = f"molguide {pipeline}: {config.name}"
    return write_html_report(
        folder / "report.html", title, [("Summary", out["table"])], plots, dump_config(config), command
    )


def _loss_curves(steps: dict) -> dict[str, list[tuple[int, float]]]:
    """(step, loss) per network trained here, from its checkpoint (a pretrained network has none)."""
    from molguide.storage.checkpoints import load_checkpoint

    curves = {}
    for name, summary in steps.items():
        for part, one in {name: summary, **(summary.get("parts") or {})}.items():
            checkpoint = one.get("checkpoint") if isinstance(one, dict) else None
            if checkpoint and Path(checkpoint).is_file():
                losses = load_checkpoint(checkpoint).get("losses", [])
                if losses:
                    curves[part] = [(k + 1, float(v)) for k, v in enumerate(losses)]
    return curves


def unfinished_trainings(step: str, summary: dict) -> list[str]:
    """The trainings of a step's summary that stopped before their configured steps."""
    if summary.get("finished") is False:
        return [f"{step} (step {summary['steps']})"]
    parts = summary.get("parts", {})
    return [f"{name} (step {s['steps']})" for name, s in parts.items() if s.get("finished") is False]


def _jsonable(value):
    return str(value)


def _log_headline(guide: dict, plots_dir: Path) -> None:
    """Copy every setting's metrics (named ``<setting>.<metric>``: one unprefixed name would
    mix settings), the headline setting's name (tag ``molguide.headline_setting``), the
    noise-level rows and the plots to the parent."""
    import mlflow

    rows = []
    if guide["headline"]:
        mlflow.set_tag(HEADLINE_TAG, guide["headline"][0])
    for name, metrics in guide["results"].items():
        rows += [(f"{name}.{k}", v, 0) for k, v in metrics.items() if k.startswith(SETTING_METRIC_PREFIXES)]
    keys = ("classifier_ce", "classifier_accuracy", "classifier_ece", "guidance_mse_est")
    rows += [(k, r[k], r["bin"]) for r in guide["noise_levels"] for k in keys if r.get(k) is not None]
    log_metrics_batch([(k, v, s) for k, v, s in rows if v is not None and math.isfinite(v)])
    for png in sorted(plots_dir.glob("*.png")):
        mlflow.log_artifact(str(png), "plots")


def quickstart(config: RunConfig, progress: bool | None = None) -> dict:
    """Everything, small: score model, classifier, evaluator, reward model, guided sampling."""
    return run_steps(config, "quickstart", QUICKSTART_STEPS, progress)


def full(config: RunConfig, progress: bool | None = None) -> dict:
    """Every training step (CFG when ``cfg.enabled``), unconditional and guided sampling."""
    return run_steps(config, "full", full_steps(config), progress)


def evaluate_file(config: RunConfig, progress: bool | None = None) -> dict:
    """``molguide run evaluate``: metrics of ``evaluate.file`` logged to MLflow with the molecules.

    ``evaluated.sdf`` holds the input records unchanged plus ``molguide_*`` result tags.
    When the run folder holds an evaluator, its property predictions are added
    (SD tag ``molguide_evaluator_<property>``, metric ``evaluator_<property>_mean``).
    """
    import mlflow
    import numpy as np

    from molguide.chem.evaluate import (
        annotated_mols,
        evaluate,
        missing_hydrogens_warning,
        write_evaluated_sdf,
    )
    from molguide.data.io import read_molecules
    from molguide.data.molecules import MoleculeSet
    from molguide.diagnostics.plots import plot_molecule_grid

    ec = config.evaluate
    if not ec.file:
        raise ValueError("evaluate.file: name the molecules to evaluate, e.g. --set evaluate.file=mols.sdf")
    report = read_molecules(ec.file)
    if report.errors:
        log.warning("%s", report.summary())
    mols = report.require_molecules()
    extra: dict[str, float] = {}
    predicted: dict[str, np.ndarray] = {}  # SD tag name -> one evaluator prediction per molecule
    evaluator_folder = Path(config.output_dir) / "evaluator"
    if (evaluator_folder / "config.json").is_file():
        from molguide.models.predictor import predict_property
        from molguide.storage.trained_run import read_network

        evaluator = read_network(evaluator_folder)
        record = evaluator.record
        name = f"evaluator_{record.property}"
        predicted[name] = predict_property(
            evaluator.network, MoleculeSet.from_molecules(mols), record.mean, record.std, record.onehot_scale
        )
        extra[f"{name}_mean"] = float(np.mean(predicted[name]))
    ev = evaluate(
        mols,
        reference_smiles=None if ec.novelty else [],
        xtb=ec.xtb,
        read_errors=report.errors,
        progress=bool(progress),
    )
    for name, values in predicted.items():
        for result, value in zip(ev.molecules, values):
            result.properties[name] = float(value)
    warning = missing_hydrogens_warning(ev, mols)
    if warning:
        log.warning("%s", warning)
    result = ev.to_dict()
    out_dir = Path(config.output_dir) / "evaluate"
    out_dir.mkdir(parents=True, exist_ok=True)
    tags = {"molguide.pipeline": "evaluate", "molguide.input": str(ec.file)}
    with mlflow_run("molguide-evaluate", f"evaluate-{Path(ec.file).name}", tags) as run:
        log_config(config)
        numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and v is not None}
        log_metrics_batch([(k, v, 0) for k, v in {**numbers, **extra}.items() if math.isfinite(v)])
        write_evaluated_sdf(ev, mols, out_dir / "evaluated.sdf", ec.file, report.errors)
        rdkit_mols = annotated_mols(ev, mols)
        plot_molecule_grid({"": rdkit_mols}, out_dir / "sample_molecules.png", per_row=6)
        mlflow.log_artifact(str(out_dir / "evaluated.sdf"), "samples")
        mlflow.log_artifact(str(out_dir / "evaluated.csv"), "samples")
        mlflow.log_artifact(str(out_dir / "sample_molecules.png"), "plots")
        mlflow.log_dict(result, "evaluation.json")
        result["run_id"] = run.info.run_id
    result.update(extra)
    return result

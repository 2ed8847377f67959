"""The ``guide`` pipeline: sample unguided and guided with paired seeds, judge, report.

Protocol (docs/protocol.md, docs/guidance.md): the classifier and the reward model trained on
the generator half (like the score model); the evaluator, the oracle that judges
generated molecules, on the other half (:mod:`molguide.runs.train`). Guided and
unguided samples share seeds (same node counts, same initial and ancestral noise), so
improvements are paired differences with bootstrap intervals. GFN2-xTB judges beside
the evaluator, independent of every learned model.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np

from molguide.chem.xtb import XTB_PROPERTIES
from molguide.data.io import csv_beside
from molguide.data.registry import dataset_label, dataset_of, split_molecules
from molguide.generation.pipeline import MoleculeDiffusionPipeline
from molguide.guidance.goals import Goal, goal_target
from molguide.guidance.kinds import GUIDANCE_KINDS, setting_name
from molguide.runs.config import RunConfig
from molguide.runs.settings import guide_settings
from molguide.runs.tracking import HEADLINE_TAG, describe_run, log_config, log_metrics_batch, mlflow_run
from molguide.storage.trained_run import TrainedRun, log_trained_network

log = logging.getLogger(__name__)

EXPERIMENT = "molguide-guidance"
# What a parent run repeats of each setting, named <setting>.<metric>.
SETTING_METRIC_PREFIXES = (
    "property_improvement",
    "target_hit_rate",
    "reward_improvement",
    "inv_prob",
    "mae_to_target",
    "joint_hit_rate",
    "validity",
    "atom_stability",
    "mol_stability",
    "uniqueness",
    "novelty",
    "sample_s_per_molecule",
)


def _progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


# ----------------------------------------------------------------------------- guided sampling


def guided_sample(config: RunConfig, progress: bool | None = None) -> dict:
    """Sample unguided and guided with paired seeds; judge by evaluator and xTB; log the diagnostics."""
    import mlflow

    from molguide.diagnostics.goals import goal_improvements
    from molguide.diagnostics.noise_levels import log_noise_levels, noise_level_diagnostics
    from molguide.diagnostics.plots import plot_histograms, plot_molecule_grid, plot_noise_levels, plot_sweep
    from molguide.diagnostics.report import judge, paired_report
    from molguide.diagnostics.tables import guidance_table, noise_level_table

    progress = _progress(progress)
    gc = config.guide
    run = TrainedRun.from_pretrained(config.output_dir, config.device)
    diffusion = run.diffusion
    pipe = MoleculeDiffusionPipeline.from_run(run)
    classifier, classifier_record = run.network("classifier"), run.record("classifier")
    target = run.target
    goals = config.target.goal_list() if config.target.goals else None
    if goals:  # judged against the first goal as asked, not as the classifier was trained
        if goals[0].property != target.name:
            raise ValueError(
                f"target.goals: the first property is {goals[0].property}, but {config.output_dir}'s "
                f"first networks are for {target.name}; put {target.name} first or train for "
                f"{goals[0].property}"
            )
        target = goal_target(goals[0], target)
    evaluator, evaluator_record = run.network("evaluator"), run.record("evaluator")
    reward_record = run.record("reward") if run.has("reward") else None
    cfg_model = run.network("cfg") if run.has("cfg") else None
    for kind in GUIDANCE_KINDS.values():
        if getattr(gc, kind.name) > 0 and not run.has(kind.network):
            log.warning(
                "no %s model in %s: %s guidance skipped (run train-%s)",
                kind.network,
                config.output_dir,
                kind.name,
                kind.network,
            )
    settings = guide_settings(gc, run, goals)
    further = _further_evaluators(run, goals)

    calibration = _xtb_calibration(config, target.name) if gc.xtb and target.name in XTB_PROPERTIES else None
    novelty_reference = dataset_of(config.data).training_smiles()
    out_dir = Path(config.output_dir) / "guided"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    judged: dict[str, dict] = {}
    tags = {
        "molguide.pipeline": "guide",
        "molguide.dataset": dataset_label(config.data),
        "molguide.split_half": config.data.split,
    }
    with mlflow_run(EXPERIMENT, f"{config.name}-guide", tags):
        log_config(config)
        for kind in run.networks:  # this run id alone loads the designer again
            log_trained_network(Path(config.output_dir) / kind)
        target_text = _describe(run, goals) if goals else target.describe()
        mlflow.set_tag("molguide.target", target_text)
        if cfg_model is not None:  # the CFG-implied guidance gives the better error estimate
            held = split_molecules(config.data, "valid", gc.diagnostics_molecules, labelled=target.name)
            rows = noise_level_diagnostics(
                classifier,
                diffusion,
                held,
                target.labels(held.properties[target.name]),
                target.target_class,
                cfg_model=cfg_model,
                num_classes=target.n_bins,
                progress=progress,
            )
        else:
            rows = classifier_record.noise_levels
        noise_rows = log_noise_levels(rows)
        if reward_record is not None and reward_record.reward_weight_ess is not None:
            log_metrics_batch([("reward_weight_ess", reward_record.reward_weight_ess, 0)])
        base_seconds = None
        for setting in settings:
            name, kind, w = setting.name, setting.kind, setting.weight
            # Every setting shares the unguided one's seed: same sizes and noise, sample by sample.
            result = pipe.with_model(setting.model)(
                gc.n_samples,
                setting.terms,
                gc.seed,
                gc.batch_size,
                steps=gc.steps,
                sampler=gc.method,
                grid_power=gc.grid_power,
                sampler_options=gc.sampler_options,
                progress=progress,
            )
            mols, failures, seconds = result.by_index(), result.failures, result.seconds
            settings_tags = {
                "molguide_guidance": kind,
                "molguide_weight": f"{w:g}",
                "molguide_setting": name,
                "molguide_seed": str(gc.seed),
                "molguide_target": target_text,
            }
            for k, mol in enumerate(mols):
                if mol is not None:
                    mol.tags.update(settings_tags, molguide_sample=str(k))
            if kind == "unguided":
                base_seconds = seconds
            predicted = _predict_further(further, mols, diffusion.onehot_scale)
            j = judge(
                mols,
                failures,
                gc.n_samples,
                evaluator,
                evaluator_record,
                target,
                diffusion.onehot_scale,
                novelty_reference,
                gc.xtb,
                calibration,
                progress,
                requested_atoms=sum(result.atom_counts),
            )
            judged[name] = j
            predicted[target.name] = j["evaluator"]
            j["goals"] = predicted
            metrics = dict(j["metrics"])
            metrics["sample_s_per_molecule"] = seconds / gc.n_samples
            metrics["guided_step_cost_ratio"] = seconds / base_seconds if base_seconds else 1.0
            metrics_tags = {}
            if setting.reference is not None:
                metrics.update(paired_report(j, judged[setting.reference], target, reward_record))
                if goals and len(goals) > 1:
                    binnings = {g.property: run.binning(g.property) for g in goals}
                    reference = judged[setting.reference]["goals"]
                    metrics.update(goal_improvements(goals, predicted, reference, binnings, seed=gc.seed))
                metrics_tags = {"molguide.reference": setting.reference}
            with mlflow_run(
                EXPERIMENT,
                name,
                {"molguide.guidance": kind, "molguide.weight": str(w), **metrics_tags},
                nested=True,
            ):
                # Params, not only tags: MLflow's compare view plots metrics against params.
                mlflow.log_params(
                    {
                        "guidance": kind,
                        "weight": w,
                        "t_min": gc.t_min,
                        "t_max": gc.t_max,
                        "target": target_text,
                        "reference": setting.reference or "none",
                        "seed": gc.seed,
                        "n_samples": gc.n_samples,
                        "steps": gc.steps,
                    }
                )
                log_metrics_batch(
                    [(k, v, 0) for k, v in metrics.items() if v is not None and math.isfinite(v)]
                )
                sdf = out_dir / f"{name}.sdf"
                j["write_sdf"](sdf)
                mlflow.log_artifact(str(sdf), "samples")
                mlflow.log_artifact(str(csv_beside(sdf)), "samples")
            results[name] = metrics
            log.info("%s: %s", name, _short(metrics))
        # The parent's metrics are named by the setting they come from (classifier_w2.validity):
        # one unprefixed name would mix settings. The headline setting is a tag.
        parent = {
            f"{n}.{k}": v
            for n in results
            for k, v in results[n].items()
            if k.startswith(SETTING_METRIC_PREFIXES) and v is not None and math.isfinite(v)
        }
        log_metrics_batch([(k, v, 0) for k, v in parent.items()])
        headline = headline_settings(gc, results)
        if headline:
            mlflow.set_tag(HEADLINE_TAG, headline[0])
        units = {p.name: p.unit for p in dataset_of(config.data).properties}
        plot_histograms(judged, target, out_dir / "property_histograms.png", goal_text=target_text)
        plot_sweep(results, out_dir / "improvement_vs_weight.png", unit=units.get(target.name, ""))
        grid = {n: judged[n]["rdkit"]() for n in ("unguided", *headline)}
        plot_molecule_grid(grid, out_dir / "sample_molecules.png", f"evaluator_{target.name}")
        plot_noise_levels(
            noise_rows, out_dir / "noise_levels.png", f"{target.name} classifier", num_classes=target.n_bins
        )
        for png in ("property_histograms", "improvement_vs_weight", "sample_molecules", "noise_levels"):
            mlflow.log_artifact(str(out_dir / f"{png}.png"), "plots")
        summary = {
            "target": target_text,
            "headline": headline,
            "noise_levels": noise_rows,
            "n_samples": gc.n_samples,
            "sampling_steps": gc.steps,
            "trained_steps": run.step("score"),
            "results": results,
        }
        unit = f"({units.get(target.name, '')})"
        table = guidance_table(summary, unit) + "\n\n" + noise_level_table(noise_rows)
        describe_run(f"molguide guide: {config.name}, {target_text}", table)
        mlflow.log_artifact(str(_write_report(config, out_dir, target_text, table)))
        summary["run_id"] = mlflow.active_run().info.run_id
        summary["experiment_id"] = mlflow.active_run().info.experiment_id
    return summary


def headline_settings(gc, results: dict) -> list[str]:
    """The settings at the configured positive weights (not the sweep), in registry order, that were run."""
    names = [setting_name(k, getattr(gc, k)) for k in GUIDANCE_KINDS if getattr(gc, k) > 0]
    return [n for n in names if n in results]


def _write_report(config: RunConfig, out_dir: Path, target_text: str, table: str) -> Path:
    """``guided/report.html``: the guidance table, the plots, the config and the command."""
    import shlex

    from molguide.diagnostics.html_report import write_html_report
    from molguide.runs.config import dump_config

    config_file = out_dir / "resolved_config.yaml"  # never a user's config.yaml
    config_file.write_text(dump_config(config))
    names = ("noise_levels", "property_histograms", "improvement_vs_weight", "sample_molecules")
    return write_html_report(
        out_dir / "report.html",
        f"molguide guide: {config.name}, {target_text}",
        [("Guided against unguided, same seeds", table)],
        [out_dir / f"{name}.png" for name in names],
        dump_config(config),
        f"molguide run guide -c {shlex.quote(str(config_file))}",
    )


def _describe(run: TrainedRun, goals: list[Goal]) -> str:
    """Every goal in its property's unit, e.g. ``gap_eV >= 7.505; mu_D < 2.1``."""
    return "; ".join(goal.describe(run.binning(goal.property)) for goal in goals)


def _further_evaluators(run: TrainedRun, goals: list[Goal] | None) -> dict:
    """The evaluators of the goals after the first, by property (a warning for each one
    the run lacks: that goal is steered but not judged)."""
    found = {}
    for goal in (goals or [])[1:]:
        if run.has("evaluator", goal.property):
            found[goal.property] = (
                run.network("evaluator", goal.property),
                run.record("evaluator", goal.property),
            )
        else:
            log.warning(
                "no evaluator for %s in %s: its goal is not judged (run train-evaluator)",
                goal.property,
                run.source,
            )
    return found


def _predict_further(evaluators: dict, molecules: list, onehot_scale: float) -> dict[str, np.ndarray]:
    """Each further evaluator's prediction per sample (NaN where lost), also set as the
    molecules' ``evaluator_<property>`` so the SDF carries it."""
    from molguide.models.predictor import predict_samples

    predicted = {}
    for prop, (network, record) in evaluators.items():
        values = predict_samples(network, molecules, record.mean, record.std, onehot_scale)
        for mol, value in zip(molecules, values):
            if mol is not None:
                mol.properties[f"evaluator_{prop}"] = float(value)
        predicted[prop] = values
    return predicted


def _xtb_calibration(config: RunConfig, prop: str, n: int = 200) -> tuple[float, float]:
    """xTB -> DFT mapping for ``prop`` measured on n evaluator-half QM9 molecules."""
    from molguide.chem.xtb import calibrate_to_dft

    return calibrate_to_dft(split_molecules(config.data, "evaluator_half", n), prop)


def _short(metrics: dict) -> str:
    keys = (
        "property_improvement",
        "property_improvement_ci_low",
        "property_improvement_ci_high",
        "target_hit_rate",
        "target_hit_rate_unguided",
        "validity",
        "validity_strict",
        "mol_stability",
        "joint_hit_rate",
        "joint_hit_rate_unguided",
    )
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in keys if k in metrics and metrics[k] is not None)

"""The guidance pipelines: train-classifier, train-evaluator, train-reward, and guided sampling.

Protocol (design.md sections 4, 7, 8): the classifier and the reward model train on
the generator half (like the score model); the evaluator, the oracle that judges
generated molecules, trains on the other half. Guided and unguided samples share
seeds (same node counts, same initial and ancestral noise), so improvements are
paired differences with bootstrap intervals. GFN2-xTB judges beside the evaluator,
independent of every learned model.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch

from molguide.chem.xtb import XTB_PROPERTIES
from molguide.components import (
    build_predictor,
    build_score_model,
    diffusion_from_config,
    inference_state,
    load_components,
    load_network,
    log_component,
)
from molguide.config import RunConfig
from molguide.data.graphs import MoleculeBatches
from molguide.data.registry import split_molecules
from molguide.design_pipeline import MoleculeDiffusionPipeline
from molguide.diagnostics.baselines import atom_count_predictor
from molguide.diffusion.process import VPDiffusion
from molguide.diffusion.training import DenoisingObjective
from molguide.guidance.objectives import NoisyClassifierObjective, RegressionObjective
from molguide.guidance.targets import PropertyTarget, reward_weights
from molguide.guidance.terms import ClassifierFreeGuidance, ClassifierGuidance, RewardGuidance, TimeWindow
from molguide.models.predictor import predict_property
from molguide.pipelines.common import (
    bond_labels,
    log_trained_component,
    run_training,
    train_config,
    training_run,
)
from molguide.pipelines.score import _checkpoint_path as score_checkpoint_path
from molguide.tracking import log_config, log_metrics_batch, mlflow_run
from molguide.training import Trainer

log = logging.getLogger(__name__)

EXPERIMENT = "molguide-guidance"


def _path(config: RunConfig, part: str) -> Path:
    return Path(config.output_dir) / part / "last.pt"


def _progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def _diffusion(config: RunConfig) -> VPDiffusion:
    return diffusion_from_config(config.diffusion.model_dump())


def fitted_target(config: RunConfig, values: np.ndarray) -> PropertyTarget:
    """The config's target with bin edges fitted on ``values`` (the generator half)."""
    tc = config.target
    return PropertyTarget(tc.property, tc.n_bins, tc.thresholds, tc.target, tc.target_value).fit(values)


def averaged_copy(trainer: Trainer) -> torch.nn.Module:
    """The trained network with EMA weights, as a copy in eval mode.

    A copy, because the trainer's own model must keep its raw weights: they go into the
    checkpoint that a later, longer run resumes from.
    """
    model = copy.deepcopy(trainer.model)
    model.load_state_dict(trainer.averaged_weights())
    return model.eval()


def _tags(pipeline: str, split: str) -> dict[str, str]:
    return {"molguide.pipeline": pipeline, "molguide.dataset": "qm9", "molguide.split_half": split}


# ----------------------------------------------------------------------------- classifier


def train_classifier(config: RunConfig, progress: bool | None = None) -> dict:
    """Train the noise-level classifier on the generator half; diagnostics on validation molecules."""
    import mlflow

    from molguide.diagnostics.noise_levels import noise_level_diagnostics
    from molguide.diagnostics.plots import plot_noise_levels

    progress = _progress(progress)
    section = config.classifier
    mols = split_molecules(config.data)
    target = fitted_target(config, mols.properties[config.target.property])
    labels = target.labels(mols.properties[config.target.property])
    diffusion = _diffusion(config)
    torch.manual_seed(section.train.seed)  # the initial weights, so a run is reproducible alone
    model = build_predictor(section.model_dump(), target.n_bins, time_input=True)
    ckpt = _path(config, "classifier")
    extra = {
        "network_config": section.model_dump(),
        "out_dim": target.n_bins,
        "time_input": True,
        "target": target.to_dict(),
        "diffusion_config": config.diffusion.model_dump(),
    }
    trainer = Trainer(
        model,
        NoisyClassifierObjective(diffusion, section.grad_penalty),
        MoleculeBatches(mols, label=labels),
        train_config(section.train),
        ckpt,
        extra,
        config.device,
    )
    log.info("classifier: %s; %d training molecules", target.describe(), len(mols))
    with mlflow_run(EXPERIMENT, f"{config.name}-classifier", _tags("train-classifier", config.data.split)):
        log_config(config)
        summary = run_training(trainer, section.train, progress, "train classifier")
        averaged = averaged_copy(trainer)
        held = split_molecules(config.data, "valid", section.holdout)
        rows = noise_level_diagnostics(
            averaged,
            diffusion,
            held,
            target.labels(held.properties[config.target.property]),
            target.target_class,
            progress=progress,
        )
        _log_noise_levels(rows)
        trainer.extra_state["noise_levels"] = [r.as_dict() for r in rows]
        trainer.save()
        mlflow.log_artifact(str(ckpt), "checkpoint")
        log_component("classifier", inference_state(trainer.state_dict()))
        png = ckpt.parent / "noise_levels.png"
        plot_noise_levels(rows, png, f"{config.target.property} classifier")
        mlflow.log_artifact(str(png), "plots")
        summary.update(
            {
                "target": target.describe(),
                "noise_levels": [r.as_dict() for r in rows],
                "run_id": mlflow.active_run().info.run_id,
            }
        )
    return summary


def _log_noise_levels(rows: list) -> list[dict]:
    """Per-bin diagnostics (NoiseLevelRow objects or their stored dicts) with step = bin."""
    import mlflow

    rows = [r.as_dict() if hasattr(r, "as_dict") else r for r in rows]
    keys = (
        "classifier_ce",
        "classifier_accuracy",
        "classifier_ece",
        "guidance_mse_est",
        "guidance_mse_bound",
        "grad_lipschitz",
        "lipschitz_bound",
    )
    log_metrics_batch(
        [(k, d[k], d["bin"]) for d in rows for k in keys if d[k] is not None and math.isfinite(d[k])]
    )
    if rows:
        mlflow.set_tag("molguide.guidance_mse_kind", rows[0]["guidance_mse_kind"])
        mlflow.set_tag("molguide.noise_bins", " ".join(f"{d['t_low']:.2f}" for d in rows))
    return rows


# ----------------------------------------------------------------------------- evaluator


def train_evaluator(config: RunConfig, progress: bool | None = None) -> dict:
    """Train the property evaluator on the evaluator half; log its MAE and the reference rows."""
    import mlflow

    progress = _progress(progress)
    section, prop = config.evaluator, config.target.property
    mols = split_molecules(config.data, "evaluator_half")
    values = mols.properties[prop]
    mean, std = float(values.mean()), float(values.std())
    torch.manual_seed(section.train.seed)
    model = build_predictor(section.model_dump(), 1, time_input=False)
    ckpt = _path(config, "evaluator")
    extra = {
        "network_config": section.model_dump(),
        "out_dim": 1,
        "time_input": False,
        "property": prop,
        "mean": mean,
        "std": std,
    }
    batches = MoleculeBatches(mols, target=(values - mean) / std)
    trainer = Trainer(
        model,
        RegressionObjective(_diffusion(config).onehot_scale),
        batches,
        train_config(section.train),
        ckpt,
        extra,
        config.device,
    )
    with mlflow_run(EXPERIMENT, f"{config.name}-evaluator", _tags("train-evaluator", "evaluator_half")):
        log_config(config)
        summary = run_training(trainer, section.train, progress, "train evaluator")
        model = averaged_copy(trainer)
        # Reference rows on molecules of the generator half (design.md section 8).
        gen = split_molecules(config.data, "generator_half", section.holdout)
        truth = gen.properties[prop]
        pred = predict_property(model, gen, mean, std, _diffusion(config).onehot_scale)
        rng = np.random.default_rng(0)
        rows = {
            "evaluator_mae": float(np.abs(pred - truth).mean()),  # the lower-bound row
            "naive_mae": float(np.abs(rng.permutation(truth) - truth).mean()),
            "atoms_mae": float(np.abs(atom_count_predictor(mols, prop)(gen.num_atoms) - truth).mean()),
            "evaluator_rmse": float(np.sqrt(((pred - truth) ** 2).mean())),
        }
        log_metrics_batch([(k, v, 0) for k, v in rows.items()])
        trainer.extra_state["reference_rows"] = rows
        trainer.save()
        mlflow.log_artifact(str(ckpt), "checkpoint")
        log_component("evaluator", inference_state(trainer.state_dict()))
        summary.update(rows)
        summary["run_id"] = mlflow.active_run().info.run_id
    log.info(
        "evaluator on %d generator-half molecules: MAE %.4f (naive %.4f, #atoms %.4f) %s",
        len(gen),
        rows["evaluator_mae"],
        rows["naive_mae"],
        rows["atoms_mae"],
        prop,
    )
    return summary


# ----------------------------------------------------------------------------- reward model


def train_reward(config: RunConfig, progress: bool | None = None) -> dict:
    """Train the reward-reweighted score model by weighted denoising score matching."""
    progress = _progress(progress)
    section, prop = config.reward, config.target.property
    mols = split_molecules(config.data)
    target = fitted_target(config, mols.properties[prop])
    direction = target.direction or 1.0
    weights, ess_fraction = reward_weights(mols.properties[prop], section.beta, direction, section.clip_z)
    torch.manual_seed(section.train.seed)
    model_config, diffusion_config = config.model.model_dump(), config.diffusion.model_dump()
    base_weights = None
    if section.init_from_score:
        base = score_checkpoint_path(config)
        if not base.exists():
            raise ValueError(f"reward.init_from_score: no score checkpoint at {base}; run train-score first")
        base_network, base_state = load_network(base, "score")
        # The fine-tuned copy is the base network: its architecture and diffusion, not the config's
        # (they differ when the base is a shipped generator, model.pretrained).
        model_config = base_state["model_config"]
        diffusion_config = base_state["diffusion_config"]
        base_weights = base_network.state_dict()
    # A guidance term needs the reward model's score only: no bond-order head to train.
    model_config = {**model_config, "bond_head": False}
    model = build_score_model(model_config)
    if base_weights is not None:
        model.load_state_dict({k: v for k, v in base_weights.items() if not k.startswith("bond_head.")})
    diffusion = diffusion_from_config(diffusion_config)
    ckpt = _path(config, "reward")
    extra = {
        "model_config": model_config,
        "diffusion_config": diffusion_config,
        "property": prop,
        "beta": section.beta,
        "clip_z": section.clip_z,
        "direction": direction,
        "mean": float(mols.properties[prop].mean()),
        "std": float(mols.properties[prop].std()),
        "reward_weight_ess": ess_fraction * len(mols),
    }
    trainer = Trainer(
        model,
        DenoisingObjective(diffusion, weight_key="weight"),
        MoleculeBatches(mols, weight=weights),
        train_config(section.train),
        ckpt,
        extra,
        config.device,
    )
    log.info(
        "reward model: r = exp(%g * %+g * z(%s)), z clipped at %s; ESS %.1f%% of %d molecules",
        section.beta,
        direction,
        prop,
        section.clip_z,
        100 * ess_fraction,
        len(mols),
    )
    tags = _tags("train-reward", config.data.split)
    with training_run(EXPERIMENT, f"{config.name}-reward", tags, config) as run:
        ess = {"reward_weight_ess": ess_fraction * len(mols), "reward_weight_ess_fraction": ess_fraction}
        log_metrics_batch([(k, v, 0) for k, v in ess.items()])
        summary = run_training(trainer, section.train, progress, "train reward")
        summary.update(ess)
        log_trained_component(run, "reward", trainer, summary)
    return summary


# ----------------------------------------------------------------------------- CFG model


def train_cfg(config: RunConfig, progress: bool | None = None) -> dict:
    """Train a conditional score model on (molecule, class one-hot), the label dropped with p_uncond."""
    progress = _progress(progress)
    section = config.cfg
    mols = split_molecules(config.data)
    target = fitted_target(config, mols.properties[config.target.property])
    onehot = np.eye(target.n_bins, dtype=np.float32)[target.labels(mols.properties[config.target.property])]
    model_config = {**config.model.model_dump(), "context_dim": target.n_bins}
    torch.manual_seed(section.train.seed)
    model = build_score_model(model_config)
    diffusion = _diffusion(config)
    ckpt = _path(config, "cfg")
    extra = {
        "model_config": model_config,
        "diffusion_config": config.diffusion.model_dump(),
        "target": target.to_dict(),
        "p_uncond": section.p_uncond,
    }
    objective = DenoisingObjective(diffusion, context_key="context", p_uncond=section.p_uncond)
    bonds = bond_labels(config, mols, model_config, progress)  # CFG's network is the sampler's base
    trainer = Trainer(
        model,
        objective,
        MoleculeBatches(mols, bonds=bonds, context=onehot),
        train_config(section.train),
        ckpt,
        extra,
        config.device,
    )
    with training_run(EXPERIMENT, f"{config.name}-cfg", _tags("train-cfg", config.data.split), config) as run:
        summary = run_training(trainer, section.train, progress, "train CFG model")
        summary["target"] = target.describe()
        log_trained_component(run, "cfg", trainer, summary)
    return summary


# ----------------------------------------------------------------------------- guided sampling


def guided_sample(config: RunConfig, progress: bool | None = None) -> dict:
    """Sample unguided and guided with paired seeds; judge by evaluator and xTB; log the diagnostics."""
    import mlflow

    from molguide.chem.smiles import qm9_training_smiles
    from molguide.diagnostics.noise_levels import noise_level_diagnostics
    from molguide.diagnostics.plots import plot_histograms, plot_molecule_grid, plot_noise_levels, plot_sweep
    from molguide.diagnostics.report import judge, paired_report

    progress = _progress(progress)
    gc = config.guide
    parts = load_components(config.output_dir, config.device)
    score_model, diffusion = parts.network("score"), parts.diffusion
    pipe = MoleculeDiffusionPipeline.from_components(parts)
    classifier, cstate = parts.network("classifier"), parts.states["classifier"]
    target = parts.target
    evaluator, estate = parts.network("evaluator"), parts.states["evaluator"]
    reward_model = parts.networks.get("reward")
    rstate = parts.states.get("reward")
    cfg_model = parts.networks.get("cfg")
    window = TimeWindow(gc.t_min, gc.t_max)
    # (kind, weight, terms, base model): every setting shares the seeds of the unguided one.
    settings: list[tuple[str, float, list, torch.nn.Module]] = [("unguided", 0.0, [], score_model)]
    for w in sorted({gc.classifier, *gc.sweep} - {0.0}):
        term = ClassifierGuidance(classifier, target.target_class, w, window)
        settings.append(("classifier", w, [term], score_model))
    if reward_model is not None:
        for w in sorted({gc.reward, *gc.sweep} - {0.0}):
            term = RewardGuidance(reward_model, diffusion.schedule.sigma, w, window)
            settings.append(("reward", w, [term], score_model))
    elif gc.reward:
        log.warning("no reward model in %s: reward guidance skipped (run train-reward)", config.output_dir)
    if cfg_model is not None:
        label = torch.nn.functional.one_hot(torch.tensor(target.target_class), target.n_bins).float()
        # CFG is judged against the same network's unconditional samples (null label),
        # so the improvement measures the label and w, not a difference between networks.
        settings.append(("cfg_unconditional", 0.0, [], cfg_model))
        for w in sorted({gc.cfg, *gc.sweep}):
            term = ClassifierFreeGuidance(cfg_model, label, diffusion.schedule.sigma, w, window)
            settings.append(("cfg", w, [term], cfg_model))

    calibration = _xtb_calibration(config, target.name) if gc.xtb and target.name in XTB_PROPERTIES else None
    reference = qm9_training_smiles()
    out_dir = Path(config.output_dir) / "guided"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    judged: dict[str, dict] = {}
    with mlflow_run(EXPERIMENT, f"{config.name}-guide", _tags("guide", config.data.split)):
        log_config(config)
        for kind, state in parts.states.items():  # this run id alone loads the designer again
            log_component(kind, state)
        mlflow.set_tag("molguide.target", target.describe())
        if cfg_model is not None:  # the CFG-implied guidance gives the better error estimate
            held = split_molecules(config.data, "valid", gc.diagnostics_molecules)
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
            rows = cstate.get("noise_levels", [])
        noise_rows = _log_noise_levels(rows)
        if rstate is not None and "reward_weight_ess" in rstate:
            log_metrics_batch([("reward_weight_ess", rstate["reward_weight_ess"], 0)])
        base_seconds = None
        for kind, w, terms, base in settings:
            name = kind if kind in ("unguided", "cfg_unconditional") else f"{kind}_w{w:g}"
            # Every setting shares the unguided one's seed: same sizes and noise, sample by sample.
            result = pipe.with_model(base)(
                gc.n_samples,
                terms,
                gc.seed,
                gc.batch_size,
                steps=gc.steps,
                sampler=gc.method,
                grid_power=gc.grid_power,
                progress=progress,
            )
            mols, failures, seconds = result.by_index(), result.failures, result.seconds
            if kind == "unguided":
                base_seconds = seconds
            j = judge(
                mols,
                failures,
                gc.n_samples,
                evaluator,
                estate,
                target,
                diffusion.onehot_scale,
                reference,
                gc.xtb,
                calibration,
                progress,
                requested_atoms=sum(result.atom_counts),
            )
            judged[name] = j
            metrics = dict(j["metrics"])
            metrics["sample_s_per_molecule"] = seconds / gc.n_samples
            metrics["guided_step_cost_ratio"] = seconds / base_seconds if base_seconds else 1.0
            reference = "cfg_unconditional" if kind == "cfg" else "unguided"
            if kind not in ("unguided", "cfg_unconditional"):
                metrics.update(paired_report(j, judged[reference], target, rstate))
                metrics_tags = {"molguide.reference": reference}
            else:
                metrics_tags = {}
            with mlflow_run(
                EXPERIMENT,
                name,
                {"molguide.guidance": kind, "molguide.weight": str(w), **metrics_tags},
                nested=True,
            ):
                log_metrics_batch(
                    [(k, v, 0) for k, v in metrics.items() if v is not None and math.isfinite(v)]
                )
                sdf = out_dir / f"{name}.sdf"
                j["write_sdf"](sdf)
                mlflow.log_artifact(str(sdf), "samples")
            results[name] = metrics
            log.info("%s: %s", name, _short(metrics))
        main = [n for n in results if n not in ("unguided", "cfg_unconditional")]
        parent = {
            f"{n}.{k}": v
            for n in main
            for k, v in results[n].items()
            if k.startswith(("property_improvement", "target_hit_rate", "reward_improvement"))
        }
        log_metrics_batch([(k, v, 0) for k, v in parent.items() if math.isfinite(v)])
        headline = headline_settings(gc, results)
        if headline:  # the parent run carries design.md's metric names for the first headline setting
            log_metrics_batch(
                [
                    (k, v, 0)
                    for k, v in results[headline[0]].items()
                    if k.startswith(
                        ("property_improvement", "target_hit_rate", "reward_improvement", "inv_prob")
                    )
                    and math.isfinite(v)
                ]
            )
        plot_histograms(judged, target, out_dir / "property_histograms.png")
        plot_sweep(results, out_dir / "improvement_vs_weight.png")
        grid = {n: judged[n]["rdkit"]() for n in ("unguided", *headline)}
        plot_molecule_grid(grid, out_dir / "sample_molecules.png", f"evaluator_{target.name}")
        plot_noise_levels(noise_rows, out_dir / "noise_levels.png", f"{target.name} classifier")
        for png in ("property_histograms", "improvement_vs_weight", "sample_molecules", "noise_levels"):
            mlflow.log_artifact(str(out_dir / f"{png}.png"), "plots")
        run_id = mlflow.active_run().info.run_id
    return {
        "target": target.describe(),
        "headline": headline,
        "noise_levels": noise_rows,
        "n_samples": gc.n_samples,
        "sampling_steps": gc.steps,
        "trained_steps": int(parts.states["score"]["step"]),
        "results": results,
        "run_id": run_id,
    }


def headline_settings(gc, results: dict) -> list[str]:
    """The settings at the configured weights (not the sweep), classifier first, that were run."""
    names = [
        f"{kind}_w{getattr(gc, kind):g}" for kind in ("classifier", "reward", "cfg") if getattr(gc, kind) > 0
    ]
    return [n for n in names if n in results]


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
    )
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in keys if k in metrics and metrics[k] is not None)

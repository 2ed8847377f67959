"""The score-model pipelines: ``train-score`` and ``sample`` (unconditional generation)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from molguide.components import build_score_model, diffusion_from_config, load_network
from molguide.config import RunConfig
from molguide.data.molecules import MoleculeSet
from molguide.data.registry import split_molecules
from molguide.design_pipeline import MoleculeDiffusionPipeline
from molguide.diffusion.nodes import NodeCountDistribution
from molguide.diffusion.training import DiffusionTrainer
from molguide.pipelines.common import (
    bond_labels,
    log_trained_component,
    run_training,
    train_config,
    training_run,
)
from molguide.tracking import log_config, log_metrics_batch, mlflow_run

log = logging.getLogger(__name__)

EXPERIMENT = "molguide-score"


def training_molecules(config: RunConfig) -> MoleculeSet:
    """The split that trains the generator (EDM protocol), optionally cut or without H."""
    return split_molecules(config.data)


def _checkpoint_path(config: RunConfig) -> Path:
    return Path(config.output_dir) / "score" / "last.pt"


def use_pretrained(config: RunConfig) -> dict:
    """``model.pretrained``: write the saved model as ``output_dir/score/last.pt`` (the
    checkpoint every later step reads), so nothing is trained; returns the summary."""
    from molguide.checkpoint import save_checkpoint
    from molguide.pretrained import load_pretrained

    loaded = load_pretrained(config.model.pretrained)
    state = loaded.component_state()
    weights = state.pop("weights")
    steps = int(state["training"].get("steps", 0))
    ema = {f"module.{k}": v for k, v in weights.items()}
    ema["n_averaged"] = torch.tensor(steps, dtype=torch.long)
    checkpoint = {**state, "model": weights, "ema": ema, "step": steps, "pretrained": config.model.pretrained}
    path = _checkpoint_path(config)
    save_checkpoint(checkpoint, path)
    log.info("score model: %s (%d training steps), not trained here -> %s", loaded.source, steps, path)
    summary = {
        "pretrained": loaded.source,
        "steps": steps,
        "checkpoint": str(path),
        "training": state["training"],
    }
    # A run in MLflow all the same: which generator this experiment used, and its model.
    data = state["training"].get("data", {})
    tags = {
        "molguide.pipeline": "train-score",
        "molguide.dataset": data.get("dataset", "qm9"),
        "molguide.split_half": data.get("split", "unknown"),
        "molguide.pretrained": loaded.source,
    }
    with training_run(EXPERIMENT, f"{config.name}-pretrained", tags, config) as run:
        if run is not None:
            import mlflow

            from molguide.components import inference_state, log_component

            record = state["training"]
            mlflow.log_params(
                {f"pretrained.{k}": record[k] for k in ("steps", "epochs", "cpu_hours") if k in record}
            )
            log_component("score", inference_state(checkpoint))
            summary["run_id"] = run.info.run_id
    return summary


def train_score(config: RunConfig, progress: bool | None = None) -> dict:
    """Train the score model on the generator half (or take ``model.pretrained``); returns a summary."""
    import mlflow

    if config.model.pretrained:
        return use_pretrained(config)
    progress = sys.stderr.isatty() if progress is None else progress
    torch.manual_seed(config.train.seed)
    mols = training_molecules(config)
    model = build_score_model(config.model.model_dump())
    diffusion = diffusion_from_config(config.diffusion.model_dump())
    nodes = NodeCountDistribution(mols.num_atoms)
    ckpt = _checkpoint_path(config)
    extra = {
        "model_config": config.model.model_dump(),
        "diffusion_config": config.diffusion.model_dump(),
        "node_counts": nodes.state_dict(),
        "data_config": config.data.model_dump(),
        "n_molecules": len(mols),
    }
    bonds = bond_labels(config, mols, config.model.model_dump(), progress)
    trainer = DiffusionTrainer(
        model, diffusion, mols, train_config(config.train), ckpt, extra, config.device, bonds
    )
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "training %s score model (%d parameters) on %d molecules (%s)",
        config.model.backbone,
        n_params,
        len(mols),
        config.data.split,
    )

    tags = {"molguide.pipeline": "train-score", "molguide.dataset": "qm9"}
    tags["molguide.split_half"] = config.data.split
    with training_run(EXPERIMENT, f"{config.name}-train", tags, config) as run:
        if run is not None:
            mlflow.log_param("n_parameters", n_params)
        summary = run_training(trainer, config.train, progress, "train score")
        summary.update({"n_parameters": n_params, "n_molecules": len(mols)})
        log_trained_component(run, "score", trainer, summary)
    return summary


def load_score_model(path: str | Path, use_ema: bool = True, device: str = "cpu"):
    """(model, diffusion, node distribution, checkpoint state) from a train-score checkpoint."""
    model, state = load_network(path, "score", device, use_ema)
    diffusion = diffusion_from_config(state["diffusion_config"])
    nodes = NodeCountDistribution.from_state_dict(state["node_counts"])
    return model, diffusion, nodes, state


def sample_and_evaluate(config: RunConfig, progress: bool | None = None) -> dict:
    """Sample from a trained score model at each step count in ``sample.steps`` and evaluate.

    One nested MLflow run per step count with `validity` (EDM's), `validity_strict`,
    `atom_stability`, `mol_stability`, `uniqueness`, `novelty`, `sample_s_per_molecule`
    (lost samples count as invalid and unstable); the SDF of the samples (with
    per-molecule results as SD tags) as an artifact.
    """
    import mlflow

    from molguide.chem.evaluate import evaluate, over_requested, write_annotated_sdf
    from molguide.chem.smiles import qm9_training_smiles

    progress = sys.stderr.isatty() if progress is None else progress
    sc = config.sample
    ckpt = Path(sc.checkpoint) if sc.checkpoint else _checkpoint_path(config)
    model, diffusion, nodes, state = load_score_model(ckpt, sc.use_ema, config.device)
    pipe = MoleculeDiffusionPipeline(model, diffusion, nodes, device=config.device)
    reference = qm9_training_smiles()
    out_dir = Path(config.output_dir) / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    with mlflow_run(
        EXPERIMENT,
        f"{config.name}-sample",
        {
            "molguide.pipeline": "sample",
            "molguide.checkpoint": str(ckpt),
            "molguide.dataset": config.data.dataset,
            "molguide.split_half": config.data.split,
        },
    ):
        log_config(config)
        mlflow.log_param("trained_steps", int(state["step"]))
        for steps in sc.steps:
            # Sizes and noise from one generator seeded with sample.seed, as before the pipeline.
            gen = torch.Generator().manual_seed(sc.seed)
            counts = nodes.sample(sc.n_samples, gen)
            result = pipe(
                counts,
                batch_size=sc.batch_size,
                generator=gen,
                steps=steps,
                sampler=sc.method,
                grid_power=sc.grid_power,
                progress=progress,
            )
            molecules, seconds = result.molecules, result.seconds
            ev = evaluate(molecules, reference_smiles=reference, xtb=sc.xtb, progress=progress)
            metrics = over_requested(ev.metrics, molecules, sc.n_samples, sum(result.atom_counts))
            metrics["sample_s_per_molecule"] = seconds / sc.n_samples
            tag = f"{sc.method}{steps}"
            with mlflow_run(
                EXPERIMENT,
                f"{config.name}-{tag}",
                {"molguide.sampler": sc.method, "molguide.steps": str(steps)},
                nested=True,
            ):
                log_metrics_batch([(k, v, 0) for k, v in metrics.items() if v is not None])
                sdf = out_dir / f"samples_{tag}.sdf"
                write_annotated_sdf(ev, molecules, sdf)
                mlflow.log_artifact(str(sdf), "samples")
            results[tag] = metrics
            log.info(
                "%s: %s", tag, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            )
    return {
        "trained_steps": int(state["step"]),
        "results": results,
        "checkpoint": str(ckpt),
        "train_config": state.get("train_config", {}),
    }

"""The ``sample`` pipeline: unconditional generation from a trained score model, judged."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from molguide.data.registry import dataset_label, dataset_of
from molguide.generation.pipeline import MoleculeDiffusionPipeline
from molguide.runs.config import RunConfig
from molguide.runs.tracking import log_config, log_metrics_batch, mlflow_run
from molguide.storage.trained_run import TrainedRun

log = logging.getLogger(__name__)

EXPERIMENT = "molguide-score"


def sample_and_evaluate(config: RunConfig, progress: bool | None = None) -> dict:
    """Sample from a trained score model at each step count in ``sample.steps`` and evaluate.

    One nested MLflow run per step count with `validity` (EDM's), `validity_strict`,
    `atom_stability`, `mol_stability`, `uniqueness`, `novelty`, `sample_s_per_molecule`
    (lost samples count as invalid and unstable); the SDF of the samples (with
    per-molecule results as SD tags) as an artifact.
    """
    import mlflow

    from molguide.chem.evaluate import evaluate, over_requested, write_annotated_sdf

    progress = sys.stderr.isatty() if progress is None else progress
    sc = config.sample
    source = sc.model or config.output_dir
    run = TrainedRun.from_pretrained(source, config.device)
    # the sample section's sampler settings, not the model's recommended ones
    pipe = MoleculeDiffusionPipeline(
        run.network("score"), run.diffusion, run.nodes, run.atom_types, device=config.device
    )
    reference = dataset_of(config.data).training_smiles()
    out_dir = Path(config.output_dir) / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    with mlflow_run(
        EXPERIMENT,
        f"{config.name}-sample",
        {
            "molguide.pipeline": "sample",
            "molguide.model": str(source),
            "molguide.dataset": dataset_label(config.data),
            "molguide.split_half": config.data.split,
        },
    ):
        log_config(config)
        mlflow.log_param("trained_steps", run.step("score"))
        for steps in sc.steps:
            # Sizes and noise from one generator seeded with sample.seed, as before the pipeline.
            gen = torch.Generator().manual_seed(sc.seed)
            counts = run.nodes.sample(sc.n_samples, gen)
            result = pipe(
                counts,
                batch_size=sc.batch_size,
                generator=gen,
                steps=steps,
                sampler=sc.method,
                grid_power=sc.grid_power,
                sampler_options=sc.sampler_options,
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
                mlflow.log_artifact(str(sdf.with_suffix(".csv")), "samples")
            results[tag] = metrics
            log.info(
                "%s: %s", tag, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            )
    return {
        "trained_steps": run.step("score"),
        "results": results,
        "model": str(source),
        "training": run.record("score").training,
    }

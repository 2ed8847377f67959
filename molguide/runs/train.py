"""The training pipelines: ``train-score``, ``train-classifier``, ``train-evaluator``,
``train-reward`` and ``train-cfg``, all one entry, :func:`train_network`.

Every kind runs the same steps: take the kind's split of the data (the generator half,
or the evaluator half for the evaluator; docs/protocol.md), seed the initial
weights with the kind's ``train.seed``, let the kind's spec
(:mod:`molguide.runs.training_specs`) build the network, its objective, its batches and its
checkpoint's metadata, train with resume and time box under an MLflow run, let the
spec add its diagnostics, then export the network beside its checkpoint
(``<output_dir>/<kind>/config.json`` + ``model.safetensors``, EMA weights; the run
folder's index ``molguide_run.json`` updated: :mod:`molguide.storage.trained_run`) and log
the checkpoint and the exported network (``trained_run/<kind>``) to MLflow.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from molguide.data.registry import dataset_label, describe_split, split_molecules
from molguide.runs.config import RunConfig
from molguide.runs.model_registry import log_network_model, registered_name
from molguide.runs.tracked_training import log_trained_component, resume_if_asked, run_training, training_run
from molguide.runs.tracking import log_dataset, log_metrics_batch
from molguide.runs.training_specs import (
    TRAINING_SPECS,
    atom_types,
    data_source,
    resume_signature,
    train_config,
)
from molguide.training.trainer import RESUME_SIGNATURE, Trainer

log = logging.getLogger(__name__)


PER_PROPERTY_KINDS = ("classifier", "evaluator", "regressor")


def train_network(kind: str, config: RunConfig, progress: bool | None = None) -> dict:
    """Train the network of ``kind`` (a key of :data:`TRAINING_SPECS`); returns its summary.

    With several properties in ``target.goals``, a classifier, evaluator or regressor is
    trained per property: the first in ``<kind>/``, each further one in
    ``<kind>.<property>/`` (its summary under ``parts``), so the run folder loads as one
    run guided towards every goal.
    """
    if kind == "score" and config.model.pretrained:
        return use_pretrained(config)
    summary = _train_one(kind, config, progress, kind)
    if kind in PER_PROPERTY_KINDS:
        for prop in config.target.further_properties():
            one = config.model_copy(update={"target": config.target.for_property(prop)})
            name = f"{kind}.{prop}"
            summary.setdefault("parts", {})[name] = _train_one(kind, one, progress, name)
    return summary


def _train_one(kind: str, config: RunConfig, progress: bool | None, folder: str) -> dict:
    """Train one network of ``kind`` into ``<output_dir>/<folder>``."""
    spec = TRAINING_SPECS[kind]
    progress = sys.stderr.isatty() if progress is None else progress
    section = spec.settings(config)
    torch.manual_seed(section.seed)  # the initial weights, so a run is reproducible alone
    labelled = config.target.property if spec.labelled else None
    mols = split_molecules(config.data, spec.split, labelled=labelled)
    job = spec.prepare(config, mols, progress)
    metadata = {"model_config": job.model.config, **job.metadata}
    if job.diffusion is not None:
        metadata["diffusion_config"] = job.diffusion.config
    settings = train_config(section)
    metadata["run_config"] = config.model_dump()  # for the record; resuming checks the signature
    metadata[RESUME_SIGNATURE] = resume_signature(config, spec, job, settings)
    checkpoint = Path(config.output_dir) / folder / "last.pt"
    trainer = Trainer(
        job.model,
        job.objective,
        job.batches,
        settings,
        checkpoint,
        metadata,
        config.device,
        resume_setting=f"{spec.train_section}.resume",
    )
    label = f"train {kind}" if folder == kind else f"train {kind} ({config.target.property})"
    log.info("%s", job.message)
    resume_if_asked(trainer, section, label, spec.start_from(config) if spec.start_from else None)
    tags = {
        "molguide.pipeline": f"train-{kind}",
        "molguide.dataset": dataset_label(config.data),
        "molguide.split_half": spec.split or config.data.split,
    }
    run_name = f"{config.name}-{spec.run_suffix}" + ("" if folder == kind else f"-{config.target.property}")
    with training_run(spec.experiment, run_name, tags, config) as run:
        if run is not None and job.params:
            import mlflow

            mlflow.log_params(job.params)
        split = spec.split or config.data.split
        log_dataset(mols, describe_split(config.data, split), "training", data_source())
        log_metrics_batch([(k, v, 0) for k, v in job.metrics.items()])
        summary = run_training(trainer, section, progress, label)
        summary.update(job.summary)
        if spec.finish is not None:
            summary.update(spec.finish(config, trainer, job, progress))
            trainer.save()  # with what finish measured
        log_trained_component(run, kind, trainer, summary, registered_name(config.name, folder))
    return summary


def train_score(config: RunConfig, progress: bool | None = None) -> dict:
    """``train-score``: the score model on the generator half (or ``model.pretrained``)."""
    return train_network("score", config, progress)


def train_classifier(config: RunConfig, progress: bool | None = None) -> dict:
    """``train-classifier``: the noise-level classifier, with its per-noise-level diagnostics."""
    return train_network("classifier", config, progress)


def train_evaluator(config: RunConfig, progress: bool | None = None) -> dict:
    """``train-evaluator``: the property evaluator on the evaluator half, with the reference rows."""
    return train_network("evaluator", config, progress)


def train_reward(config: RunConfig, progress: bool | None = None) -> dict:
    """``train-reward``: the reward-reweighted score model (weighted denoising score matching)."""
    return train_network("reward", config, progress)


def train_cfg(config: RunConfig, progress: bool | None = None) -> dict:
    """``train-cfg``: the conditional score model, the label dropped with ``cfg.p_uncond``."""
    return train_network("cfg", config, progress)


# ----------------------------------------------------------------------------- a shipped generator


def use_pretrained(config: RunConfig) -> dict:
    """``model.pretrained``: the saved generator becomes the run's score network
    (``output_dir/score``, exported form, no training checkpoint), so nothing is trained;
    returns the summary."""
    from molguide.storage.trained_run import TrainedRun, log_trained_network, save_network, write_index

    atom_types(config)  # the data's elements must be among the generator's
    loaded = TrainedRun.from_pretrained(config.model.pretrained)
    score, record, steps = loaded.network("score"), loaded.record("score"), loaded.step("score")
    folder = Path(config.output_dir) / "score"
    save_network(folder, "score", score, record, steps)
    write_index(config.output_dir)
    log.info("score model: %s (%d training steps), not trained here -> %s", loaded.source, steps, folder)
    summary = {
        "pretrained": loaded.source,
        "steps": steps,
        "folder": str(folder),
        "training": record.training,
    }
    # A run in MLflow all the same: which generator this experiment used, and its model.
    data = record.training.get("data", {})
    tags = {
        "molguide.pipeline": "train-score",
        "molguide.dataset": data.get("dataset", dataset_label(config.data)),
        "molguide.split_half": data.get("split", "unknown"),
        "molguide.pretrained": loaded.source,
    }
    with training_run("molguide-score", f"{config.name}-pretrained", tags, config) as run:
        if run is not None:
            import mlflow

            mlflow.log_params(
                {
                    f"pretrained.{k}": record.training[k]
                    for k in ("steps", "epochs", "cpu_hours")
                    if k in record.training
                }
            )
            log_trained_network(folder)
            name = registered_name(config.name, "score")
            version = log_network_model(folder, name)
            if version is not None:
                summary["registered_model"] = f"models:/{name}/{version}"
            summary["run_id"] = run.info.run_id
    return summary

"""The training pipelines: ``train-score``, ``train-classifier``, ``train-evaluator``,
``train-reward`` and ``train-cfg``, all one entry, :func:`train_network`.

Every kind runs the same steps: take the kind's split of the data (the generator half,
or the evaluator half for the evaluator; design.md section 8), seed the initial
weights with the kind's ``train.seed``, let the kind's spec
(:mod:`molguide.training_specs`) build the network, its objective, its batches and its
checkpoint's metadata, train with resume and time box under an MLflow run, let the
spec add its diagnostics, and log the checkpoint and the inference weights
(``models/<kind>``).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from molguide import distributed
from molguide.config import RunConfig, TrainSection
from molguide.datasets import split_molecules
from molguide.networks import inference_state
from molguide.tracking import log_config, log_metrics_batch, mlflow_run
from molguide.training import StepLog, Trainer
from molguide.training_specs import TRAINING_SPECS, train_config

log = logging.getLogger(__name__)


def train_network(kind: str, config: RunConfig, progress: bool | None = None) -> dict:
    """Train the network of ``kind`` (a key of :data:`TRAINING_SPECS`); returns its summary."""
    if kind == "score" and config.model.pretrained:
        return use_pretrained(config)
    spec = TRAINING_SPECS[kind]
    progress = sys.stderr.isatty() if progress is None else progress
    section = spec.train_section(config)
    torch.manual_seed(section.seed)  # the initial weights, so a run is reproducible alone
    mols = split_molecules(config.data, spec.split)
    job = spec.prepare(config, mols, progress)
    metadata = {"model_config": job.model.config, **job.metadata}
    if job.diffusion is not None:
        metadata["diffusion_config"] = job.diffusion.config
    checkpoint = Path(config.output_dir) / kind / "last.pt"
    trainer = Trainer(
        job.model,
        job.objective,
        job.batches,
        train_config(section),
        checkpoint,
        metadata,
        config.device,
    )
    log.info("%s", job.message)
    tags = {
        "molguide.pipeline": f"train-{kind}",
        "molguide.dataset": config.data.dataset,
        "molguide.split_half": spec.split or config.data.split,
    }
    with training_run(spec.experiment, f"{config.name}-{spec.run_suffix}", tags, config) as run:
        if run is not None and job.params:
            import mlflow

            mlflow.log_params(job.params)
        log_metrics_batch([(k, v, 0) for k, v in job.metrics.items()])
        summary = run_training(trainer, section, progress, f"train {kind}")
        summary.update(job.summary)
        if spec.finish is not None:
            summary.update(spec.finish(config, trainer, job, progress))
            trainer.save()  # with what finish measured
        log_trained_component(run, kind, trainer, summary)
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


# ----------------------------------------------------------------------------- the shared loop


def run_training(trainer: Trainer, section: TrainSection, progress: bool, desc: str) -> dict:
    """Resume when asked and possible, train (time-boxed by ``max_minutes``), log to the active run.

    Logs ``loss``, ``grad_norm``, ``lr``, ``molecules_per_s`` and the objective's extras
    per step in batches, then ``train_steps_per_s`` and ``final_loss``.
    """
    ckpt = trainer.checkpoint_path
    if section.resume and ckpt is not None and ckpt.exists():
        trainer.resume()
        log.info("%s: resuming %s at step %d of %d", desc, ckpt, trainer.step, section.steps)

    last_line = [time.monotonic()]

    def on_log(entries: list[StepLog]) -> None:
        # Without a progress bar (logs, CI), a line every 30 s shows the run is alive.
        if not progress and time.monotonic() - last_line[0] > 30:
            last_line[0] = time.monotonic()
            loss = float(np.mean([e.loss for e in entries]))
            log.info("%s: step %d of %d, loss %.4f", desc, entries[-1].step, section.steps, loss)
        rows = []
        for e in entries:
            rows += [("loss", e.loss, e.step), ("grad_norm", e.grad_norm, e.step), ("lr", e.lr, e.step)]
            rows += [(k, v, e.step) for k, v in e.extras.items()]
        rows.append(
            ("molecules_per_s", float(np.mean([e.molecules_per_s for e in entries])), entries[-1].step)
        )
        log_metrics_batch(rows)

    start_step, t0 = trainer.step, time.perf_counter()
    deadline = time.monotonic() + 60 * section.max_minutes if section.max_minutes else None
    trainer.train(section.steps, on_log, progress, deadline, desc=desc)
    elapsed = time.perf_counter() - t0
    done = trainer.step - start_step
    summary = {
        "steps": trainer.step,
        "train_steps_per_s": done / elapsed if elapsed > 0 and done else math.nan,
        "final_loss": trainer.recent_loss(),
        "finished": trainer.step >= section.steps,  # False: stopped by max_minutes
        "minutes": elapsed / 60,
        "checkpoint": str(ckpt) if ckpt else None,
    }
    log_metrics_batch(
        [
            ("train_steps_per_s", summary["train_steps_per_s"], trainer.step),
            ("final_loss", summary["final_loss"], trainer.step),
        ]
    )
    log.info(
        "%s: %d steps in %.1f min, final loss %.4f",
        desc,
        trainer.step,
        summary["minutes"],
        summary["final_loss"],
    )
    return summary


@contextmanager
def training_run(experiment: str, run_name: str, tags: Mapping[str, str], config: RunConfig) -> Iterator:
    """The MLflow run of a training pipeline, with its resolved config; yields the run.

    In a data-parallel job only rank 0 logs: the other processes get ``None`` and
    train without touching the tracking store (their metric batches are no-ops).
    """
    if not distributed.context().is_main:
        yield None
        return
    with mlflow_run(experiment, run_name, tags) as run:
        log_config(config)
        yield run


def log_trained_component(run, kind: str, trainer: Trainer, summary: dict) -> dict:
    """Log the finished checkpoint and the inference weights (``models/<kind>``) to ``run``.

    Adds ``run_id`` to ``summary``; does nothing on data-parallel ranks other than 0.
    """
    import mlflow

    from molguide.components import log_component

    if run is None:
        return summary
    mlflow.log_artifact(str(trainer.checkpoint_path), "checkpoint")
    log_component(kind, inference_state(trainer.state_dict()))
    summary["run_id"] = run.info.run_id
    return summary


# ----------------------------------------------------------------------------- a shipped generator


def use_pretrained(config: RunConfig) -> dict:
    """``model.pretrained``: write the saved model as ``output_dir/score/last.pt`` (the
    checkpoint every later step reads), so nothing is trained; returns the summary."""
    from molguide.checkpoint import save_checkpoint
    from molguide.components import log_component
    from molguide.pretrained import load_pretrained

    loaded = load_pretrained(config.model.pretrained)
    checkpoint = {**loaded.training_checkpoint(), "pretrained": config.model.pretrained}
    state, steps = loaded.component_state(), int(checkpoint["step"])
    path = Path(config.output_dir) / "score" / "last.pt"
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
        "molguide.dataset": data.get("dataset", config.data.dataset),
        "molguide.split_half": data.get("split", "unknown"),
        "molguide.pretrained": loaded.source,
    }
    with training_run("molguide-score", f"{config.name}-pretrained", tags, config) as run:
        if run is not None:
            import mlflow

            record = state["training"]
            mlflow.log_params(
                {f"pretrained.{k}": record[k] for k in ("steps", "epochs", "cpu_hours") if k in record}
            )
            log_component("score", inference_state(checkpoint))
            summary["run_id"] = run.info.run_id
    return summary

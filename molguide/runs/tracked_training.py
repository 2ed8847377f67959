"""A training run under MLflow: resume, time box, batched metric logging, the finished model logged.

:func:`run_training` drives a :class:`~molguide.training.trainer.Trainer` (resuming from its
checkpoint when asked, stopping at ``max_minutes`` with a checkpoint) and logs its steps
to the active MLflow run; :func:`training_run` opens that run (rank 0 only in
data-parallel jobs); :func:`log_trained_component` logs the checkpoint and the inference
weights. The training pipelines (:mod:`molguide.runs.train`) compose them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from molguide.runs.config import RunConfig, TrainSection
from molguide.runs.tracking import log_config, log_metrics_batch, mlflow_run
from molguide.training import distributed
from molguide.training.trainer import StepLog, Trainer

log = logging.getLogger(__name__)


def resume_if_asked(trainer: Trainer, section: TrainSection, desc: str, init_from: str | None = None) -> None:
    """Continue from the trainer's checkpoint when ``section.resume`` and it exists, else
    start from the weights of ``init_from`` (default: ``section.init_from``) when given.

    Called before the MLflow run opens: a checkpoint that does not fit (another config,
    damaged) stops the command with one line and leaves no failed run behind.
    """
    ckpt = trainer.checkpoint_path
    if section.resume and ckpt is not None and ckpt.exists():
        trainer.resume()
        log.info("%s: resuming %s at step %d of %d", desc, ckpt, trainer.step, section.steps)
    elif init_from or getattr(section, "init_from", None):
        source = init_from or section.init_from
        warm_start(trainer, source)
        log.info("%s: starting from the weights of %s", desc, source)


def read_warm_start(source: str) -> tuple[dict, dict, dict]:
    """The EMA weights, the network config (defaults filled) and a record (steps, CPU
    seconds) of a score network to start from: a training checkpoint, a saved model folder
    or a shipped name."""
    from pathlib import Path

    from molguide.storage.checkpoints import CheckpointError, ema_weights, load_checkpoint
    from molguide.storage.trained_run import SHIPPED, TrainedRun

    if str(source) in SHIPPED or Path(source).is_dir():
        loaded = TrainedRun.from_pretrained(source)
        network = loaded.network("score")
        training = loaded.record("score").training
        record = {"steps": training.get("steps"), "cpu_seconds": 3600 * training.get("cpu_hours", 0.0)}
        return network.state_dict(), dict(network.config), record
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(
            f"train.init_from: {source} is neither a checkpoint, a model folder nor a shipped name"
        )
    state = load_checkpoint(path)
    if "ema" not in state:
        raise CheckpointError(f"train.init_from: {path} is not a training checkpoint (no EMA weights)")
    if state.get("model_config") is None:
        raise CheckpointError(f"train.init_from: {path} does not record its network's config")
    record = {"steps": int(state.get("step", 0)), "cpu_seconds": float(state.get("cpu_seconds", 0.0))}
    return ema_weights(state["ema"]), dict(state["model_config"]), record


def warm_start_atom_types(source: str) -> tuple[int, ...]:
    """The atom types of the score network ``train.init_from`` names (QM9's when a
    checkpoint does not record them)."""
    from pathlib import Path

    import torch

    from molguide.data.elements import QM9_ATOMIC_NUMBERS
    from molguide.storage.checkpoints import CheckpointError, load_checkpoint
    from molguide.storage.trained_run import SHIPPED, TrainedRun

    if str(source) in SHIPPED or Path(source).is_dir():
        with torch.random.fork_rng(devices=[]):  # loading builds a network: seeded weights stay
            return TrainedRun.from_pretrained(source).atom_types
    if not Path(source).is_file():
        raise CheckpointError(
            f"train.init_from: {source} is neither a checkpoint, a model folder nor a shipped name"
        )
    state = load_checkpoint(Path(source))
    if "atom_types" not in state and int(state.get("model_config", {}).get("num_atom_types", 5)) != 5:
        raise CheckpointError(f"train.init_from: {source} does not record its atom types")
    return tuple(int(z) for z in state.get("atom_types", QM9_ATOMIC_NUMBERS))


def warm_start(trainer: Trainer, source: str) -> dict:
    """Start ``trainer`` (a fresh score-network run) from the EMA weights of ``source``
    (:func:`read_warm_start`). A network of the same config loads them as they are; a
    wider or deeper EGNN grows from them (:func:`molguide.models.growth.grow_state`), a
    conditional one (CFG) gains zero context inputs
    (:func:`molguide.models.growth.add_context`), one trained to keep atoms a zero flag input
    (:func:`molguide.models.growth.add_fixed_flag`): the same function at step 0. The
    optimiser starts afresh. What the source was (its steps and CPU time) is recorded in
    the run's checkpoints as ``warm_start``; returns that record."""
    from molguide.models.growth import add_atom_types, add_context, add_fixed_flag, grow_state

    config = getattr(trainer.model, "config", None)
    if config is None:
        raise ValueError(
            "train.init_from: only networks that describe themselves (score networks) warm-start"
        )
    weights, source_config, record = read_warm_start(source)
    source_config = {"num_atom_types": config["num_atom_types"], **source_config}
    target_types = trainer.extra_state.get("atom_types")
    if target_types is not None:  # channel k must mean the same element in both networks
        source_types = warm_start_atom_types(source)
        if tuple(target_types[: len(source_types)]) != tuple(source_types):
            raise ValueError(
                f"train.init_from: {source} reads atom types {list(source_types)}; this run's are "
                f"{list(target_types)}: they must start with the source's, in its order"
            )
    if source_config == config:
        init = {k: v.clone() for k, v in weights.items()}
    elif config.get("context_dim") and not source_config.get("context_dim"):
        init = add_context(weights, source_config, trainer.model)
    elif config.get("fixed_atoms") and not source_config.get("fixed_atoms"):
        init = add_fixed_flag(weights, source_config, trainer.model)
    elif int(config["num_atom_types"]) > int(source_config["num_atom_types"]):  # a user's new elements
        init = add_atom_types(weights, source_config, trainer.model)
    else:
        init = grow_state(weights, source_config, trainer.model)
    trainer.model.load_state_dict(init)
    trainer.ema.module.load_state_dict(init)
    record = {"source": str(source), "model_config": source_config, **record}
    trainer.extra_state["warm_start"] = record
    return record


def run_training(trainer: Trainer, section: TrainSection, progress: bool, desc: str) -> dict:
    """Train (time-boxed by ``max_minutes``; resumed by :func:`resume_if_asked`), log to the
    active run.

    Logs ``loss``, ``grad_norm``, ``lr``, ``molecules_per_s`` and the objective's extras
    per step in batches, then ``train_steps_per_s`` and ``final_loss``.
    """
    ckpt = trainer.checkpoint_path
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


def log_trained_component(
    run, kind: str, trainer: Trainer, summary: dict, register_as: str | None = None
) -> dict:
    """Export the trained network beside its checkpoint (``<kind>/config.json`` +
    ``model.safetensors``, EMA weights), update the run folder's index, and log the
    checkpoint and the exported network (``trained_run/<kind>``) to ``run``; with
    ``register_as``, also as an MLflow model registered under that name
    (:mod:`molguide.runs.model_registry`).

    Adds ``run_id`` (and ``registered_model``) to ``summary``; does nothing on
    data-parallel ranks other than 0.
    """
    import mlflow

    from molguide.storage.trained_run import export_checkpoint, log_trained_network, write_index

    if run is None:
        return summary
    folder = export_checkpoint(trainer.state_dict(), kind, trainer.checkpoint_path.parent)
    write_index(folder.parent)
    mlflow.log_artifact(str(trainer.checkpoint_path), "checkpoint")
    log_trained_network(folder)
    if register_as:
        from molguide.runs.model_registry import log_network_model

        version = log_network_model(folder, register_as)
        if version is not None:
            summary["registered_model"] = f"models:/{register_as}/{version}"
    summary["run_id"] = run.info.run_id
    return summary

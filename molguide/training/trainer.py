"""One training loop for every network molguide trains: score, classifier, evaluator, reward.

A run is (model, objective, batch source, config). The objective turns a batch into
a loss; the batch source turns indices into tensors. The loop adds what every run
needs: warm-up, AdamW (amsgrad), gradient clipping, EMA weights, batched log
entries, a deadline, atomic checkpoints and exact resume.

Randomness is derived from (seed, step): the data order of epoch e is a permutation
seeded by (seed, e), and the objective's randomness at step k (times, noise, label
dropping) comes from a generator seeded by (seed, k). A run resumed from its
checkpoint therefore continues with exactly the losses an uninterrupted run would
have had, without saving RNG states.

Under ``torchrun`` (see :mod:`molguide.training.distributed`) the model is wrapped in
DistributedDataParallel; every process draws the same global batch and keeps its
contiguous part, so N processes take the same steps as one process would on the
global batch. Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from molguide.storage.checkpoints import (
    CheckpointError,
    config_differences,
    ema_weights,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from molguide.training import distributed

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings of a training run."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-12
    warmup_steps: int = 0
    # Cosine decay from lr to lr_final over lr_decay_steps steps from step lr_decay_start
    # (None: constant). A long run stays at lr; a short decay branch finishes it for shipping.
    lr_decay_start: int | None = None
    lr_decay_steps: int = 0
    lr_final: float = 0.0
    ema_decay: float = 0.999
    ema_warmup: bool = False  # decay min(ema_decay, (1 + n) / (10 + n)) after n updates
    grad_clip: float = 2.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    mixed_precision: bool = False  # bf16 autocast of the objective's forward pass
    prefetch: bool | None = None  # build the next batch in a thread (None: on CUDA devices only)


class BatchSource(Protocol):
    """Turns an array of example indices into a batch (a dict of tensors)."""

    def __len__(self) -> int: ...

    def __call__(self, indices: np.ndarray) -> dict[str, torch.Tensor]: ...

    def num_nodes(self, indices: np.ndarray) -> np.ndarray:
        """Atoms (graph nodes) of each example; 1 per example for plain tensors."""
        ...


class Objective(Protocol):
    """Loss of ``model`` on ``batch``; may also return named scalars to log (e.g. accuracy)."""

    def __call__(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]: ...


class TensorBatches:
    """A batch source over equally long tensors (toy data, precomputed features)."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        lengths = {k: len(v) for k, v in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"tensors need the same length, got {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __call__(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        out = {k: v[idx] for k, v in self.tensors.items()}
        out["num_graphs"] = torch.tensor(len(idx))
        return out

    def num_nodes(self, indices: np.ndarray) -> np.ndarray:
        return np.ones(len(indices), dtype=np.int64)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of optimisation step ``step`` of a run seeded with ``seed``."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


@dataclass
class StepLog:
    """What one optimisation step reports."""

    step: int
    loss: float
    grad_norm: float
    lr: float
    molecules_per_s: float
    extras: dict[str, float] = field(default_factory=dict)


# The extra_state key of what a checkpoint must have been trained with to be resumed.
RESUME_SIGNATURE = "resume_signature"


class Trainer:
    """Trains ``model`` to minimise ``objective`` over ``data``.

    ``checkpoint_path`` (a .pt file) is written every ``checkpoint_every`` steps and
    at the end; :meth:`resume` continues from it. ``extra_state`` is stored in every
    checkpoint (model config, label binning, ...), so a checkpoint alone rebuilds the model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        objective: Objective,
        data: BatchSource,
        config: TrainConfig,
        checkpoint_path: str | Path | None = None,
        extra_state: dict | None = None,
        device: str | torch.device = "cpu",
        resume_setting: str = "train.resume",
    ) -> None:
        if len(data) == 0:
            raise ValueError("no training examples")
        self.model = model.to(device)
        if torch.device(device).type == "cpu":
            # Small loss weights (e.g. SNR-clamped ones) drive gradients into subnormal
            # floats, which x86 CPUs handle ~100x slower: a training step took 1.6x as
            # long (benchmarks/generator_ablation.py). Flushing them to zero costs nothing.
            torch.set_flush_denormal(True)
        self.objective = objective
        self.data = data
        self.config = config
        self.device = torch.device(device)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.extra_state = extra_state or {}
        self.resume_setting = resume_setting  # named in the error when a checkpoint does not fit
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay, amsgrad=True
        )
        average = (
            warmup_ema(config.ema_decay) if config.ema_warmup else get_ema_multi_avg_fn(config.ema_decay)
        )
        self.ema = AveragedModel(model, multi_avg_fn=average)
        self.step = 0
        self.history: list[StepLog] = []
        # Time spent in train() over every session of this run (kept in checkpoints): the
        # wall clock and the CPU time of all processes (all their threads), for model cards.
        self.train_seconds = 0.0
        self.cpu_seconds = 0.0  # summed over processes, synced at checkpoints and at the end
        self._cpu_unsynced = 0.0  # this process's CPU time since the last sync
        self.dist = distributed.context()
        self.network = self._data_parallel(self.model) if self.dist.enabled else self.model
        self._executor = None  # the batch-prefetching thread, started on first use
        self._ahead = None  # (step, future of its batch)

    def _data_parallel(self, model: torch.nn.Module) -> torch.nn.Module:
        if not getattr(self.objective, "supports_sharding", False):
            raise ValueError(
                f"{type(self.objective).__name__} cannot be trained data-parallel yet: "
                "run this pipeline in one process (without torchrun)"
            )
        if self.config.batch_size < self.dist.world_size:
            raise ValueError(
                f"train.batch_size {self.config.batch_size} is smaller than the "
                f"{self.dist.world_size} processes that share it"
            )
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    # ------------------------------------------------------------------ data order
    def _batch_indices(self, step: int) -> np.ndarray:
        n, bs = len(self.data), self.config.batch_size
        per_epoch = max(1, n // bs)
        epoch, pos = divmod(step, per_epoch)
        perm = np.random.default_rng([self.config.seed, epoch]).permutation(n)
        return perm[pos * bs : (pos + 1) * bs]

    def _make_batch(self, step: int) -> tuple[dict[str, torch.Tensor], distributed.Shard | None, int]:
        """(CPU batch of this process, its shard of the global batch or None, global batch size)."""
        indices = self._batch_indices(step)
        global_size, shard = len(indices), None
        if self.dist.enabled:  # this process's contiguous part of the global batch
            counts = self.data.num_nodes(indices)
            indices, shard = distributed.split_global_batch(
                indices, counts, self.dist.rank, self.dist.world_size
            )
        batch = self.data(indices)
        if self.device.type == "cuda":  # pinned memory makes the copy to the GPU asynchronous
            batch = {k: v.pin_memory() for k, v in batch.items()}
        return batch, shard, global_size

    def _take_batch(self, step: int):
        """The batch of ``step`` (prefetched when possible) and, with prefetching, start the next one.

        The batch of a step depends only on (seed, step), so building it ahead in a
        thread while the device computes changes nothing but the wait.
        """
        prefetch = self.config.prefetch if self.config.prefetch is not None else self.device.type == "cuda"
        if not prefetch:
            return self._make_batch(step)
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            # Pinning memory in the thread needs the thread to know the process's GPU.
            setup = None
            if self.device.type == "cuda":
                gpu = self.device.index if self.device.index is not None else torch.cuda.current_device()
                setup = lambda: torch.cuda.set_device(gpu)  # noqa: E731
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="molguide-batches", initializer=setup)
        ahead = self._ahead
        result = ahead[1].result() if ahead is not None and ahead[0] == step else self._make_batch(step)
        self._ahead = (step + 1, self._executor.submit(self._make_batch, step + 1))
        return result

    def _lr(self, step: int) -> float:
        return learning_rate(self.config, step)

    # ------------------------------------------------------------------ training
    def train_step(self) -> StepLog:
        """One optimisation step; returns its log entry."""
        t0 = time.perf_counter()
        batch, shard, global_size = self._take_batch(self.step)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        gen = step_generator(self.config.seed, self.step)
        self.model.train()
        lr = self._lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        kwargs = {"shard": shard} if shard is not None else {}
        # bf16 autocast runs the linear layers in bf16; elementwise work on float32 inputs
        # (positions, distances, the loss) stays float32, and the weights stay float32.
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.config.mixed_precision):
            out = self.objective(self.network, batch, gen, **kwargs)
        loss, extras = out if isinstance(out, tuple) else (out, {})
        # The global batch's loss (the mean of the processes' scaled losses), checked on every
        # process alike: one process raising alone would leave the others waiting in DDP.
        loss_value = float(distributed.all_reduce_sum(loss.detach())) / self.dist.world_size
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        self.ema.update_parameters(self.model)
        self.step += 1
        entry = StepLog(
            self.step, loss_value, float(grad_norm), lr, global_size / (time.perf_counter() - t0), extras
        )
        self.history.append(entry)
        return entry

    def train(
        self,
        until_step: int | None = None,
        on_log: Callable[[list[StepLog]], None] | None = None,
        progress: bool = False,
        deadline: float | None = None,
        desc: str = "train",
    ) -> list[StepLog]:
        """Train up to ``until_step`` (default: config.steps); checkpoints on the way.

        ``on_log`` receives the entries since its last call every ``log_every`` steps
        (for batched MLflow logging). ``deadline`` (a ``time.monotonic()`` value) ends
        training early, with a checkpoint, for time-boxed runs.
        """
        from tqdm.auto import tqdm

        until = until_step if until_step is not None else self.config.steps
        pending: list[StepLog] = []
        wall0, cpu0 = time.perf_counter(), time.process_time()
        show = progress and self.dist.is_main
        bar = tqdm(total=until, initial=self.step, desc=desc, unit="step", disable=not show)
        try:
            while self.step < until:
                if deadline is not None and self._past(deadline):
                    log.info("time limit reached at step %d", self.step)
                    until = self.step
                    break
                entry = self.train_step()
                pending.append(entry)
                self.train_seconds += time.perf_counter() - wall0
                self._cpu_unsynced += time.process_time() - cpu0
                wall0, cpu0 = time.perf_counter(), time.process_time()
                bar.update(1)
                if self.step % self.config.log_every == 0 or self.step == until:
                    bar.set_postfix(loss=f"{np.mean([p.loss for p in pending]):.4f}")
                    if on_log is not None:
                        on_log(pending)
                    pending = []
                if self.checkpoint_path and (
                    self.step % self.config.checkpoint_every == 0 or self.step == until
                ):
                    self.save()
        finally:
            bar.close()
            if self._executor is not None:  # the batch built ahead for a step that will not come
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor, self._ahead = None, None
        if pending and on_log is not None:
            on_log(pending)
        self._sync_cpu_seconds()
        if self.checkpoint_path and deadline is not None:
            self.save()
        return self.history

    def _sync_cpu_seconds(self) -> None:
        """Add the CPU time every process spent since the last sync to ``cpu_seconds``
        (data-parallel runs: summed over processes, so CPU-hours count all cores used).
        Called at the same points by every process (end of training, checkpoints)."""
        spent = torch.tensor(self._cpu_unsynced, dtype=torch.float64, device=self.device)
        self.cpu_seconds += float(distributed.all_reduce_sum(spent))
        self._cpu_unsynced = 0.0

    def _past(self, deadline: float) -> bool:
        """Whether the deadline has passed; in data-parallel runs, whether it has for any process."""
        # On the training device: NCCL reduces CUDA tensors only.
        late = torch.tensor(float(time.monotonic() >= deadline), device=self.device)
        return bool(distributed.all_reduce_sum(late) > 0)

    def recent_loss(self, last: int = 50) -> float:
        """Mean loss of the last ``last`` steps (nan before any step)."""
        recent = [e.loss for e in self.history[-last:]]
        return float(np.mean(recent)) if recent else math.nan

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "train_config": asdict(self.config),
            "losses": [e.loss for e in self.history],
            "train_seconds": self.train_seconds,
            "cpu_seconds": self.cpu_seconds,
            **self.extra_state,
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Write the checkpoint atomically (to ``checkpoint_path`` by default); rank 0 only."""
        target = Path(path) if path else self.checkpoint_path
        if target is None:
            raise ValueError("no checkpoint path given")
        self._sync_cpu_seconds()
        if not self.dist.is_main:  # every process holds the same weights
            return target
        return save_checkpoint(self.state_dict(), target)

    def resume(self, path: str | Path | None = None) -> int:
        """Load model, EMA, optimizer and step from a checkpoint; returns the step."""
        path = Path(path or self.checkpoint_path)
        state = load_checkpoint(path, map_location=self.device)
        self._check_resumable(state, path)
        load_weights(self.model, state["model"], path)
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.cpu_seconds = float(state.get("cpu_seconds", 0.0))
        self.history = [
            StepLog(k + 1, loss, math.nan, math.nan, math.nan)
            for k, loss in enumerate(state.get("losses", []))
        ]
        log.info("resumed from %s at step %d", path or self.checkpoint_path, self.step)
        return self.step

    def _check_resumable(self, state: dict, path: Path) -> None:
        """One CheckpointError when ``state`` is not this run's to continue."""
        way_out = f"or start afresh with a new output_dir or --set {self.resume_setting}=false"
        missing = [k for k in ("model", "ema", "optimizer", "step") if k not in state]
        if missing:
            raise CheckpointError(
                f"{path}: not a training checkpoint (no {', '.join(missing)}); move it away, {way_out}"
            )
        saved, current = state.get(RESUME_SIGNATURE), self.extra_state.get(RESUME_SIGNATURE)
        if saved is None or current is None:
            if current is not None:
                log.warning("%s: written before checkpoints recorded their config; not checked", path)
            return
        differences = config_differences(saved, current)
        if differences:
            shown = ", ".join(differences[:6])
            if len(differences) > 6:
                shown += f" and {len(differences) - 6} more"
            raise CheckpointError(
                f"{path}: was trained with another config: {shown}; resume it with the config it was "
                f"trained with, {way_out}"
            )

    def averaged_weights(self) -> dict[str, torch.Tensor]:
        """The EMA weights as a plain state dict of ``model``."""
        return ema_weights(self.ema.state_dict())


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of optimisation step ``step``: linear warm-up, then constant, then
    (from ``lr_decay_start``) a cosine decay to ``lr_final`` over ``lr_decay_steps`` steps."""
    lr = config.lr
    if config.warmup_steps:
        lr *= min(1.0, (step + 1) / config.warmup_steps)
    start = config.lr_decay_start
    if start is not None and step >= start:
        done = min(1.0, (step - start) / max(config.lr_decay_steps, 1))
        lr = config.lr_final + (lr - config.lr_final) * 0.5 * (1.0 + math.cos(math.pi * done))
    return lr


def warmup_ema(decay: float):
    """EMA update whose decay grows as min(decay, (1 + n) / (10 + n)) with the update count n.

    With a fixed decay of 0.999 the average still holds 0.999^n of the random initial
    weights: 30% after 1,200 steps, 8% after 2,500; such blends of untrained and trained
    weights sampled molecules that exploded where the raw weights did not. The warm-up
    forgets the start within a few hundred steps and is the fixed decay later on.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = int(num_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return update

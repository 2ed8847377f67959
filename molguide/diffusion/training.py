"""Training of noise-prediction networks: EMA, gradient clipping, atomic checkpoints, exact resume.

Randomness is derived from (seed, step): the data order of epoch e is a permutation
seeded by (seed, e), and the times and noise of step k come from a generator seeded
by (seed, k). A run resumed from its checkpoint therefore continues with exactly
the losses an uninterrupted run would have had, without saving RNG states.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from molguide.checkpoint import load_checkpoint, save_checkpoint
from molguide.data.graphs import collate_molecules
from molguide.data.molecules import MoleculeSet
from molguide.diffusion.process import VPDiffusion

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings of a diffusion training run."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-12
    warmup_steps: int = 0
    ema_decay: float = 0.999
    grad_clip: float = 2.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


@dataclass
class StepLog:
    step: int
    loss: float
    grad_norm: float
    lr: float
    molecules_per_s: float


class DiffusionTrainer:
    """Trains ``model`` to predict the noise of ``diffusion`` on ``molecules``.

    ``checkpoint_path`` (a .pt file) is written every ``checkpoint_every`` steps and
    at the end; :meth:`resume` continues from it.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        diffusion: VPDiffusion,
        molecules: MoleculeSet,
        config: TrainConfig,
        checkpoint_path: str | Path | None = None,
        extra_state: dict | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device)
        self.diffusion = diffusion
        self.molecules = molecules
        self.config = config
        self.device = torch.device(device)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.extra_state = extra_state or {}
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay, amsgrad=True
        )
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
        self.step = 0
        self.history: list[StepLog] = []

    # ------------------------------------------------------------------ data order
    def _batch_indices(self, step: int) -> np.ndarray:
        n, bs = len(self.molecules), self.config.batch_size
        per_epoch = max(1, n // bs)
        epoch, pos = divmod(step, per_epoch)
        perm = np.random.default_rng([self.config.seed, epoch]).permutation(n)
        return perm[pos * bs : (pos + 1) * bs]

    def _lr(self, step: int) -> float:
        warm = self.config.warmup_steps
        return self.config.lr * min(1.0, (step + 1) / warm) if warm else self.config.lr

    # ------------------------------------------------------------------ training
    def train_step(self) -> StepLog:
        """One optimisation step; returns its log entry."""
        t0 = time.perf_counter()
        batch = collate_molecules(self.molecules, self._batch_indices(self.step))
        gen = _step_generator(self.config.seed, self.step)
        self.model.train()
        lr = self._lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.diffusion.loss(
            self.model,
            batch["pos"].to(self.device),
            batch["onehot"].to(self.device),
            batch["batch"].to(self.device),
            int(batch["num_graphs"]),
            generator=gen,
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.ema.update_parameters(self.model)
        self.step += 1
        entry = StepLog(
            self.step,
            float(loss.detach()),
            float(grad_norm),
            lr,
            int(batch["num_graphs"]) / (time.perf_counter() - t0),
        )
        self.history.append(entry)
        return entry

    def train(
        self,
        until_step: int | None = None,
        on_log: Callable[[list[StepLog]], None] | None = None,
        progress: bool = False,
        deadline: float | None = None,
    ) -> list[StepLog]:
        """Train up to ``until_step`` (default: config.steps); checkpoints on the way.

        ``on_log`` receives the entries since its last call every ``log_every`` steps
        (for batched MLflow logging). ``deadline`` (a ``time.monotonic()`` value) ends
        training early, with a checkpoint, for time-boxed runs.
        """
        from tqdm.auto import tqdm

        until = until_step if until_step is not None else self.config.steps
        pending: list[StepLog] = []
        bar = tqdm(total=until, initial=self.step, desc="train", unit="step", disable=not progress)
        try:
            while self.step < until:
                if deadline is not None and time.monotonic() >= deadline:
                    log.info("time limit reached at step %d", self.step)
                    until = self.step
                    break
                entry = self.train_step()
                pending.append(entry)
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
        if pending and on_log is not None:
            on_log(pending)
        if self.checkpoint_path and deadline is not None:
            self.save()
        return self.history

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "train_config": asdict(self.config),
            "losses": [e.loss for e in self.history],
            **self.extra_state,
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Write the checkpoint atomically (to ``checkpoint_path`` by default)."""
        target = Path(path) if path else self.checkpoint_path
        if target is None:
            raise ValueError("no checkpoint path given")
        return save_checkpoint(self.state_dict(), target)

    def resume(self, path: str | Path | None = None) -> int:
        """Load model, EMA, optimizer and step from a checkpoint; returns the step."""
        state = load_checkpoint(path or self.checkpoint_path, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.history = [StepLog(k + 1, loss, math.nan, math.nan, math.nan)
                        for k, loss in enumerate(state.get("losses", []))]  # fmt: skip
        log.info("resumed from %s at step %d", path or self.checkpoint_path, self.step)
        return self.step

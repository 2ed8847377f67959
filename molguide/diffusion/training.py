"""The denoising objective of score networks, for :class:`molguide.training.Trainer`.

One objective covers the three score models molguide trains: the unconditional
model, the conditional model for classifier-free guidance (a per-molecule context,
dropped to zeros with probability ``p_uncond``), and the reward-reweighted model
(per-molecule weights r(x0) in the loss: weighted denoising score matching).
"""

from __future__ import annotations

import torch

from molguide.data.bonds import BondTable
from molguide.data.graphs import MoleculeBatches
from molguide.data.molecules import MoleculeSet
from molguide.diffusion.process import VPDiffusion
from molguide.distributed import Shard
from molguide.training import StepLog, TrainConfig, Trainer

__all__ = ["DenoisingObjective", "DiffusionTrainer", "StepLog", "TrainConfig"]


class DenoisingObjective:
    """eps-prediction MSE on a batch from :class:`MoleculeBatches`.

    Args:
        context_key: batch key of a (B, C) condition (CFG training); None: unconditional.
        p_uncond: probability that a molecule's condition is replaced by zeros (the
            "no label" token, so one network gives both s(z|c) and s(z)).
        weight_key: batch key of (B,) per-molecule weights (reward-weighted training).
    """

    supports_sharding = True  # data-parallel training: see molguide.distributed.Shard

    def __init__(
        self,
        diffusion: VPDiffusion,
        context_key: str | None = None,
        p_uncond: float = 0.0,
        weight_key: str | None = None,
    ) -> None:
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
        self.diffusion = diffusion
        self.context_key = context_key
        self.p_uncond = p_uncond
        self.weight_key = weight_key

    def __call__(
        self, model: torch.nn.Module, batch: dict, generator: torch.Generator, shard: Shard | None = None
    ) -> torch.Tensor:
        num_graphs = int(batch["num_graphs"])
        context = None
        if self.context_key is not None:
            context = batch[self.context_key].float()
            draw = torch.rand(shard.total_graphs if shard else num_graphs, generator=generator)
            keep = (shard.graph_rows(draw) if shard else draw) >= self.p_uncond
            context = context * keep.to(context.device, context.dtype).unsqueeze(-1)
        weight = batch[self.weight_key].float() if self.weight_key is not None else None
        return self.diffusion.loss(
            model,
            batch["pos"],
            batch["onehot"],
            batch["batch"],
            num_graphs,
            generator=generator,
            context=context,
            sample_weight=weight,
            shard=shard,
            bond_orders=batch.get("bond_orders"),
            bond_mask=batch.get("bond_mask"),
        )


def DiffusionTrainer(  # noqa: N802 - kept as a constructor-like factory for the plain score model
    model: torch.nn.Module,
    diffusion: VPDiffusion,
    molecules: MoleculeSet,
    config: TrainConfig,
    checkpoint_path=None,
    extra_state: dict | None = None,
    device: str | torch.device = "cpu",
    bonds: BondTable | None = None,
) -> Trainer:
    """A :class:`Trainer` of an unconditional score network on ``molecules`` (``bonds``:
    bond-order labels, for a network with a bond head)."""
    return Trainer(
        model,
        DenoisingObjective(diffusion),
        MoleculeBatches(molecules, bonds=bonds),
        config,
        checkpoint_path,
        extra_state,
        device,
    )

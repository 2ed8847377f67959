"""The denoising objective of score networks, for :class:`molguide.training.trainer.Trainer`.

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
from molguide.diffusion.process import LossDraws, VPDiffusion, network_setting
from molguide.training.distributed import Shard, all_reduce_sum
from molguide.training.trainer import StepLog, TrainConfig, Trainer

__all__ = ["DenoisingObjective", "DiffusionTrainer", "StepLog", "TrainConfig"]


class DenoisingObjective:
    """eps-prediction MSE on a batch from :class:`MoleculeBatches`.

    Args:
        context_key: batch key of a (B, C) condition (CFG training); None: unconditional.
        p_uncond: probability that a molecule's condition is replaced by zeros (the
            "no label" token, so one network gives both s(z|c) and s(z)).
        weight_key: batch key of (B,) per-molecule weights (reward-weighted training).
        hydrogen_channel: the atom-type channel of hydrogen, for a network trained to keep
            atoms (:func:`molguide.diffusion.process.fixed_atom_mask`); None: no hydrogens.
    """

    supports_sharding = True  # data-parallel training: see molguide.training.distributed.Shard

    def __init__(
        self,
        diffusion: VPDiffusion,
        context_key: str | None = None,
        p_uncond: float = 0.0,
        weight_key: str | None = None,
        hydrogen_channel: int | None = None,
    ) -> None:
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
        self.diffusion = diffusion
        self.context_key = context_key
        self.p_uncond = p_uncond
        self.weight_key = weight_key
        self.hydrogen_channel = hydrogen_channel

    def __call__(
        self, model: torch.nn.Module, batch: dict, generator: torch.Generator, shard: Shard | None = None
    ) -> torch.Tensor:
        num_graphs = int(batch["num_graphs"])
        total_graphs = shard.total_graphs if shard else num_graphs
        context = None
        if self.context_key is not None:
            context = batch[self.context_key].float()
            draw = torch.rand(total_graphs, generator=generator)
            keep = (shard.graph_rows(draw) if shard else draw) >= self.p_uncond
            context = context * keep.to(context.device, context.dtype).unsqueeze(-1)
        pos = batch["pos"]
        # The random numbers are drawn for the whole global batch and this process keeps its
        # rows, so a molecule's numbers do not depend on how many processes share the batch.
        draws = self.diffusion.draw(
            total_graphs,
            shard.total_nodes if shard else pos.shape[0],
            batch["onehot"].shape[1],
            generator,
            pos.dtype,
            network_setting(model, "self_condition", False),
            pos.device,
            fixed_atoms=network_setting(model, "fixed_atoms", False),
        )
        if shard is not None:
            draws = LossDraws(
                shard.graph_rows(draws.t),
                shard.node_rows(draws.noise_x),
                shard.node_rows(draws.noise_h),
                None if draws.self_condition is None else shard.graph_rows(draws.self_condition),
                None if draws.fixed is None else shard.graph_rows(draws.fixed),
            )
        per_mol = self.diffusion.per_molecule_loss(
            model,
            pos,
            batch["onehot"],
            batch["batch"],
            num_graphs,
            context=context,
            bond_orders=batch.get("bond_orders"),
            bond_mask=batch.get("bond_mask"),
            draws=draws,
            hydrogen_channel=self.hydrogen_channel,
        )
        weight = batch[self.weight_key].float() if self.weight_key is not None else None
        if shard is None:
            return per_mol.mean() if weight is None else (per_mol * weight).sum() / weight.sum()
        # DDP averages gradients over processes: scale so the average is the global batch's.
        if weight is None:
            return shard.data_parallel_loss(per_mol.sum(), shard.total_graphs)
        return shard.data_parallel_loss((per_mol * weight).sum(), all_reduce_sum(weight.sum()))


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

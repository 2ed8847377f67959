"""A score network as a frozen base network plus a small trained correction.

Reward guidance adds w (s^r_t(z) - s_t(z)), where s^r is the score of the
reward-reweighted model (docs/guidance.md). Fine-tuning a full copy of the generator
for s^r makes every guided step run a second network of the generator's size. Here s^r
is the generator's own output plus a correction network's:

    output^r(z, t) = output(z, t) + correction(z, t)

(in the base's parameterisation: clean positions and type logits for x0 networks, the
noise for eps ones). The base is frozen and only the correction trains, under the same
reward-weighted denoising loss. Its output layers start at zero, so s^r = s before
training. When the sampler's own network is this base, the guidance term needs the
correction alone: the base's output at the step is already known
(:class:`molguide.guidance.terms.RewardGuidance`), so a guided step costs one small
network more instead of one generator more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from molguide.models.score import ScoreNetwork


class ResidualScoreNetwork(nn.Module):
    """``base(z, t) + correction(z, t)`` with ``base`` frozen.

    Args:
        base: the generator's network, an unconditional EGNN score network without a
            bond-order head; it is frozen in place (``requires_grad`` off, eval mode).
        correction: keyword arguments of the correction's EGNN
            (``{"hidden": 32, "num_layers": 3}``; the base's other backbone settings are
            inherited); it gets the base's inputs (atom types, time, the
            self-conditioning estimate) and outputs a centred position shift and a
            type-logit (or type-noise) shift.
    """

    def __init__(self, base: ScoreNetwork, correction: Mapping[str, Any]) -> None:
        super().__init__()
        if getattr(base, "context_dim", 0):
            raise ValueError("reward.correction needs an unconditional score network as its base")
        if base.backbone_name != "egnn" or base.bond_head is not None:
            raise ValueError(
                "reward.correction needs an EGNN score network without a bond head as its base, "
                f"not {base.backbone_name!r}{' with a bond head' if base.bond_head is not None else ''}"
            )
        self.base = base
        self.base.requires_grad_(False)
        # The base's backbone settings (e.g. its per-layer coordinate range) with the
        # correction's own sizes: a correction free to move atoms 15 A per layer diverges.
        own = dict(correction.get("backbone_kwargs", correction))
        inherited = {
            k: v for k, v in base.config["backbone_kwargs"].items() if k not in ("hidden", "num_layers")
        }
        backbone_kwargs = {**inherited, **own}
        # An eps network's outputs are the backbone's centred vectors and its scalars: exactly
        # the shifts wanted, whatever the base's parameterisation.
        try:
            self.correction = ScoreNetwork(
                num_atom_types=base.num_atom_types,
                backbone=base.backbone_name,
                parameterisation="eps",
                self_condition=base.self_condition,
                **backbone_kwargs,
            )
        except TypeError as err:  # an unknown size name
            raise ValueError(f"reward.correction: {err}") from err
        _zero_outputs(self.correction)
        self.parameterisation = base.parameterisation
        self.self_condition = base.self_condition
        self.num_atom_types = base.num_atom_types
        self.context_dim = 0
        self.bond_head = None
        self.config = {**base.config, "bond_head": False, "correction": {"backbone_kwargs": backbone_kwargs}}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ResidualScoreNetwork:
        """The network a :attr:`config` describes (the base's config plus ``correction``)."""
        base = {k: v for k, v in config.items() if k != "correction"}
        return cls(ScoreNetwork.from_config(base), config["correction"])

    def train(self, mode: bool = True) -> ResidualScoreNetwork:
        """The base stays in eval mode: it is not trained here."""
        super().train(mode)
        self.base.eval()
        return self

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor,
        t: torch.Tensor,
        batch: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        self_cond: tuple[torch.Tensor, torch.Tensor] | None = None,
        base_output: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The base's output plus the correction's, as :meth:`ScoreNetwork.forward` returns it.

        ``base_output``: the base's own output at these inputs when the caller has it already
        (the sampler's network is the base); the base is then not run again.
        """
        extra = {"self_cond": self_cond} if self.self_condition else {}
        if base_output is None:
            with torch.no_grad():
                base_output = self.base(x, h, t, batch, edge_index, None, **extra)
        shift_x, shift_h = self.correction.forward(x, h, t, batch, edge_index, None, **extra)
        return base_output[0] + shift_x, base_output[1] + shift_h

    def has_base(self, model: torch.nn.Module) -> bool:
        """Whether ``model`` computes exactly this network's base: the same class, the
        same settings (backbone defaults filled in) and the same weights (a bond-order
        head, which the base has none of, aside)."""
        if model is self.base:
            return True
        config = getattr(model, "config", None)
        if type(model) is not type(self.base) or not isinstance(config, dict):
            return False
        if _settings(config) != _settings(self.base.config):
            return False
        ours, theirs = self.base.state_dict(), model.state_dict()
        return all(
            k in theirs and theirs[k].shape == v.shape and torch.equal(v, theirs[k].to(v.device))
            for k, v in ours.items()
        )


def _settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A score network's config with its backbone's defaults filled in and no bond head."""
    import inspect

    from molguide.models.registry import BACKBONES

    cls = BACKBONES[config["backbone"]]()
    defaults = {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**config, "bond_head": False, "backbone_kwargs": {**defaults, **config["backbone_kwargs"]}}


def _zero_outputs(network: ScoreNetwork) -> None:
    """Zero the layers that produce a ScoreNetwork's outputs: the readout and every
    coordinate update's last layer, so the network's output is exactly zero."""
    backbone = network.backbone
    nn.init.zeros_(backbone.readout.weight)
    nn.init.zeros_(backbone.readout.bias)
    for layer in getattr(backbone, "layers", ()):
        coord_out = getattr(layer, "coord_out", None)
        if coord_out is not None:
            nn.init.zeros_(coord_out[-1].weight)


def is_residual_config(config: Mapping[str, Any]) -> bool:
    """Whether a stored network config describes a :class:`ResidualScoreNetwork`."""
    return "correction" in config

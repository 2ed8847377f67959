"""Invariant molecule-level predictors on the equivariant backbones.

Two uses, one network:
- the noise-level classifier p_hat_t(y | z_t): input (z_t, t), output K logits;
  optionally one head per noise-level bucket (``time_heads``), chosen by t;
- the property evaluator (oracle) on clean molecules: no time input, one output.

The backbone's invariant node scalars are summed per molecule (size-aware, like
EDM's property networks) and mapped by an MLP to the outputs, so predictions are
invariant to rotations, reflections, translations and atom order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.utils import scatter

from molguide.data.elements import atom_types_of
from molguide.data.geometry import remove_mean
from molguide.data.graphs import collate_molecules, fully_connected_edges
from molguide.data.molecules import Molecule, MoleculeSet
from molguide.models.registry import build_backbone


class MoleculePredictor(nn.Module):
    """Invariant per-molecule outputs from positions and atom-type features.

    Args:
        num_atom_types: width of the atom-type features (5 for QM9).
        out_dim: number of outputs per molecule (classes, or 1 for regression).
        time_input: whether t is a node input (noise-level classifiers).
        time_heads: number of output heads, one per equal-width bucket of t in [0, 1].
        backbone: "egnn" or "e3nn"; ``backbone_kwargs`` its sizes.
    """

    def __init__(
        self,
        num_atom_types: int = 5,
        out_dim: int = 1,
        time_input: bool = True,
        time_heads: int = 1,
        backbone: str = "egnn",
        readout_hidden: int | None = None,
        atom_types: Sequence[int] | None = None,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if time_heads < 1 or (time_heads > 1 and not time_input):
            raise ValueError("time_heads must be >= 1, and > 1 only for a time-conditioned predictor")
        # Everything that rebuilds this network (from_config): it travels with the weights.
        self.config = {
            "backbone": backbone,
            "backbone_kwargs": dict(backbone_kwargs),
            "num_atom_types": int(num_atom_types),
            "out_dim": int(out_dim),
            "time_input": bool(time_input),
            "time_heads": int(time_heads),
            "readout_hidden": readout_hidden,
        }
        if atom_types is not None:  # listed when they are not QM9's (older configs stay as they were)
            if len(atom_types) != num_atom_types:
                raise ValueError(f"{len(atom_types)} atom types for {num_atom_types} type channels")
            self.config["atom_types"] = [int(z) for z in atom_types]
        self.num_atom_types, self.out_dim = num_atom_types, out_dim
        self.time_input, self.time_heads = time_input, time_heads
        hidden = readout_hidden or int(backbone_kwargs.get("hidden", 64))
        self.backbone = build_backbone(backbone, num_atom_types + int(time_input), hidden, **backbone_kwargs)
        self.readout = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, out_dim * time_heads),
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MoleculePredictor:
        """The network a :attr:`config` describes."""
        try:
            return cls(
                num_atom_types=int(config.get("num_atom_types", 5)),
                out_dim=int(config["out_dim"]),
                time_input=bool(config["time_input"]),
                time_heads=int(config.get("time_heads", 1)),
                backbone=config["backbone"],
                readout_hidden=config.get("readout_hidden"),
                atom_types=config.get("atom_types"),
                **config["backbone_kwargs"],
            )
        except TypeError as err:
            raise ValueError(f"backbone_kwargs: {err}") from err

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor,
        t: torch.Tensor | None,
        batch: torch.Tensor,
        num_graphs: int | None = None,
        edge_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (N, 3) positions; h: (N, K) (scaled, possibly noised) type features;
        t: (B,) times in [0, 1] or None. Returns (B, out_dim)."""
        num_graphs = int(batch.max()) + 1 if num_graphs is None else num_graphs
        if edge_index is None:
            edge_index = fully_connected_edges(batch)
        feats = h
        if self.time_input:
            if t is None:
                raise ValueError("this predictor is time-conditioned: pass t")
            feats = torch.cat([h, t.to(h.dtype)[batch].unsqueeze(-1)], dim=-1)
        x = remove_mean(x, batch, num_graphs)
        scalars = self.backbone.scalars(x, feats, batch, edge_index)
        pooled = scatter(scalars, batch, dim=0, dim_size=num_graphs, reduce="sum")
        out = self.readout(pooled)
        if self.time_heads == 1:
            return out
        bucket = torch.clamp((t * self.time_heads).long(), max=self.time_heads - 1)
        out = out.view(num_graphs, self.time_heads, self.out_dim)
        return out[torch.arange(num_graphs, device=out.device), bucket]


@torch.no_grad()
def predict_property(
    model: MoleculePredictor,
    molecules: MoleculeSet,
    mean: float,
    std: float,
    onehot_scale: float,
    batch_size: int = 512,
) -> np.ndarray:
    """A clean-molecule evaluator's predictions in the property's unit (it learned (v - mean) / std)."""
    model.eval()
    device = next(model.parameters()).device
    types = atom_types_of(model.config)
    out = []
    for start in range(0, len(molecules), batch_size):
        b = collate_molecules(molecules, np.arange(start, min(start + batch_size, len(molecules))), types)
        pred = model(
            b["pos"].to(device),
            b["onehot"].to(device) * onehot_scale,
            None,
            b["batch"].to(device),
            int(b["num_graphs"]),
        )
        out.append(pred.squeeze(-1).double().cpu().numpy() * std + mean)
    return np.concatenate(out) if out else np.zeros(0)


def predict_samples(
    model: MoleculePredictor,
    samples: Sequence[Molecule | None],
    mean: float,
    std: float,
    onehot_scale: float,
) -> np.ndarray:
    """:func:`predict_property` per generated sample, NaN where the sample was lost (None)."""
    pred = np.full(len(samples), np.nan)
    present = [i for i, m in enumerate(samples) if m is not None]
    if present:
        packed = MoleculeSet.from_molecules([samples[i] for i in present])
        pred[present] = predict_property(model, packed, mean, std, onehot_scale)
    return pred

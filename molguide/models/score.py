"""Noise-prediction (score) network: an equivariant backbone with time as node input."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from molguide.data.graphs import fully_connected_edges
from molguide.geometry import remove_mean
from molguide.models.registry import build_backbone


class ScoreNetwork(nn.Module):
    """Predicts the noise (eps_x, eps_h) of a noised molecule z_t = (x_t, h_t) at time t.

    The position part is equivariant and centred (zero mean per molecule); the
    atom-type part is invariant. The score is s_t(z) = -eps_hat / sigma_t.

    Args:
        num_atom_types: width of the atom-type one-hot (5 for QM9: H, C, N, O, F).
        backbone: "egnn" or "e3nn".
        context_dim: width of an optional per-molecule condition (for CFG; 0 = none).
        backbone_kwargs: sizes of the backbone (hidden, num_layers, ...).
    """

    def __init__(
        self,
        num_atom_types: int = 5,
        backbone: str = "egnn",
        context_dim: int = 0,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        self.num_atom_types = num_atom_types
        self.context_dim = context_dim
        self.backbone_name = backbone
        self.backbone = build_backbone(
            backbone, num_atom_types + 1 + context_dim, num_atom_types, **backbone_kwargs
        )

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor,
        t: torch.Tensor,
        batch: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3) centred positions; h: (N, K) scaled types; t: (B,) times in [0, 1];
        context: (B, context_dim) or None. Returns (eps_x (N, 3) centred, eps_h (N, K))."""
        if edge_index is None:
            edge_index = fully_connected_edges(batch)
        parts = [h, t.to(h.dtype)[batch].unsqueeze(-1)]
        if self.context_dim:
            if context is None:
                raise ValueError("this score network is conditional: pass a context")
            parts.append(context.to(h.dtype)[batch])
        vectors, scalars = self.backbone(x, torch.cat(parts, dim=-1), batch, edge_index)
        return remove_mean(vectors, batch, int(t.shape[0])), scalars

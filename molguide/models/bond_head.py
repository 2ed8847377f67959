"""A bond-order read-out on the score network's last node features.

For every ordered pair (i, j) of a molecule it predicts logits over no bond,
single, double and triple (:data:`molguide.data.bonds.BOND_CLASSES`) from features
that do not depend on the order of the pair (h_i + h_j, h_i * h_j) and on the
distance between the predicted clean positions (Gaussian radial basis), so the
prediction is invariant under rotations, translations and reflections and
symmetric in i and j by construction.
"""

from __future__ import annotations

import torch
from torch import nn

from molguide.data.bonds import BOND_CLASSES

RBF_MAX_ANGSTROM = 4.0  # every bond is shorter; beyond this the basis is flat


class BondOrderHead(nn.Module):
    """Edge MLP: (node features, predicted positions, edges) -> (E, 4) bond-order logits."""

    def __init__(self, hidden: int, num_rbf: int = 16) -> None:
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, RBF_MAX_ANGSTROM, num_rbf), persistent=False)
        self.width = RBF_MAX_ANGSTROM / (num_rbf - 1)
        self.mlp = nn.Sequential(
            nn.Linear(2 * hidden + num_rbf, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, BOND_CLASSES),
        )

    def forward(self, h: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        i, j = edge_index[0], edge_index[1]
        hi, hj = h.index_select(0, i), h.index_select(0, j)
        dist = (pos.index_select(0, i) - pos.index_select(0, j)).norm(dim=-1, keepdim=True)
        rbf = torch.exp(-(((dist - self.centres.to(dist.dtype)) / self.width) ** 2))
        return self.mlp(torch.cat([hi + hj, hi * hj, rbf.to(h.dtype)], dim=-1))

"""The interface every equivariant backbone implements.

A backbone maps a batch of molecular graphs (positions, invariant node features,
batch vector, edges) to one 3-vector and ``out_features`` invariant scalars per node.
Rotating or reflecting the input positions must rotate or reflect the vectors and
leave the scalars unchanged; translating the input must change neither; permuting
the nodes must permute both. Score networks, classifiers and evaluators are built
on top of this one interface, so backbones are swappable by name in the config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class EquivariantBackbone(nn.Module, ABC):
    """Base class of backbones: ``forward(pos, features, batch, edge_index) -> (vectors, scalars)``.

    Args (of forward):
        pos: (N, 3) node positions.
        features: (N, in_features) invariant node features (atom types, time, conditions).
        batch: (N,) molecule index of every node, sorted.
        edge_index: (2, E) directed edges (source row, target row); messages flow
            from ``edge_index[1]`` (neighbour j) into ``edge_index[0]`` (node i).

    Returns:
        vectors: (N, 3) equivariant per-node vectors (not yet centred).
        scalars: (N, out_features) invariant per-node scalars.
    """

    in_features: int
    out_features: int

    @abstractmethod
    def forward(
        self,
        pos: torch.Tensor,
        features: torch.Tensor,
        batch: torch.Tensor,
        edge_index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def scalars(
        self, pos: torch.Tensor, features: torch.Tensor, batch: torch.Tensor, edge_index: torch.Tensor
    ) -> torch.Tensor:
        """The invariant scalars alone (predictors read nothing else); a backbone may
        skip work that only the vectors need."""
        return self.forward(pos, features, batch, edge_index)[1]

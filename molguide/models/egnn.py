"""EGNN backbone in EDM's style (Satorras et al. 2021; Hoogeboom et al. 2022), written for speed.

Each layer: an edge MLP on (h_i, h_j, |x_i - x_j|^2, |x_i - x_j|^2 at the input),
a sigmoid attention gate, sum aggregation divided by a constant, a residual node
MLP, then an equivariant coordinate update x_i += sum_j (x_i - x_j)/(|x_i - x_j| + c)
* tanh(phi(m_ij)) * range.

The per-edge part of both MLPs runs through the fused autograd functions of
:mod:`molguide.models.egnn_kernels` (the same maths, written for speed; how and why
is explained there); :class:`EGNNLayer` below reads as the plain maths, with the
fused calls beside their plain-autograd equivalents.

``edge_input="concat"`` keeps EDM's naive form (one linear layer on the
concatenated features, plain autograd) for side-by-side benchmarks and tests.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch_geometric.utils import scatter

from molguide.models.backbone import EquivariantBackbone
from molguide.models.egnn_kernels import EDGE_FEATURES, CoordWeights, EdgeGraph, EdgeMessages


class EdgeInput(nn.Module):
    """First layer of an MLP on [h_i, h_j, e_ij] for every edge (i, j)."""

    def __init__(self, node_dim: int, edge_dim: int, out_dim: int, mode: str = "projected") -> None:
        super().__init__()
        if mode not in ("projected", "concat"):
            raise ValueError(f"edge_input must be 'projected' or 'concat', not {mode!r}")
        self.mode = mode
        if mode == "concat":
            self.linear = nn.Linear(2 * node_dim + edge_dim, out_dim)
        else:
            self.src = nn.Linear(node_dim, out_dim)
            self.dst = nn.Linear(node_dim, out_dim, bias=False)
            self.edge = nn.Linear(edge_dim, out_dim, bias=False)

    def forward(self, h: torch.Tensor, e: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        if self.mode == "concat":
            return self.linear(torch.cat([h.index_select(0, i), h.index_select(0, j), e], dim=-1))
        # index_select rather than h[i]: same gather, but its backward (index_add) is far
        # cheaper on CPU than the accumulate-index_put that fancy indexing uses.
        return self.src(h).index_select(0, i) + self.dst(h).index_select(0, j) + self.edge(e)

    def node_terms(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_a h + b, W_b h): the per-node halves of the projected form."""
        return self.src(h), F.linear(h, self.dst.weight)


class EGNNLayer(nn.Module):
    """One EDM equivariant block: a graph convolution on h, then a coordinate update."""

    coordinate_updates: bool = True  # a class attribute, so modules pickled before it existed load

    def __init__(
        self,
        hidden: int,
        attention: bool = True,
        coords_range: float = 15.0,
        norm_constant: float = 1.0,
        aggregation_norm: float = 1.0,
        edge_input: str = "projected",
        extra_edge_features: int = 0,
        coordinate_updates: bool = True,
    ) -> None:
        super().__init__()
        self.attention = attention
        self.coords_range = coords_range
        self.norm_constant = norm_constant
        self.aggregation_norm = aggregation_norm
        act = nn.SiLU()
        edge_dim = EDGE_FEATURES + extra_edge_features
        self.edge_in = EdgeInput(hidden, edge_dim, hidden, edge_input)
        self.edge_out = nn.Sequential(act, nn.Linear(hidden, hidden), act)
        self.gate = nn.Linear(hidden, 1) if attention else None
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), act, nn.Linear(hidden, hidden))
        self.coordinate_updates = coordinate_updates
        if not coordinate_updates:  # an invariant network (EGNN paper's QM9 property models)
            return
        self.coord_in = EdgeInput(hidden, edge_dim, hidden, edge_input)
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)  # start close to the identity map on x
        self.coord_out = nn.Sequential(act, nn.Linear(hidden, hidden), act, last)

    def forward(
        self,
        h: torch.Tensor,
        x: torch.Tensor,
        e0: torch.Tensor,
        i: torch.Tensor,
        j: torch.Tensor,
        graph: EdgeGraph | None = None,
        update_positions: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``graph`` (the fused per-edge path) is used where given and the input is projected;
        ``e0`` holds the fixed edge features (squared input distance, then any extra ones).
        ``update_positions=False`` returns x unchanged (a last layer whose positions nobody reads)."""
        if self.coordinate_updates:
            diff = x.index_select(0, i) - x.index_select(0, j)
            d2 = (diff * diff).sum(-1, keepdim=True)
        else:  # positions never move: the distance now is the input distance, e0's first column
            d2 = e0[:, :1]
        e = torch.cat([d2, e0], dim=-1)
        fused = graph is not None and self.edge_in.mode == "projected"
        if fused:
            p, q = self.edge_in.node_terms(h)
            gate_w, gate_b = (self.gate.weight, self.gate.bias) if self.gate is not None else (None, None)
            lin = self.edge_out[1]
            agg = EdgeMessages.apply(
                p, q, self.edge_in.edge.weight, lin.weight, lin.bias, gate_w, gate_b, e, graph
            )
        else:
            m = self.edge_out(self.edge_in(h, e, i, j))
            if self.gate is not None:
                m = m * torch.sigmoid(self.gate(m))
            agg = scatter(m, i, dim=0, dim_size=h.shape[0], reduce="sum")
        h = h + self.node_mlp(torch.cat([h, agg / self.aggregation_norm], dim=-1))
        if not (update_positions and self.coordinate_updates):
            return h, x
        # Coordinate update from the new h, bounded by tanh so early training cannot explode.
        unit = diff / (torch.sqrt(d2 + 1e-8) + self.norm_constant)
        if fused:
            p, q = self.coord_in.node_terms(h)
            lin, last = self.coord_out[1], self.coord_out[3]
            phi = CoordWeights.apply(
                p,
                q,
                self.coord_in.edge.weight,
                lin.weight,
                lin.bias,
                last.weight,
                e,
                graph,
                self.coords_range,
            ).unsqueeze(-1)
        else:
            phi = torch.tanh(self.coord_out(self.coord_in(h, e, i, j))) * self.coords_range
        x = x + scatter(unit * phi, i, dim=0, dim_size=x.shape[0], reduce="sum") / self.aggregation_norm
        return h, x


class EGNN(EquivariantBackbone):
    """E(n)-equivariant graph network; vectors are the displacement x_out - x_in.

    Args:
        in_features: invariant input features per node.
        out_features: invariant output scalars per node.
        hidden: width of every hidden layer (EDM: 256).
        num_layers: number of equivariant blocks (EDM: 9).
        attention, coords_range, norm_constant, aggregation_norm: as in EDM.
        edge_input: "projected" (fast) or "concat" (EDM's naive form; same maths).
        extra_edge_features: width of invariant per-edge inputs passed to forward as
            ``edge_attr`` (e.g. distances of a self-conditioning estimate); 0: none.
        coordinate_updates: False keeps the positions fixed (every layer sees the input
            distances; the vectors are zero): an invariant network, as the EGNN paper uses
            for QM9's properties, at about half the cost of a layer. For predictors only.

    ``fused`` (attribute, default True) selects the hand-written per-edge functions
    for the projected form; False runs the same maths as plain autograd operations.
    """

    fused: bool = True  # a class attribute, so models pickled before it existed still load
    ZERO_ALLOWED = ("norm_constant", "extra_edge_features")  # sizes that may be 0 (see registry)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 64,
        num_layers: int = 4,
        attention: bool = True,
        coords_range: float = 15.0,
        norm_constant: float = 1.0,
        aggregation_norm: float = 1.0,
        edge_input: str = "projected",
        extra_edge_features: int = 0,
        coordinate_updates: bool = True,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.extra_edge_features = extra_edge_features
        self.embed = nn.Linear(in_features, hidden)
        self.layers = nn.ModuleList(
            EGNNLayer(
                hidden,
                attention,
                coords_range,
                norm_constant,
                aggregation_norm,
                edge_input,
                extra_edge_features,
                coordinate_updates,
            )
            for _ in range(num_layers)
        )
        self.readout = nn.Linear(hidden, out_features)

    def forward(
        self,
        pos: torch.Tensor,
        features: torch.Tensor,
        batch: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """(x_out - pos, scalars), and the last layer's node features when ``return_hidden``."""
        h, x = self._run(pos, features, edge_index, edge_attr, last_positions=True)
        if return_hidden:
            return x - pos, self.readout(h), h
        return x - pos, self.readout(h)

    def scalars(
        self, pos: torch.Tensor, features: torch.Tensor, batch: torch.Tensor, edge_index: torch.Tensor
    ) -> torch.Tensor:
        """The invariant scalars alone: the last layer's coordinate update (an edge MLP,
        a sixth of a 3-layer network's work) is skipped, as nothing reads its output."""
        h, _ = self._run(pos, features, edge_index, None, last_positions=False)
        return self.readout(h)

    def _run(self, pos, features, edge_index, edge_attr, last_positions: bool):
        """(h, x) after the last layer."""
        i, j = edge_index[0], edge_index[1]
        diff0 = pos.index_select(0, i) - pos.index_select(0, j)
        e0 = (diff0 * diff0).sum(-1, keepdim=True)
        extra = getattr(self, "extra_edge_features", 0)
        if extra:
            if edge_attr is None or edge_attr.shape != (i.numel(), extra):
                got = None if edge_attr is None else tuple(edge_attr.shape)
                raise ValueError(f"this EGNN takes edge_attr of shape ({i.numel()}, {extra}), got {got}")
            e0 = torch.cat([e0, edge_attr.to(e0.dtype)], dim=-1)
        h, x = self.embed(features), pos
        use_fused = self.fused and i.numel() > 0 and not torch.is_autocast_enabled(pos.device.type)
        graph = EdgeGraph(edge_index, pos.shape[0], EDGE_FEATURES + extra) if use_fused else None
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            h, x = layer(h, x, e0, i, j, graph, update_positions=last_positions or k < last)
        return h, x

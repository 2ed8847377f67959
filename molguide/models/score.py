"""Score network: an equivariant backbone with time as node input.

It predicts either the noise (``parameterisation="eps"``, EDM's form) or the clean
molecule (``"x0"``: centred positions and atom-type logits). Either way
:meth:`molguide.diffusion.process.VPDiffusion.denoise` turns the output into the
score s = (alpha_t x0_hat - z_t) / sigma_t^2 = -eps_hat / sigma_t that samplers and
guidance terms use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from molguide.data.geometry import remove_mean
from molguide.data.graphs import fully_connected_edges
from molguide.models.bond_head import BondOrderHead
from molguide.models.registry import build_backbone

PARAMETERISATIONS = ("eps", "x0")


class ScoreNetwork(nn.Module):
    """Predicts eps or x0 of a noised molecule z_t = (x_t, h_t) at time t.

    The position part is equivariant and centred (zero mean per molecule); the
    atom-type part is invariant.

    Args:
        num_atom_types: width of the atom-type one-hot (5 for QM9: H, C, N, O, F).
        backbone: "egnn" or "e3nn".
        context_dim: width of an optional per-molecule condition (for CFG; 0 = none).
        parameterisation: "eps" (outputs eps_x, eps_h) or "x0" (outputs the clean
            positions and the atom-type logits).
        self_condition: take the previous clean-molecule estimate (positions and type
            probabilities) as extra input: its pair distances as edge features and its
            type probabilities as node features (EGNN only).
        bond_head: also predict bond orders of every pair from the last layer's node
            features and the predicted positions (x0 + EGNN only); read out with
            ``forward(..., with_bonds=True)``.
        fixed_atoms: one more input, a flag on atoms whose clean positions and types are
            given (kept atoms, docs/edit.md): such a network is trained with some atoms of
            each molecule fixed and generates the rest around them; without flags it is an
            ordinary generator.
        backbone_kwargs: sizes of the backbone (hidden, num_layers, ...).
    """

    def __init__(
        self,
        num_atom_types: int = 5,
        backbone: str = "egnn",
        context_dim: int = 0,
        parameterisation: str = "eps",
        self_condition: bool = False,
        bond_head: bool = False,
        fixed_atoms: bool = False,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(
                f"parameterisation must be one of {list(PARAMETERISATIONS)}, not {parameterisation!r}"
            )
        if self_condition and backbone != "egnn":
            raise ValueError(f"self_condition needs the egnn backbone (edge inputs), not {backbone!r}")
        if bond_head and (backbone != "egnn" or parameterisation != "x0"):
            raise ValueError(
                "bond_head needs the egnn backbone and x0 parameterisation, "
                f"not {backbone!r}/{parameterisation!r}"
            )
        if backbone_kwargs.get("coordinate_updates", True) is not True:
            raise ValueError("a score network needs coordinate_updates: its positions are its output")
        # Everything that rebuilds this network (from_config): it travels with the weights.
        self.config = {
            "backbone": backbone,
            "backbone_kwargs": dict(backbone_kwargs),
            "num_atom_types": int(num_atom_types),
            "context_dim": int(context_dim),
            "parameterisation": parameterisation,
            "self_condition": bool(self_condition),
            "bond_head": bool(bond_head),
        }
        if fixed_atoms:  # listed only when set, so older networks' configs (and resumes) are unchanged
            self.config["fixed_atoms"] = True
        self.num_atom_types = num_atom_types
        self.context_dim = context_dim
        self.backbone_name = backbone
        self.parameterisation = parameterisation
        self.self_condition = bool(self_condition)
        self.fixed_atoms = bool(fixed_atoms)
        # inputs: atom types, t, context, the previous estimate's types, the fixed-atom flag
        in_features = (
            num_atom_types + 1 + context_dim + (num_atom_types if self_condition else 0) + int(fixed_atoms)
        )
        if self_condition:
            backbone_kwargs = {**backbone_kwargs, "extra_edge_features": 1}
        self.backbone = build_backbone(backbone, in_features, num_atom_types, **backbone_kwargs)
        self.bond_head = BondOrderHead(self.backbone.readout.in_features) if bond_head else None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ScoreNetwork:
        """The network a :attr:`config` (or a run's ``model`` section, as a dict) describes."""
        try:
            return cls(
                num_atom_types=int(config.get("num_atom_types", 5)),
                backbone=config["backbone"],
                context_dim=int(config.get("context_dim", 0)),
                parameterisation=config.get("parameterisation", "eps"),
                self_condition=bool(config.get("self_condition", False)),
                bond_head=bool(config.get("bond_head", False)),
                fixed_atoms=bool(config.get("fixed_atoms", False)),
                **config["backbone_kwargs"],
            )
        except TypeError as err:
            raise ValueError(f"model.backbone_kwargs: {err}") from err

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor,
        t: torch.Tensor,
        batch: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        self_cond: tuple[torch.Tensor, torch.Tensor] | None = None,
        with_bonds: bool = False,
        fixed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """x: (N, 3) centred positions; h: (N, K) scaled types; t: (B,) times in [0, 1];
        context: (B, context_dim) or None; self_cond: (x0 positions (N, 3), type
        probabilities (N, K)) of the previous estimate, or None (zeros: no estimate);
        fixed: (N,) bool, the atoms whose z is their clean value times alpha_t (networks
        with ``fixed_atoms``; None: none).

        Returns (eps_x, eps_h) for "eps", (x0_x, type logits) for "x0"; positions centred.
        ``with_bonds`` (networks with a bond head): a third element, the (E, 4) bond-order
        logits of the edges in ``edge_index``.
        """
        # getattr: models pickled before bond heads existed have no such attribute
        if with_bonds and getattr(self, "bond_head", None) is None:
            raise ValueError("this score network has no bond head")
        if edge_index is None:
            edge_index = fully_connected_edges(batch)
        parts = [h, t.to(h.dtype)[batch].unsqueeze(-1)]
        if self.context_dim:
            if context is None:
                raise ValueError("this score network is conditional: pass a context")
            parts.append(context.to(h.dtype)[batch])
        extra = {}
        if self.self_condition:
            prev_x, prev_p = (
                self_cond if self_cond is not None else (torch.zeros_like(x), torch.zeros_like(h))
            )
            parts.append(prev_p.to(h.dtype))
            diff = prev_x.index_select(0, edge_index[0]) - prev_x.index_select(0, edge_index[1])
            extra["edge_attr"] = (diff * diff).sum(-1, keepdim=True).to(x.dtype)
        if getattr(self, "fixed_atoms", False):  # getattr: networks pickled before the flag existed
            flag = torch.zeros_like(x[:, 0]) if fixed is None else fixed.to(h.dtype)
            parts.append(flag.unsqueeze(-1))
        elif fixed is not None and bool(fixed.any()):
            raise ValueError("this score network was not trained with fixed atoms")
        if with_bonds:
            extra["return_hidden"] = True
            vectors, scalars, hidden = self.backbone(x, torch.cat(parts, dim=-1), batch, edge_index, **extra)
        else:
            vectors, scalars = self.backbone(x, torch.cat(parts, dim=-1), batch, edge_index, **extra)
        if self.parameterisation == "eps":
            return remove_mean(vectors, batch, int(t.shape[0])), scalars
        x0 = remove_mean(x + vectors, batch, int(t.shape[0]))
        if with_bonds:
            return x0, scalars, self.bond_head(hidden, x0, edge_index)
        return x0, scalars

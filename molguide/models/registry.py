"""Backbones by name, so configs can choose them."""

from __future__ import annotations

from typing import Any

from molguide.models.backbone import EquivariantBackbone

BACKBONES = ("egnn", "e3nn")


def build_backbone(name: str, in_features: int, out_features: int, **kwargs: Any) -> EquivariantBackbone:
    """Construct the backbone called ``name`` ("egnn" or "e3nn") with its keyword arguments."""
    if name == "egnn":
        from molguide.models.egnn import EGNN

        return EGNN(in_features, out_features, **kwargs)
    if name == "e3nn":
        from molguide.models.e3nn_backbone import E3nnBackbone

        return E3nnBackbone(in_features, out_features, **kwargs)
    raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")

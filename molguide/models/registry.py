"""Backbones by name, so configs can choose them: one dict, read by the config's validation.

Each entry maps a name to a function returning the backbone class (imported on first
use: the e3nn backbone pulls in e3nn). A backbone is an
:class:`~molguide.models.backbone.EquivariantBackbone` built as
``cls(in_features, out_features, **backbone_kwargs)``. To add one, write its module
and register it with :func:`register_backbone`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from molguide.models.backbone import EquivariantBackbone


def _egnn() -> type[EquivariantBackbone]:
    from molguide.models.egnn import EGNN

    return EGNN


def _e3nn() -> type[EquivariantBackbone]:
    from molguide.models.e3nn_backbone import E3nnBackbone

    return E3nnBackbone


BACKBONES: dict[str, Callable[[], type[EquivariantBackbone]]] = {"egnn": _egnn, "e3nn": _e3nn}


def register_backbone(name: str, backbone_class: Callable[[], type[EquivariantBackbone]]) -> None:
    """Make a backbone available as ``model.backbone: name`` (``backbone_class`` returns the class)."""
    if name in BACKBONES:
        raise ValueError(f"a backbone named {name!r} is registered already")
    BACKBONES[name] = backbone_class


def build_backbone(name: str, in_features: int, out_features: int, **kwargs: Any) -> EquivariantBackbone:
    """Construct the backbone called ``name`` (see :data:`BACKBONES`) with its keyword arguments."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
    return BACKBONES[name]()(in_features, out_features, **kwargs)

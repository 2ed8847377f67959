"""Models: equivariant backbones (EGNN, e3nn) and the networks built on them."""

from molguide.models.backbone import EquivariantBackbone
from molguide.models.registry import BACKBONES, build_backbone
from molguide.models.score import ScoreNetwork

__all__ = ["BACKBONES", "EquivariantBackbone", "ScoreNetwork", "build_backbone"]

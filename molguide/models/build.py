"""Networks built from their configs: the one place that maps a stored config to a class.

Every network describes itself (``.config``, a JSON-able dict); :func:`network_from_config`
builds an untrained network from such a dict: a score network, a residual reward network
(a config with ``correction``) or a molecule predictor (a config with ``out_dim``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from molguide.data.elements import QM9_ATOMIC_NUMBERS
from molguide.models.predictor import MoleculePredictor
from molguide.models.residual import ResidualScoreNetwork, is_residual_config
from molguide.models.score import ScoreNetwork


def build_score_model(model_config: Mapping) -> ScoreNetwork | ResidualScoreNetwork:
    """A ScoreNetwork from the ``model`` section (as a dict); bad keys name the section.
    A config with ``correction`` (a reward network's) builds a :class:`ResidualScoreNetwork`."""
    config = {"num_atom_types": len(QM9_ATOMIC_NUMBERS), **model_config}
    cls = ResidualScoreNetwork if is_residual_config(config) else ScoreNetwork
    return cls.from_config(config)


def build_predictor(
    section: Mapping, out_dim: int, time_input: bool, atom_types: Sequence[int] = QM9_ATOMIC_NUMBERS
) -> MoleculePredictor:
    """A MoleculePredictor from a classifier/evaluator section (as a dict) for molecules of
    ``atom_types`` (listed in its config unless they are QM9's)."""
    config = {
        "num_atom_types": len(atom_types),
        "backbone": section["backbone"],
        "backbone_kwargs": section["backbone_kwargs"],
        "out_dim": out_dim,
        "time_input": time_input,
        "time_heads": section.get("time_heads", 1) if time_input else 1,
    }
    if tuple(atom_types) != QM9_ATOMIC_NUMBERS:
        config["atom_types"] = [int(z) for z in atom_types]
    return MoleculePredictor.from_config(config)


def network_from_config(config: Mapping[str, Any]) -> torch.nn.Module:
    """The (untrained) network a stored ``.config`` describes."""
    if "out_dim" in config:
        return MoleculePredictor.from_config(config)
    return build_score_model(config)

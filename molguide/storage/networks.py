"""Trained networks rebuilt from their saved state: one loader for every kind.

A network's state is its weights plus the metadata that rebuilds it: its own
``config`` (``model_config``), the diffusion it was trained with, and what its kind
needs (label binning, property scaling). :func:`network_from_state` turns such a state
into the network, :func:`load_network` a training checkpoint, and
:func:`inference_state` reduces a checkpoint to what inference needs (the EMA weights).
Run folders, MLflow runs and saved model folders (:mod:`molguide.storage.components`,
:mod:`molguide.storage.pretrained`) all load through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from molguide.data.elements import QM9_ATOMIC_NUMBERS
from molguide.diffusion.atom_counts import NodeCountDistribution
from molguide.diffusion.process import ONEHOT_SCALE, LossSettings, VPDiffusion
from molguide.diffusion.schedule import NoiseSchedule
from molguide.models import ScoreNetwork
from molguide.models.predictor import MoleculePredictor
from molguide.models.residual import ResidualScoreNetwork, is_residual_config
from molguide.storage.checkpoints import CheckpointError, load_checkpoint, load_weights
from molguide.training.trainer import ema_weights

KINDS = ("score", "classifier", "evaluator", "reward", "cfg")
_TRAINING_ONLY = ("model", "ema", "optimizer", "losses")


def build_score_model(model_config: Mapping) -> ScoreNetwork | ResidualScoreNetwork:
    """A ScoreNetwork from the ``model`` section (as a dict); bad keys name the section.
    A config with ``correction`` (a reward network's) builds a :class:`ResidualScoreNetwork`."""
    config = {"num_atom_types": len(QM9_ATOMIC_NUMBERS), **model_config}
    cls = ResidualScoreNetwork if is_residual_config(config) else ScoreNetwork
    return cls.from_config(config)


def build_predictor(
    section: Mapping, out_dim: int, time_input: bool, num_atom_types: int = len(QM9_ATOMIC_NUMBERS)
) -> MoleculePredictor:
    """A MoleculePredictor from a classifier/evaluator section (as a dict)."""
    return MoleculePredictor.from_config(
        {
            "num_atom_types": num_atom_types,
            "backbone": section["backbone"],
            "backbone_kwargs": section["backbone_kwargs"],
            "out_dim": out_dim,
            "time_input": time_input,
            "time_heads": section.get("time_heads", 1) if time_input else 1,
        }
    )


def diffusion_from_config(diffusion_config: Mapping) -> VPDiffusion:
    """The VP diffusion a network was trained with (from its stored ``diffusion_config``)."""
    dc = diffusion_config
    settings = LossSettings(**dc.get("loss", {}))  # checkpoints before x0 networks have none
    schedule = NoiseSchedule(dc["schedule"], dc["steps"], dc["precision"])
    return VPDiffusion(schedule, float(dc.get("onehot_scale", ONEHOT_SCALE)), settings)


def inference_state(
    checkpoint_state: Mapping, use_ema: bool = True, source: str | Path = "checkpoint"
) -> dict:
    """A training checkpoint reduced to what inference needs: the EMA ``weights`` (or the
    raw ones, ``use_ema=False``) plus metadata."""
    if not {"model", "ema"} <= set(checkpoint_state):
        raise CheckpointError(f"{source}: not a molguide training checkpoint (no model or EMA weights)")
    out = {k: v for k, v in checkpoint_state.items() if k not in _TRAINING_ONLY}
    out["weights"] = ema_weights(checkpoint_state["ema"]) if use_ema else checkpoint_state["model"]
    return out


def atom_types_of(state: Mapping) -> tuple[int, ...]:
    """Atomic numbers of a score-type network's atom-type channels, from its (checkpoint or
    inference) state; checkpoints from before atom types were recorded are QM9's."""
    return tuple(int(z) for z in state.get("atom_types", QM9_ATOMIC_NUMBERS))


def load_network(
    checkpoint: str | Path, kind: str, device: str | torch.device = "cpu", use_ema: bool = True
) -> tuple[torch.nn.Module, dict]:
    """(network in eval mode, its inference state) from a training checkpoint of ``kind``
    (``<output_dir>/<kind>/last.pt``); a missing file says which step writes it."""
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"no {kind} checkpoint at {path}; run train-{kind} (or its pipeline) first")
    state = inference_state(load_checkpoint(path, map_location=device), use_ema, path)
    return network_from_state(kind, state, device, path), state


NETWORK_CLASSES = {
    "score": ScoreNetwork,
    "reward": ScoreNetwork,
    "cfg": ScoreNetwork,
    "classifier": MoleculePredictor,
    "evaluator": MoleculePredictor,
}


def network_from_state(
    kind: str, state: Mapping, device: str | torch.device = "cpu", source: str | Path = "checkpoint"
) -> torch.nn.Module:
    """Rebuild the network of one component from its inference state (eval mode).

    The network's own ``config`` (saved as ``model_config`` by the training pipelines and
    as ``model`` in a saved folder's config.json) rebuilds it; predictor checkpoints
    written before networks described themselves carry ``network_config`` (their config
    section) with ``out_dim`` and ``time_input`` instead.
    """
    if kind not in NETWORK_CLASSES:
        raise ValueError(f"unknown component {kind!r}; one of {KINDS}")
    if "model_config" in state:
        config = {"num_atom_types": len(QM9_ATOMIC_NUMBERS), **state["model_config"]}
        residual = kind == "reward" and is_residual_config(config)
        cls = ResidualScoreNetwork if residual else NETWORK_CLASSES[kind]
        model = cls.from_config(config)
    else:
        model = build_predictor(state["network_config"], int(state["out_dim"]), bool(state["time_input"]))
    load_weights(model, state["weights"], source)
    return model.to(device).eval()


def load_score_model(
    path: str | Path, use_ema: bool = True, device: str = "cpu"
) -> tuple[ScoreNetwork, VPDiffusion, NodeCountDistribution, dict]:
    """(model, diffusion, node distribution, checkpoint state) from a train-score checkpoint."""
    model, state = load_network(path, "score", device, use_ema)
    diffusion = diffusion_from_config(state["diffusion_config"])
    nodes = NodeCountDistribution.from_state_dict(state["node_counts"])
    return model, diffusion, nodes, state

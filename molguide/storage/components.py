"""Trained networks as loadable parts: built from their config, exported for inference,
loaded again from a run folder or from an MLflow run id.

A *component* is one trained network plus the metadata that rebuilds it (its config,
the diffusion settings, the label binning, the property scaling). Its inference state
is the training checkpoint without optimiser and raw weights: ``weights`` holds the
EMA weights. Components are logged to MLflow with ``mlflow.pytorch.log_state_dict``
under ``models/<kind>`` and read back with ``weights_only=True`` (no pickled code).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from molguide.diffusion.atom_counts import NodeCountDistribution
from molguide.diffusion.process import VPDiffusion
from molguide.guidance.targets import PropertyTarget
from molguide.storage.checkpoints import CheckpointError, load_checkpoint
from molguide.storage.networks import (
    KINDS,
    atom_types_of,
    diffusion_from_config,
    inference_state,
    network_from_state,
)

log = logging.getLogger(__name__)


@dataclass
class Components:
    """The trained parts of a molguide run; any but ``score`` may be missing."""

    states: dict[str, dict]
    source: str
    device: str = "cpu"
    networks: dict[str, torch.nn.Module] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "score" not in self.states:
            raise CheckpointError(f"{self.source}: no score model found (models/score or score/last.pt)")
        for kind, state in self.states.items():
            self.networks[kind] = network_from_state(kind, state, self.device, f"{self.source} ({kind})")

    def has(self, kind: str) -> bool:
        return kind in self.networks

    def network(self, kind: str) -> torch.nn.Module:
        """The network of ``kind``; a clear error when this run did not train one."""
        if kind not in self.networks:
            raise ValueError(f"{self.source} has no {kind} model (it has: {', '.join(self.networks)})")
        return self.networks[kind]

    @property
    def diffusion(self) -> VPDiffusion:
        return diffusion_from_config(self.states["score"]["diffusion_config"])

    @property
    def atom_types(self) -> tuple[int, ...]:
        """Atomic numbers of the score model's type channels (QM9's for older checkpoints)."""
        return atom_types_of(self.states["score"])

    @property
    def nodes(self) -> NodeCountDistribution:
        return NodeCountDistribution.from_state_dict(self.states["score"]["node_counts"])

    @property
    def sampler_settings(self) -> dict:
        """How the score model samples best (a saved model's ``sampler`` record; empty: defaults)."""
        return dict(self.states["score"].get("sampler", {}))

    @property
    def target(self) -> PropertyTarget | None:
        """The classifier's (else the CFG model's) target binning."""
        for kind in ("classifier", "cfg"):
            if kind in self.states:
                return PropertyTarget.from_dict(self.states[kind]["target"])
        return None

    def check_consistent(self) -> None:
        """Raise when the parts were trained for different targets or properties."""
        target = self.target
        if target is None:
            return
        if "evaluator" in self.states and self.states["evaluator"]["property"] != target.name:
            raise ValueError(
                f"{self.source}: the evaluator predicts {self.states['evaluator']['property']}, "
                f"the classifier {target.name}"
            )
        cfg_target = PropertyTarget.from_dict(self.states["cfg"]["target"]) if "cfg" in self.states else None
        if cfg_target is not None and cfg_target.edges != target.edges:
            raise ValueError(f"{self.source}: the CFG model and the classifier use different target bins")
        if "reward" in self.states and self.states["reward"]["property"] != target.name:
            raise ValueError(
                f"{self.source}: the reward model rewards {self.states['reward']['property']}, "
                f"the classifier {target.name}"
            )


def states_from_folder(folder: str | Path, device: str = "cpu") -> dict[str, dict]:
    """Inference states of the components found in a run folder (``<kind>/last.pt``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such run folder")
    states = {}
    for kind in KINDS:
        path = folder / kind / "last.pt"
        if path.exists():
            states[kind] = inference_state(load_checkpoint(path, map_location=device), source=path)
    return states


def log_component(kind: str, state: Mapping) -> None:
    """Log one component's inference state to the active MLflow run under ``models/<kind>``."""
    import mlflow.pytorch

    mlflow.pytorch.log_state_dict(dict(state), f"models/{kind}")


def states_from_run(run_id: str, device: str = "cpu") -> dict[str, dict]:
    """Components logged to an MLflow run or its descendants (nearest first).

    A quickstart or full run holds no models itself; its child runs (train-score,
    train-classifier, ...) do, so the search walks down the run tree breadth first.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    from molguide.runs.tracking import tracking_uri

    # runs:/ URIs resolve through MLflow's global URI, which an earlier run in this process
    # may have set to another store: follow $MLFLOW_TRACKING_URI, as every molguide call does.
    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient(tracking_uri())
    try:
        root = client.get_run(run_id)
    except MlflowException as err:
        raise CheckpointError(f"runs:/{run_id}: no such run in {tracking_uri()} ({err.message})") from err
    states: dict[str, dict] = {}
    queue = [root]
    while queue:
        run = queue.pop(0)
        rid = run.info.run_id
        for art in client.list_artifacts(rid, "models"):
            kind = Path(art.path).name
            if art.is_dir and kind in KINDS and kind not in states:
                uri = f"runs:/{rid}/models/{kind}"
                states[kind] = _logged_state(uri, device)
                log.info("loaded %s model from %s", kind, uri)
        queue += client.search_runs(
            [run.info.experiment_id], f"tags.mlflow.parentRunId = '{rid}'", order_by=["start_time ASC"]
        )
    return states


def _logged_state(uri: str, device: str) -> dict:
    """A component's state logged by :func:`log_component`, read like any checkpoint (one
    CheckpointError naming the artifact when it cannot be used)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        folder = Path(mlflow.artifacts.download_artifacts(uri))
    except (MlflowException, OSError) as err:
        raise CheckpointError(f"{uri}: cannot download the model ({err})") from err
    files = sorted(folder.glob("*.pth"))
    if len(files) != 1:
        raise CheckpointError(f"{uri}: expected one state_dict.pth, found {[f.name for f in files]}")
    return load_checkpoint(files[0], map_location=device)


def load_components(source: str | Path, device: str = "cpu") -> Components:
    """Components from a shipped name (``"qm9"``), a saved model folder
    (:func:`molguide.storage.pretrained.save_pretrained`), ``runs:/<run_id>`` (MLflow) or a run
    folder (``output_dir``). A ``device`` this machine lacks is a
    :class:`~molguide.runs.preflight.PreflightError` before anything is read."""
    from molguide.runs.preflight import check_device
    from molguide.storage.pretrained import CONFIG_FILE, SHIPPED, load_pretrained

    check_device(device)
    source = str(source)
    if source in SHIPPED or (Path(source) / CONFIG_FILE).is_file():
        states = {"score": load_pretrained(source, device).component_state()}
    elif source.startswith("runs:/"):
        run_id = source.removeprefix("runs:/").strip("/").split("/")[0]
        states = states_from_run(run_id, device)
    else:
        states = states_from_folder(source, device)
    components = Components(states, source, device)
    components.check_consistent()
    return components

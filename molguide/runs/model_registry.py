"""Trained networks as MLflow models, registered under stable names (docs/mlflow.md).

Every network a pipeline trains (or takes from ``model.pretrained``) is logged to its
run as an MLflow model: a ``python_function`` model whose artifact is the same
self-describing folder molguide writes and loads (``config.json`` +
``model.safetensors``), with a signature, and registered as a new version of
``molguide-<config name>-<network>`` (``molguide-quickstart-classifier``,
``molguide-quickstart-classifier-mu_D`` for a further property). ``molguide.load``
takes ``models:/<name>/<version>`` (or ``/latest``, ``@alias``); MLflow's own
``mlflow.pyfunc.load_model`` works too: a score network's ``predict`` generates
molecules, an evaluator's predicts its property for 3D molecules.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ARTIFACT_KEY = "network"  # the key of the network folder among the model's artifacts
SCORE_KINDS = ("score",)  # kinds whose predict samples molecules
PROPERTY_KINDS = ("evaluator",)  # kinds whose predict reads clean 3D molecules


def registered_name(config_name: str, network: str) -> str:
    """The stable registry name of a run's network: ``molguide-<config>-<network>``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"molguide-{config_name}-{network}")


def _signature(kind: str, prop: str | None):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    if kind in SCORE_KINDS:
        inputs = Schema([ColSpec("long", "n"), ColSpec("long", "seed")])
        outputs = Schema([ColSpec("string", "smiles"), ColSpec("string", "molblock")])
    elif kind in PROPERTY_KINDS:
        inputs = Schema([ColSpec("string", "molblock")])
        outputs = Schema([ColSpec("double", prop or "value")])
    else:  # guidance networks act inside the sampler: no standalone signature to give
        return None
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_network_model(folder: str | Path, name: str) -> Any:
    """Log the exported network in ``folder`` to the active run as an MLflow model named
    after the folder and register it as a new version of ``name``; returns the model
    version (None when no run is active or the store cannot register it: a warning)."""
    import mlflow

    from molguide.storage.trained_run import read_network

    if mlflow.active_run() is None:
        return None
    folder = Path(folder)
    trained = read_network(folder)
    from mlflow.exceptions import MlflowException

    try:
        with warnings.catch_warnings():  # hints and an input example MLflow suggests for other models
            warnings.filterwarnings("ignore", message=".*(type hints|input example).*", category=UserWarning)
            info = _log(folder, trained, name)
    except MlflowException as err:  # a store without a registry must not fail a finished training
        log.warning("%s: not registered as %s (%s); it is logged with its run", folder, name, err.message)
        return None
    version = info.registered_model_version
    log.info("registered %s as models:/%s/%s", folder, name, version)
    return version


def _log(folder: Path, trained, name: str):
    import mlflow

    from molguide import __version__
    from molguide.runs.mlflow_model import MolguideNetworkModel

    return mlflow.pyfunc.log_model(
        name=folder.name.replace(".", "-"),
        python_model=MolguideNetworkModel(),  # imports mlflow.pyfunc: only when logging
        artifacts={ARTIFACT_KEY: str(folder)},
        signature=_signature(trained.kind, trained.property),
        # Given, not inferred: inference would import the model in a subprocess (seconds).
        pip_requirements=[f"molguide=={__version__}"],
        registered_model_name=name,
        metadata={"molguide_kind": trained.kind, "molguide_property": trained.property or ""},
    )


def download_network_folder(uri: str, into: Path) -> Path:
    """The network folder of a registered molguide model (``models:/name/version``),
    downloaded into ``into``; a ValueError naming the URI when it is not one."""
    import mlflow.artifacts
    from mlflow.models import Model

    from molguide.runs.tracking import check_tracking, tracking_uri

    check_tracking(read_only=True)  # a store that is not there is an error, not a new empty one
    mlflow.set_tracking_uri(tracking_uri())
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(into)))
    artifacts = Model.load(str(local)).flavors.get("python_function", {}).get("artifacts", {})
    entry = artifacts.get(ARTIFACT_KEY)
    if not entry:
        raise ValueError(f"{uri}: not a molguide model (no {ARTIFACT_KEY!r} artifact)")
    folder = (local / entry["path"]).resolve()
    if not folder.is_relative_to(local.resolve()):
        raise ValueError(f"{uri}: its network path {entry['path']!r} leaves the downloaded model")
    return folder

"""A trained run as one object and one on-disk format, read by one loader.

On disk, a trained run is a folder with an index and a subfolder per trained network
(the layout of diffusers' pipelines)::

    <folder>/molguide_run.json         the format, which networks, the target, the data set
    <folder>/<kind>/config.json        the network's own config, its training step and the
                                       record of its kind (molguide.storage.metadata)
    <folder>/<kind>/model.safetensors  its (EMA) weights, nothing else (no pickled code)
    <folder>/<kind>.<property>/...     a guidance network of a further property (a run
                                       that guides several properties at once)
    <folder>/MODEL_CARD.md             optional

A run's ``output_dir`` is such a folder (the training checkpoints ``<kind>/last.pt`` lie
beside, for resuming only), so are a saved model (:meth:`TrainedRun.save_pretrained`),
the generators shipped in the package, and what a training run logs to MLflow (the
artifact folder ``trained_run``). :meth:`TrainedRun.from_pretrained` reads every one of
them, and folders of the first format (one score network, ``molguide-score-model``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from molguide.data.elements import QM9_ATOMIC_NUMBERS
from molguide.diffusion.atom_counts import NodeCountDistribution
from molguide.diffusion.process import VPDiffusion
from molguide.generation.limits import short
from molguide.guidance.targets import PropertyTarget
from molguide.models.build import network_from_config
from molguide.storage.checkpoints import CheckpointError, ema_weights, load_checkpoint, load_weights
from molguide.storage.files import atomic_write
from molguide.storage.metadata import (
    FIRST_FORMAT,
    FORMAT_VERSION,
    NETWORK_FORMAT,
    RECORDS,
    RUN_FORMAT,
    NetworkConfig,
    NetworkFile,
    RunIndex,
    ScoreRecord,
)

log = logging.getLogger(__name__)

INDEX_FILE = "molguide_run.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "MODEL_CARD.md"
MAX_JSON_BYTES = 16 * 2**20  # a config.json or index is a few kB; refuse to parse gigabytes
MLFLOW_FOLDER = "trained_run"  # where training runs log their networks
SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = {"qm9": SHIPPED_ROOT / "qm9"}  # name -> folder inside the package
# What a source may be (every error about a source lists it).
SOURCE_FORMS = (
    "a trained-run folder, file://<folder>, runs:/<run_id>[/<path>] or models:/<name>/<version> (MLflow) "
    "or a shipped name"
)
TARGET_KINDS = ("classifier", "cfg")  # kinds whose record holds the run's target binning


def network_kind(name: str) -> str:
    """The kind of a run's network from its name (``classifier.mu_D`` -> ``classifier``)."""
    return name.split(".", 1)[0]


@dataclass
class TrainedNetwork:
    """One trained network: the module (eval mode), its kind's record and its training step."""

    kind: str
    network: torch.nn.Module
    record: Any  # the kind's record (molguide.storage.metadata.RECORDS)
    step: int
    source: str

    @property
    def property(self) -> str | None:
        """The property it was trained for (None: the score network)."""
        target = getattr(self.record, "target", None)
        if isinstance(target, dict):
            return target.get("name")
        return getattr(self.record, "property", None)


# ----------------------------------------------------------------------------- one network


def save_network(
    folder: str | Path,
    kind: str,
    network: torch.nn.Module,
    record: Any,
    step: int,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``<folder>/config.json`` and ``model.safetensors`` (``weights`` default to the
    network's own) atomically; returns the folder."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = weights if weights is not None else network.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    try:  # the schema read_network reads with: what is written here can be read back
        config = NetworkFile(
            format=NETWORK_FORMAT,
            format_version=FORMAT_VERSION,
            kind=kind,
            step=int(step),
            network=dict(network.config),
            record=RECORDS[kind].model_validate(record).model_dump(mode="json"),
        ).model_dump(mode="json", exclude_unset=True)
    except ValidationError as err:
        raise ValueError(f"{folder / CONFIG_FILE}: cannot save this network: {_first_error(err)}") from None
    payload = save(tensors)
    atomic_write(folder / WEIGHTS_FILE, lambda fh: fh.write(payload))
    text = json.dumps(config, indent=1).encode()
    atomic_write(folder / CONFIG_FILE, lambda fh: fh.write(text))
    return folder


def read_network(folder: str | Path, device: str | torch.device = "cpu") -> TrainedNetwork:
    """The network saved in ``folder`` by :func:`save_network`; every problem is one
    :class:`CheckpointError` naming the file and what is wrong."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    config = _read_json(path)
    _check_format(path, config, NETWORK_FORMAT)
    spec = _validated(NetworkFile, config, path)
    record = _validated(RECORDS[spec.kind], spec.record, path, "record")
    network = _built(spec.network, folder / WEIGHTS_FILE, device, record)
    return TrainedNetwork(spec.kind, network, record, spec.step, str(folder))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: not a saved molguide network or run (no {path.name})")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path}: {path.stat().st_size} bytes, not a molguide config (at most "
                                  f"{MAX_JSON_BYTES})")  # fmt: skip
        value = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{path}: unreadable ({_short(str(err), 200)})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: unreadable (nested too deeply for a molguide config)") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: holds a {type(value).__name__}, not a JSON object")
    return value


def _check_format(path: Path, config: Mapping, expected: str) -> None:
    """The format and its version, before the schema: a newer file may hold keys this
    molguide does not know, and the way out is then an upgrade, not a fix of the file."""
    if config.get("format") != expected:
        raise CheckpointError(f"{path}: not a {expected} file (format {_short(config.get('format'))})")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: format_version must be a whole number >= 1, got {_short(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version} is newer than this molguide reads ({FORMAT_VERSION}); "
            "upgrade molguide"
        )


def _first_error(err: ValidationError, key: str | None = None) -> str:
    """``key.path: what is wrong (got <the value, shortened>)`` of a validation's first error."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in ((key,) if key else ()) + tuple(first["loc"])) or "(top level)"
    # A whole section as the input says nothing the key path does not.
    shown = "input" in first and not isinstance(first["input"], dict)
    got = f" (got {_short(first['input'])})" if shown else ""
    return f"{where}: {first['msg'].removeprefix('Value error, ')}{got}"


def _validated(cls, value: Any, path: Path, key: str | None = None):
    """``value`` checked against the pydantic model ``cls``; its first error is one
    CheckpointError naming the file and the key."""
    try:
        return cls.model_validate(value)
    except ValidationError as err:
        raise CheckpointError(f"{path}: {_first_error(err, key)}") from None


def _short(value: Any, limit: int = 60) -> str:
    """A value from a file as an error message shows it: a message of the file's own (a
    string) cut to ``limit``, anything else as a bounded repr."""
    if isinstance(value, str) and limit > 60:
        return value if len(value) <= limit else value[: limit - 3] + "..."
    return short(value, limit)


def _built(spec: NetworkConfig, weights_path: Path, device, record: Any) -> torch.nn.Module:
    """The network ``spec`` describes (checked already: its sizes are bounded) with the weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    network_config = spec.as_dict()
    set_here = "num_atom_types" in spec.model_fields_set  # else the builder's default
    if isinstance(record, ScoreRecord) and set_here and spec.num_atom_types != len(record.atom_types):
        raise CheckpointError(
            f"{weights_path.parent / CONFIG_FILE}: network.num_atom_types: {spec.num_atom_types}, but "
            f"record.atom_types has {len(record.atom_types)} atom types"
        )
    try:
        model = network_from_config(network_config)
    except (TypeError, ValueError, KeyError) as err:
        path = weights_path.parent / CONFIG_FILE
        raise CheckpointError(f"{path}: network: {_short(str(err), 200)}") from None
    try:
        weights = load_file(str(weights_path), device="cpu")
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{weights_path}: cannot read weights ({err})") from None
    load_weights(model, weights, weights_path)
    return model.to(device).eval()


# ----------------------------------------------------------------------------- training checkpoints


def record_from_checkpoint(kind: str, state: Mapping, sampler: Mapping | None = None) -> Any:
    """The record of a ``kind`` network from its training checkpoint's metadata."""
    cls = RECORDS[kind]
    fields = {name: state[name] for name in cls.model_fields if name in state}
    if "diffusion" in cls.model_fields and "diffusion_config" in state:
        fields["diffusion"] = state["diffusion_config"]
    if kind == "score":
        fields["atom_types"] = [int(z) for z in state.get("atom_types", QM9_ATOMIC_NUMBERS)]
        fields["node_count_probs"] = [float(p) for p in state["node_counts"]["probs"]]
        fields["training"] = training_record(state)
        fields["sampler"] = dict(sampler or {})
    return cls.model_validate(fields)


def training_record(state: Mapping) -> dict:
    """How a score network was trained, from its checkpoint: steps, data, optimiser, epochs,
    hours (summed over every session) and what it was warm-started from."""
    steps = int(state.get("step", 0))
    record: dict[str, Any] = {"steps": steps, "data": state.get("data_config", {})}
    optimiser = state.get("train_config", {})
    record.update({k: optimiser[k] for k in ("lr", "ema_decay") if k in optimiser})
    if optimiser.get("lr_decay_start") is not None:  # finished on a decay branch
        record["lr_decay"] = {k: optimiser[k] for k in ("lr_decay_start", "lr_decay_steps", "lr_final")}
    batch = optimiser.get("batch_size")
    if state.get("n_molecules") and batch:
        record["batch_size"] = int(batch)
        record["epochs"] = round(steps * int(batch) / int(state["n_molecules"]), 2)
    if "train_seconds" in state:
        record["train_hours"] = float(state["train_seconds"]) / 3600
        record["cpu_hours"] = float(state["cpu_seconds"]) / 3600
    warm = state.get("warm_start")
    if warm:  # grown from another run: its cost counts too
        record["warm_start"] = {
            "source": warm.get("source"),
            "steps": warm.get("steps"),
            "cpu_hours": float(warm.get("cpu_seconds") or 0.0) / 3600,
            "model": warm.get("model_config", {}).get("backbone_kwargs"),
        }
        record["cpu_hours_with_warm_start"] = record.get("cpu_hours", 0.0) + record["warm_start"]["cpu_hours"]
    return record


def export_checkpoint(
    checkpoint: str | Path | Mapping,
    kind: str,
    folder: str | Path,
    training: Mapping | None = None,
    sampler: Mapping | None = None,
) -> Path:
    """A training checkpoint (a path or its loaded state) -> the exported network in
    ``folder`` (EMA weights); ``training`` entries join a score network's training record,
    ``sampler`` records how it samples best. Returns the folder."""
    source = checkpoint if not isinstance(checkpoint, Mapping) else "checkpoint"
    state = load_checkpoint(checkpoint) if not isinstance(checkpoint, Mapping) else checkpoint
    missing = [k for k in ("model_config", "ema", "step") if k not in state]
    if missing:
        raise CheckpointError(f"{source}: not a molguide training checkpoint (missing {', '.join(missing)})")
    try:
        record = record_from_checkpoint(kind, state, sampler)
    except ValidationError as err:
        raise CheckpointError(
            f"{source}: cannot export its {kind} network ({err.errors()[0]['msg']})"
        ) from None
    except (KeyError, TypeError) as err:  # e.g. a classifier's checkpoint exported as a score network
        raise CheckpointError(f"{source}: not a {kind} checkpoint (no usable {err})") from None
    if training:
        record = record.model_copy(update={"training": {**record.training, **training}})
    weights = ema_weights(state["ema"])
    network = network_from_config(state["model_config"])
    load_weights(network, weights, source)
    return save_network(folder, kind, network, record, int(state["step"]))


def export_run(folder: str | Path, kinds: list[str] | None = None) -> Path:
    """Export every ``<folder>/<kind>/last.pt`` (or those of ``kinds``) beside itself and
    write the folder's index: a run folder that samples. Returns the folder."""
    folder = Path(folder)
    for kind in kinds or list(RECORDS):
        checkpoint = folder / kind / "last.pt"
        if checkpoint.is_file():
            export_checkpoint(checkpoint, kind, folder / kind)
    return write_index(folder)


def write_index(folder: str | Path, dataset: str | None = None) -> Path:
    """Write ``<folder>/molguide_run.json`` from the networks saved in its subfolders."""
    folder = Path(folder)
    networks = {}
    for kind in RECORDS:
        further = sorted(p.parent.name for p in folder.glob(f"{kind}.*/{CONFIG_FILE}"))
        for name in [kind, *further]:
            path = folder / name / CONFIG_FILE
            if path.is_file():
                networks[name] = _read_json(path)
    if not networks:
        raise CheckpointError(f"{folder}: no saved network to index (no <kind>/{CONFIG_FILE})")
    training = networks["score"]["record"].get("training", {}) if "score" in networks else {}
    target = next((networks[k]["record"]["target"] for k in TARGET_KINDS if k in networks), None)
    index = {
        "format": RUN_FORMAT,
        "format_version": FORMAT_VERSION,
        "networks": {name: name for name in networks},
        "dataset": dataset or training.get("data", {}).get("dataset"),
        "target": target,
    }
    text = json.dumps(index, indent=1).encode()
    return atomic_write(folder / INDEX_FILE, lambda fh: fh.write(text)).parent


# ----------------------------------------------------------------------------- a trained run


class TrainedRun:
    """The trained networks of one run (any but ``score`` may be missing), as one object.

    ``TrainedRun.from_pretrained(source)`` reads a shipped name (``"qm9"``), a saved or
    exported folder, a run's ``output_dir``, ``runs:/<run_id>`` (MLflow: the run and the
    runs nested in it, nearest first; ``runs:/<run_id>/<path>`` for a folder logged there);
    :meth:`save_pretrained` writes the folder.
    """

    def __init__(
        self,
        networks: Mapping[str, TrainedNetwork],
        source: str,
        device: str = "cpu",
        card: str | None = None,
    ) -> None:
        if "score" not in networks:
            raise CheckpointError(f"{source}: no score network (score/{CONFIG_FILE})")
        self.networks = dict(networks)
        self.source, self.device, self.card = source, device, card

    def __repr__(self) -> str:
        return f"TrainedRun({self.source}: {', '.join(self.networks)})"

    # ------------------------------------------------------------------ access
    def has(self, kind: str, prop: str | None = None) -> bool:
        """Whether the run has a ``kind`` network (for ``prop``, when given)."""
        return self._name(kind, prop) in self.networks

    def has_any(self, kind: str) -> bool:
        """Whether the run has a ``kind`` network for any property."""
        return any(network_kind(name) == kind for name in self.networks)

    def network(self, kind: str, prop: str | None = None) -> torch.nn.Module:
        """The network of ``kind`` (for property ``prop``; default: the run's first
        property); a clear error when this run did not train one."""
        return self._trained(kind, prop).network

    def record(self, kind: str, prop: str | None = None) -> Any:
        """The record of ``kind`` (:mod:`molguide.storage.metadata`)."""
        return self._trained(kind, prop).record

    def step(self, kind: str, prop: str | None = None) -> int:
        return self._trained(kind, prop).step

    def _name(self, kind: str, prop: str | None) -> str:
        """A network's name: its kind for the run's first property, ``<kind>.<property>``
        for a further one."""
        if prop is None or (kind in self.networks and self.networks[kind].property == prop):
            return kind
        return f"{kind}.{prop}"

    def _trained(self, kind: str, prop: str | None = None) -> TrainedNetwork:
        name = self._name(kind, prop)
        if name not in self.networks:
            what = f"{kind} model" + (f" for {prop}" if prop is not None else "")
            raise ValueError(f"{self.source} has no {what} (it has: {', '.join(self.networks)})")
        return self.networks[name]

    @property
    def properties(self) -> list[str]:
        """The properties its guidance networks and evaluators were trained for, the
        first property first."""
        return list(dict.fromkeys(t.property for t in self.networks.values() if t.property is not None))

    def binning(self, prop: str) -> PropertyTarget | None:
        """The target binning ``prop``'s classifier (else CFG model) was trained with."""
        for kind in TARGET_KINDS:
            if self.has(kind, prop):
                return self.record(kind, prop).property_target
        return None

    def with_guidance(self, other: TrainedRun) -> TrainedRun:
        """This run with the guidance networks and evaluators of ``other`` added (its score
        network is left out): one generator guided towards several properties trained in
        separate runs. A network for a property and kind this run has already, or one
        trained on another diffusion or atom types, is a ValueError naming it."""
        networks = dict(self.networks)
        diffusion = self.record("score").diffusion
        for name, trained in other.networks.items():
            kind = network_kind(name)
            if kind == "score":
                continue
            prop = trained.property
            where = f"{other.source}: its {kind} network for {prop}"
            own = getattr(trained.record, "diffusion", None)
            if own is not None and _noise_process(own) != _noise_process(diffusion):
                raise ValueError(f"{where} was trained on another diffusion than {self.source}'s score")
            width = getattr(trained.network, "config", {}).get("num_atom_types")
            if width is not None and width != len(self.atom_types):
                raise ValueError(
                    f"{where} reads {width} atom types, {self.source}'s score network {len(self.atom_types)}"
                )
            first = next((t.property for t in networks.values() if t.property is not None), prop)
            new = kind if prop == first else f"{kind}.{prop}"
            if new in networks:
                raise ValueError(f"{other.source}: {self.source} has its {kind} network for {prop} already")
            networks[new] = trained
        run = TrainedRun(networks, f"{self.source} + {other.source}", self.device, self.card)
        run.check_consistent()
        return run

    @property
    def diffusion(self) -> VPDiffusion:
        return VPDiffusion.from_config(self.record("score").diffusion.model_dump())

    @property
    def atom_types(self) -> tuple[int, ...]:
        """Atomic numbers of the score network's type channels."""
        return tuple(self.record("score").atom_types)

    @property
    def nodes(self) -> NodeCountDistribution:
        probs = torch.tensor(self.record("score").node_count_probs, dtype=torch.float64)
        return NodeCountDistribution.from_state_dict({"probs": probs})

    @property
    def sampler_settings(self) -> dict:
        """How the score network samples best (empty: the defaults)."""
        return dict(self.record("score").sampler)

    @property
    def target(self) -> PropertyTarget | None:
        """The first property's target binning (its classifier's, else its CFG model's)."""
        for kind in TARGET_KINDS:
            if kind in self.networks:
                return self.record(kind).property_target
        return None

    def check_consistent(self) -> None:
        """Raise when the networks of one property disagree: trained for different
        properties or target bins, or filed under another property's name."""
        for name, trained in self.networks.items():
            prop = name.partition(".")[2]
            if prop and trained.property != prop:
                raise ValueError(f"{self.source}: the network {name!r} was trained for {trained.property}")
        target = self.target
        if target is None:
            return
        for kind, what in (("evaluator", "the evaluator predicts"), ("reward", "the reward model rewards")):
            prop = self.networks[kind].property if kind in self.networks else target.name
            if prop != target.name:
                raise ValueError(f"{self.source}: {what} {prop}, the classifier {target.name}")
        for prop in self.properties:
            binning = self.binning(prop)
            if not self.has("cfg", prop) or binning is None:
                continue
            if self.record("cfg", prop).property_target.edges != binning.edges:
                raise ValueError(f"{self.source}: the CFG model and the classifier use different target bins")

    # ------------------------------------------------------------------ files
    def save_pretrained(self, folder: str | Path, card: str | None = None) -> Path:
        """Write the run as a folder :meth:`from_pretrained` reads (index, a subfolder per
        network, the model card when given)."""
        folder = Path(folder)
        for name, trained in self.networks.items():
            save_network(folder / name, trained.kind, trained.network, trained.record, trained.step)
        text = card if card is not None else self.card
        if text is not None:
            atomic_write(folder / CARD_FILE, lambda fh: fh.write(text.encode()))
        return write_index(folder)

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str = "cpu") -> TrainedRun:
        """The trained run at ``source`` (see the class docstring). A ``device`` this
        machine lacks is a :class:`~molguide.runs.preflight.PreflightError` before anything is read."""
        from molguide.runs.preflight import check_device

        check_device(device)
        if not isinstance(source, (str, Path)):
            raise CheckpointError(f"{_short(source)}: not a source; give {SOURCE_FORMS}")
        name = str(source)
        scheme = _scheme(name)
        if scheme == "runs" and not name.startswith("runs:/"):
            raise CheckpointError(f"{name}: an MLflow run is runs:/<run_id>")
        if name.startswith("runs:/") and not name.removeprefix("runs:/").strip("/"):
            raise CheckpointError(f"{name}: give the run id, runs:/<run_id>")
        if name.startswith("runs:/") and "/" not in name.removeprefix("runs:/").strip("/"):
            run = cls(_networks_of_mlflow_run(name.removeprefix("runs:/").strip("/"), device), name, device)
        elif scheme == "models":
            run = cls._from_registry(name, device)
        elif name.startswith("runs:/"):
            with tempfile.TemporaryDirectory(prefix="molguide-") as tmp:
                run = cls._from_folder(_download(name, Path(tmp)), device, name)
        elif scheme == "file":  # a local folder written as a URI
            from urllib.parse import unquote, urlparse

            parsed = urlparse(name)
            if parsed.netloc not in ("", "localhost"):
                raise CheckpointError(f"{name}: file:// URIs of other hosts are not supported")
            return cls.from_pretrained(Path(unquote(parsed.path)), device)
        elif scheme:
            raise CheckpointError(
                f"{name}: {scheme}: URIs are not supported; give {SOURCE_FORMS} "
                "(copy remote models to a local folder first)"
            )
        elif _shipped_name(name) is not None and not (name != _shipped_name(name) and Path(name).is_dir()):
            shipped = _shipped_name(name)
            folder = SHIPPED[shipped]
            if not ((folder / INDEX_FILE).is_file() or (folder / CONFIG_FILE).is_file()):
                raise CheckpointError(
                    f"shipped model {shipped!r}: {folder / INDEX_FILE} is missing from this install"
                )
            run = cls._from_folder(folder, device, shipped)
        else:
            folder = Path(source)
            if not name.strip():
                raise CheckpointError(f"an empty source: give {SOURCE_FORMS} (shipped: {', '.join(SHIPPED)})")
            if not folder.is_dir():
                what = "a file, not a folder" if folder.exists() else "no such folder"
                raise CheckpointError(
                    f"{source}: {what}, and not a shipped model (shipped: {', '.join(sorted(SHIPPED))}); "
                    f"give {SOURCE_FORMS}"
                )
            run = cls._from_folder(folder, device, str(folder))
        run.check_consistent()
        return run

    @classmethod
    def _from_registry(cls, uri: str, device: str) -> TrainedRun:
        """A generator registered by a pipeline (``models:/<name>/<version>``)."""
        trained = registered_network(uri, device)
        if trained.kind != "score":
            raise CheckpointError(
                f"{uri}: a {trained.kind} network, not a generator; add it to one: "
                f"molguide.load('qm9', guidance=['{uri}'])"
            )
        return cls({"score": trained}, uri, device)

    def with_network(self, trained: TrainedNetwork) -> TrainedRun:
        """This run with one more guidance network or evaluator (e.g. a registered model);
        checked as :meth:`with_guidance` checks a run's networks."""
        if trained.kind == "score":
            raise ValueError(
                f"{trained.source}: a generator; guidance takes guidance networks and evaluators"
            )
        return self.with_guidance(
            TrainedRun({"score": self.networks["score"], trained.kind: trained}, trained.source)
        )

    @classmethod
    def _from_folder(cls, folder: Path, device: str, source: str) -> TrainedRun:
        card = (folder / CARD_FILE).read_text() if (folder / CARD_FILE).is_file() else None
        index_path = folder / INDEX_FILE
        if index_path.is_file():
            config = _read_json(index_path)
            _check_format(index_path, config, RUN_FORMAT)
            index = _validated(RunIndex, config, index_path)
            networks = {}
            for name, sub in index.networks.items():
                trained = read_network(folder / str(sub), device)
                if trained.kind != network_kind(name):
                    raise CheckpointError(
                        f"{folder / str(sub) / CONFIG_FILE}: a {trained.kind} network, indexed as {name}"
                    )
                networks[name] = trained
            return cls(networks, source, device, card)
        if (folder / CONFIG_FILE).is_file():
            return cls({"score": _first_format_network(folder, device)}, source, device, card)
        if any((folder / kind / "last.pt").is_file() for kind in RECORDS):
            raise CheckpointError(
                f"{folder}: holds training checkpoints but no exported networks ({INDEX_FILE}); "
                f"export them with: molguide export {folder}"
            )
        raise CheckpointError(f"{folder}: not a trained molguide run (no {INDEX_FILE})")


def _noise_process(diffusion: Any) -> tuple:
    """What of a diffusion record fixes z_t given a molecule (its training loss does not)."""
    return (diffusion.schedule, diffusion.steps, diffusion.precision, diffusion.onehot_scale)


def _scheme(name: str) -> str:
    """The URI scheme of a source ("s3" of s3://bucket/key), lower case; "" for a path
    (a drive letter or an existing folder whose name holds a colon is a path)."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):", name)
    return match.group(1).lower() if match and not Path(name).exists() else ""


def _shipped_name(name: str) -> str | None:
    """The shipped model ``name`` stands for, in any case ("QM9" is "qm9"), or None."""
    return next((shipped for shipped in SHIPPED if shipped.lower() == name.lower()), None)


def _first_format_network(folder: Path, device) -> TrainedNetwork:
    """A folder of format 1 (``molguide-score-model``: config.json + model.safetensors of one
    score network), read into today's record."""
    path = folder / CONFIG_FILE
    config = _read_json(path)
    if config.get("format") == NETWORK_FORMAT:
        return read_network(folder, device)
    if config.get("format") != FIRST_FORMAT:
        raise CheckpointError(f"{path}: not a molguide model config (format {_short(config.get('format'))})")
    for key in ("model", "atom_types", "diffusion", "node_count_probs"):
        if key not in config:
            raise CheckpointError(f"{path}: missing key {key!r}")
    fields = {
        k: config[k]
        for k in ("atom_types", "diffusion", "node_count_probs", "training", "sampler")
        if k in config
    }
    record = _validated(ScoreRecord, fields, path, "config")
    model_config = config["model"]
    if isinstance(model_config, dict):
        model_config = {k: v for k, v in model_config.items() if k != "pretrained"}
    spec = _validated(NetworkConfig, model_config, path, "model")
    network = _built(spec, folder / WEIGHTS_FILE, device, record)
    return TrainedNetwork("score", network, record, int(record.training.get("steps", 0) or 0), str(folder))


def registered_network(uri: str, device: str = "cpu") -> TrainedNetwork:
    """A network registered by a pipeline (``models:/<name>/<version>``, ``/latest`` or
    ``@alias``), its folder downloaded from MLflow's model registry; every problem is one
    CheckpointError naming the URI."""
    from mlflow.exceptions import MlflowException

    from molguide.runs.model_registry import download_network_folder
    from molguide.runs.tracking import TrackingError

    if not uri.startswith("models:/") or not uri.removeprefix("models:/").strip("/"):
        raise CheckpointError(f"{uri}: a registered model is models:/<name>/<version> (or /latest)")
    with tempfile.TemporaryDirectory(prefix="molguide-") as tmp:
        try:
            folder = download_network_folder(uri, Path(tmp))
        except (MlflowException, OSError, ValueError, TrackingError) as err:
            message = getattr(err, "message", None) or str(err)
            raise CheckpointError(f"{uri}: cannot load it from the model registry ({message})") from None
        trained = read_network(folder, device)
    trained.source = uri
    return trained


def log_trained_network(folder: str | Path) -> None:
    """Log an exported network folder (``<output_dir>/<kind>``) to the active MLflow run as
    ``trained_run/<kind>``, which ``runs:/<run_id>`` loads."""
    import mlflow

    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        mlflow.log_artifact(str(folder / name), f"{MLFLOW_FOLDER}/{folder.name}")


def _networks_of_mlflow_run(run_id: str, device: str) -> dict[str, TrainedNetwork]:
    """Networks logged to an MLflow run or its descendants (nearest first).

    A quickstart or full run holds no networks itself; its child runs (train-score,
    train-classifier, ...) do, so the search walks down the run tree breadth first.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from molguide.runs.tracking import tracking_uri

    # runs:/ URIs resolve through MLflow's global URI, which an earlier run in this process
    # may have set to another store: follow $MLFLOW_TRACKING_URI, as every molguide call does.
    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient(tracking_uri())
    try:
        root = client.get_run(run_id)
    except MlflowException as err:
        raise CheckpointError(f"runs:/{run_id}: no such run in {tracking_uri()} ({err.message})") from None
    networks: dict[str, TrainedNetwork] = {}
    queue = [root]
    with tempfile.TemporaryDirectory(prefix="molguide-") as tmp:
        while queue:
            run = queue.pop(0)
            rid = run.info.run_id
            for art in client.list_artifacts(rid, MLFLOW_FOLDER):
                name = Path(art.path).name
                if art.is_dir and network_kind(name) in RECORDS and name not in networks:
                    uri = f"runs:/{rid}/{art.path}"
                    folder = _download(uri, Path(tmp) / rid)
                    networks[name] = read_network(folder, device)
                    networks[name].source = uri
                    log.info("loaded %s network from %s", name, uri)
            queue += client.search_runs(
                [run.info.experiment_id], f"tags.mlflow.parentRunId = '{rid}'", order_by=["start_time ASC"]
            )
    if not networks:
        raise CheckpointError(
            f"runs:/{run_id}: no networks logged there or in its nested runs ({MLFLOW_FOLDER}/)"
        )
    return networks


def _download(uri: str, into: Path) -> Path:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    into.mkdir(parents=True, exist_ok=True)
    try:
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(into)))
    except (MlflowException, OSError) as err:
        shutil.rmtree(into, ignore_errors=True)
        raise CheckpointError(f"{uri}: cannot download ({err})") from None

"""Self-describing score models on disk, and the generators shipped inside the package.

A saved model is a folder with
- ``model.safetensors``: the (EMA) weights, nothing else (no pickled code);
- ``config.json``: everything that rebuilds and decodes it: the network
  (backbone and sizes, parameterisation, self-conditioning, context width), the
  atom types its type channels stand for (atomic numbers, in order), the diffusion
  (schedule, steps, precision, one-hot scaling, loss settings), the distribution of
  atom counts it samples, and how it was trained (data split, steps, epochs,
  CPU-hours) and, optionally, how it samples best (``sampler``: e.g. the time-grid
  power its quality was measured with);
- optionally ``MODEL_CARD.md``.

Loading needs nothing else, and a model whose atom types are not the ones a caller
decodes with is refused instead of being read as H, C, N, O, F.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from molguide.diffusion.atom_counts import NodeCountDistribution
from molguide.diffusion.process import ONEHOT_SCALE, VPDiffusion
from molguide.storage.checkpoints import CheckpointError
from molguide.storage.files import atomic_write

FORMAT = "molguide-score-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "MODEL_CARD.md"
SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = {"qm9": SHIPPED_ROOT / "qm9"}  # name -> folder inside the package


@dataclass
class PretrainedScoreModel:
    """A score network with everything needed to sample from it."""

    model: torch.nn.Module
    diffusion: VPDiffusion
    nodes: NodeCountDistribution
    atom_types: tuple[int, ...]
    config: dict = field(default_factory=dict)
    source: str = ""

    def component_state(self) -> dict:
        """The inference state :class:`molguide.storage.components.Components` works with."""
        return {
            "model_config": self.config["model"],
            "diffusion_config": self.config["diffusion"],
            "node_counts": self.nodes.state_dict(),
            "atom_types": list(self.atom_types),
            "weights": {k: v.clone() for k, v in self.model.state_dict().items()},
            "training": self.config.get("training", {}),
            "sampler": self.config.get("sampler", {}),
            "source": self.source,
        }

    def training_checkpoint(self) -> dict:
        """The model as a ``train-score`` checkpoint (its weights as both the raw and the EMA
        weights, its recorded training steps as the step), for pipelines that read
        ``output_dir/score/last.pt``."""
        state = self.component_state()
        weights = state.pop("weights")
        steps = int(state["training"].get("steps", 0))
        ema = {f"module.{k}": v for k, v in weights.items()}
        ema["n_averaged"] = torch.tensor(steps, dtype=torch.long)
        return {**state, "model": weights, "ema": ema, "step": steps}


def save_pretrained(
    directory: str | Path,
    model: torch.nn.Module,
    model_config: Mapping,
    diffusion_config: Mapping,
    nodes: NodeCountDistribution,
    atom_types: Sequence[int],
    training: Mapping | None = None,
    card: str | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    sampler: Mapping | None = None,
) -> Path:
    """Write a self-describing model folder (weights as safetensors, config as JSON).

    ``weights`` defaults to the model's own state dict (pass the EMA weights to ship those);
    ``sampler`` records the sampler settings the model is meant to be used with
    (``{"grid_power": 2.0}``), which ``Designer.generate`` takes as its defaults.
    """
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atom_types = [int(z) for z in atom_types]
    num_types = getattr(model, "num_atom_types", len(atom_types))
    if num_types != len(atom_types):
        raise ValueError(
            f"the model has {num_types} atom-type channels but {len(atom_types)} atom types were given"
        )
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in (weights or model.state_dict()).items()}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        # "pretrained" names where a run took its model from; the saved model is the model.
        "model": {
            **{k: v for k, v in dict(model_config).items() if k != "pretrained"},
            "num_atom_types": len(atom_types),
        },
        "atom_types": atom_types,
        "diffusion": {"onehot_scale": ONEHOT_SCALE, **dict(diffusion_config)},
        "node_count_probs": [float(p) for p in nodes.probs],
        "training": dict(training or {}),
    }
    if sampler:
        config["sampler"] = dict(sampler)
    payload = save(tensors)
    atomic_write(directory / WEIGHTS_FILE, lambda fh: fh.write(payload))
    text = json.dumps(config, indent=1).encode()
    atomic_write(directory / CONFIG_FILE, lambda fh: fh.write(text))
    if card is not None:
        atomic_write(directory / CARD_FILE, lambda fh: fh.write(card.encode()))
    return directory


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a saved molguide model (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from err
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} config (format {config.get('format')!r})")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {config['format_version']} is newer than this molguide reads "
            f"({FORMAT_VERSION}); upgrade molguide"
        )
    for key in ("model", "atom_types", "diffusion", "node_count_probs"):
        if key not in config:
            raise CheckpointError(f"{path}: missing key {key!r}")
    return config


def load_pretrained(
    source: str | Path, device: str | torch.device = "cpu", expect_atom_types: Sequence[int] | None = None
) -> PretrainedScoreModel:
    """A saved model folder or a shipped name (``"qm9"``) -> :class:`PretrainedScoreModel`.

    ``expect_atom_types``: the atomic numbers the caller will decode the type channels
    as; a model trained on other atom types raises instead of being misread.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from molguide.storage.networks import diffusion_from_config, network_from_state

    name = str(source)
    directory = SHIPPED[name] if name in SHIPPED else Path(source)
    if name in SHIPPED and not (directory / WEIGHTS_FILE).is_file():
        raise CheckpointError(
            f"shipped model {name!r}: {directory / WEIGHTS_FILE} is missing from this install"
        )
    if not directory.is_dir():
        known = ", ".join(sorted(SHIPPED))
        raise CheckpointError(f"{source}: neither a model folder nor a shipped model (shipped: {known})")
    config = _read_config(directory)
    atom_types = tuple(int(z) for z in config["atom_types"])
    if expect_atom_types is not None and tuple(int(z) for z in expect_atom_types) != atom_types:
        raise ValueError(
            f"{directory}: the model's atom types are {list(atom_types)}, not {list(expect_atom_types)}"
        )
    model_config = dict(config["model"])
    if int(model_config.get("num_atom_types", len(atom_types))) != len(atom_types):
        raise CheckpointError(
            f"{directory}: {CONFIG_FILE} gives {len(atom_types)} atom types but a network for "
            f"{model_config['num_atom_types']}"
        )
    try:
        weights = load_file(str(directory / WEIGHTS_FILE), device=str(device))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: cannot read weights ({err})") from err
    model = network_from_state(
        "score", {"model_config": model_config, "weights": weights}, device, directory / WEIGHTS_FILE
    )
    nodes = NodeCountDistribution.from_state_dict({"probs": torch.tensor(config["node_count_probs"])})
    return PretrainedScoreModel(
        model,
        diffusion_from_config(config["diffusion"]),
        nodes,
        atom_types,
        config,
        name if name in SHIPPED else str(directory),
    )


def export_checkpoint(
    checkpoint: str | Path,
    directory: str | Path,
    training: Mapping | None = None,
    card: str | None = None,
    sampler: Mapping | None = None,
) -> Path:
    """A ``train-score`` checkpoint (``output_dir/score/last.pt``) -> a saved model folder
    with its EMA weights; the checkpoint's step and data settings go into ``training``;
    ``sampler`` as in :func:`save_pretrained`."""
    from molguide.data.elements import QM9_ATOMIC_NUMBERS
    from molguide.storage.checkpoints import load_checkpoint
    from molguide.storage.networks import inference_state, network_from_state

    state = load_checkpoint(checkpoint)
    missing = [k for k in ("model_config", "diffusion_config", "node_counts", "ema") if k not in state]
    if missing:
        raise CheckpointError(f"{checkpoint}: not a score-model checkpoint (missing {', '.join(missing)})")
    model = network_from_state("score", inference_state(state, source=checkpoint), source=checkpoint)
    steps = int(state.get("step", 0))
    record = {"steps": steps, "data": state.get("data_config", {})}
    optimiser = state.get("train_config", {})
    record.update({k: optimiser[k] for k in ("lr", "ema_decay") if k in optimiser})
    if optimiser.get("lr_decay_start") is not None:  # finished on a decay branch
        record["lr_decay"] = {k: optimiser[k] for k in ("lr_decay_start", "lr_decay_steps", "lr_final")}
    batch = optimiser.get("batch_size")
    if state.get("n_molecules") and batch:
        record["batch_size"] = int(batch)
        record["epochs"] = round(steps * int(batch) / int(state["n_molecules"]), 2)
    if "train_seconds" in state:  # summed over every session that trained it
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
    record.update(training or {})
    return save_pretrained(
        directory,
        model,
        state["model_config"],
        state["diffusion_config"],
        NodeCountDistribution.from_state_dict(state["node_counts"]),
        state.get("atom_types", QM9_ATOMIC_NUMBERS),
        record,
        card,
        sampler=sampler,
    )

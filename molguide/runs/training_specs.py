"""What each kind of network needs to be trained: a :class:`TrainingSpec` per kind.

A spec names the kind's config section and data split, builds its
:class:`TrainingJob` (the network, its objective, its batches and the metadata its
checkpoint carries: target binning, property scaling) and, optionally, measures the
trained network (``finish``: the classifier's per-noise-level diagnostics, the
evaluator's reference rows). :func:`molguide.runs.train.train_network` runs any of
them. To train a new kind of network, add one spec to :data:`TRAINING_SPECS`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from molguide.data.graphs import MoleculeBatches
from molguide.data.molecules import MoleculeSet
from molguide.data.registry import dataset_label, dataset_of, describe_split, split_molecules
from molguide.diffusion.atom_counts import NodeCountDistribution
from molguide.diffusion.objective import DenoisingObjective
from molguide.diffusion.process import VPDiffusion
from molguide.guidance.objectives import NoisyClassifierObjective, NoisyGaussianObjective, RegressionObjective
from molguide.guidance.targets import PropertyTarget, reward_weights
from molguide.models.build import build_predictor, build_score_model
from molguide.models.residual import ResidualScoreNetwork
from molguide.runs.config import RunConfig, TrainSection
from molguide.runs.tracking import log_dataset, log_metrics_batch
from molguide.storage.files import as_json
from molguide.storage.trained_run import read_network
from molguide.training.trainer import Objective, TrainConfig, Trainer

log = logging.getLogger(__name__)


@dataclass
class TrainingJob:
    """What a spec builds for one training run.

    ``metadata`` goes into every checkpoint beside the weights (besides the network's own
    ``config`` and the diffusion's, which :func:`train_network` adds), so a checkpoint alone
    rebuilds and uses the network; ``metrics`` and ``params`` are logged before training,
    ``summary`` entries join the returned summary.
    """

    model: torch.nn.Module
    objective: Objective
    batches: MoleculeBatches
    diffusion: VPDiffusion | None
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # MLflow params of the run


@dataclass(frozen=True)
class TrainingSpec:
    """One kind of network: its training settings (a config's ``train`` section), its data
    split, how to build its job and what to measure once it is trained (``finish``
    returns summary entries)."""

    kind: str
    experiment: str
    run_suffix: str
    train_section: str  # dotted path of its train section in a RunConfig: "classifier.train"
    prepare: Callable[[RunConfig, MoleculeSet, bool], TrainingJob]
    split: str | None = None  # None: data.split
    finish: Callable[[RunConfig, Trainer, TrainingJob, bool], dict] | None = None
    start_from: Callable[[RunConfig], str | None] | None = (
        None  # weights to start from (else train.init_from)
    )
    labelled: bool = True  # learns target.property: only molecules with a value of it train it

    def settings(self, config: RunConfig) -> TrainSection:
        """The kind's train section of ``config``."""
        section = config
        for part in self.train_section.split("."):
            section = getattr(section, part)
        return section


def fitted_target(config: RunConfig, values: np.ndarray) -> PropertyTarget:
    """The config's target with bin edges fitted on ``values`` (the generator half)."""
    tc = config.target
    return PropertyTarget(tc.property, tc.n_bins, tc.thresholds, tc.target, tc.target_value).fit(values)


def bond_labels(config: RunConfig, mols: MoleculeSet, model_config: Mapping, progress: bool = False):
    """The bond-order labels of ``mols`` when the network has a bond head (else None)."""
    if not model_config.get("bond_head"):
        return None
    if config.data.remove_hydrogens:
        raise ValueError("model.bond_head: bond labels need hydrogens (data.remove_hydrogens is true)")
    from molguide.chem.bond_orders import cached_bond_table

    return cached_bond_table(mols, progress=progress)


def atom_types(config: RunConfig) -> tuple[int, ...]:
    """The atomic numbers of the atom-type channels of networks trained on the config's data
    set: the data set's elements, or with ``model.pretrained`` the generator's types (every
    element of the data must be among them, so that its networks read the generator's samples)."""
    types = dataset_of(config.data).atom_types
    if config.train.init_from and not config.model.pretrained:
        # Fine-tuning a generator: its types first (its channels keep their meaning), then the
        # data's new elements, whose channels the warm start adds (models.growth.add_atom_types).
        from molguide.runs.tracked_training import warm_start_atom_types

        source = warm_start_atom_types(config.train.init_from)
        return tuple(source) + tuple(z for z in types if z not in source)
    if not config.model.pretrained:
        return types
    from molguide.data.elements import symbol
    from molguide.storage.trained_run import TrainedRun

    with torch.random.fork_rng(devices=[]):  # loading builds a network: the seeded weights stay as they were
        generator = TrainedRun.from_pretrained(config.model.pretrained).atom_types
    missing = [symbol(z) for z in types if z not in generator]
    if missing:
        raise ValueError(
            f"model.pretrained {config.model.pretrained!r} generates "
            f"{' '.join(symbol(z) for z in generator)}; "
            f"{dataset_label(config.data)} also holds {' '.join(missing)}: train a generator on it "
            "(--set model.pretrained=null) or fine-tune one (train.init_from; docs/own-data.md)"
        )
    return tuple(generator)


def _hydrogen_channel(config: RunConfig) -> int | None:
    """Hydrogen's atom-type channel: a network trained with fixed atoms leaves the hydrogens of
    a fixed part to be generated half the time (molguide.diffusion.process.fixed_atom_mask)."""
    types = list(atom_types(config))
    return types.index(1) if 1 in types else None


def _batches(config: RunConfig, mols: MoleculeSet, **extras) -> MoleculeBatches:
    return MoleculeBatches(mols, atom_types=atom_types(config), **extras)


def _score_job(config: RunConfig, mols: MoleculeSet, progress: bool) -> TrainingJob:
    types = atom_types(config)
    model = build_score_model({**config.model.model_dump(), "num_atom_types": len(types)})
    diffusion = VPDiffusion.from_config(config.diffusion.model_dump())
    nodes = NodeCountDistribution(mols.num_atoms)
    bonds = bond_labels(config, mols, config.model.model_dump(), progress)
    n_params = sum(p.numel() for p in model.parameters())
    message = (
        f"training {config.model.backbone} score model ({n_params} parameters) on {len(mols)} "
        f"molecules ({config.data.split})"
    )
    metadata = {
        "atom_types": list(types),
        "node_counts": nodes.state_dict(),
        "data_config": config.data.model_dump(),
        "n_molecules": len(mols),
    }
    return TrainingJob(
        model,
        DenoisingObjective(diffusion, hydrogen_channel=_hydrogen_channel(config)),
        _batches(config, mols, bonds=bonds),
        diffusion,
        message,
        metadata,
        summary={"n_parameters": n_params, "n_molecules": len(mols)},
        params={"n_parameters": n_params},
    )


def _classifier_job(config: RunConfig, mols: MoleculeSet, progress: bool) -> TrainingJob:
    section, prop = config.classifier, config.target.property
    target = fitted_target(config, mols.properties[prop])
    diffusion = VPDiffusion.from_config(config.diffusion.model_dump())
    model = build_predictor(section.model_dump(), target.n_bins, True, atom_types(config))
    return TrainingJob(
        model,
        NoisyClassifierObjective(diffusion, section.grad_penalty),
        _batches(config, mols, label=target.labels(mols.properties[prop])),
        diffusion,
        f"classifier: {target.describe()}; {len(mols)} training molecules",
        {"target": target.to_dict()},
        summary={"target": target.describe()},
    )


def data_source() -> str:
    """Where the data sets are read from (MLflow's dataset source): molguide's data cache."""
    from molguide.data.qm9 import default_cache_dir

    return str(default_cache_dir())


def _classifier_diagnostics(config: RunConfig, trainer: Trainer, job: TrainingJob, progress: bool) -> dict:
    """Cross-entropy, calibration and estimated guidance error per noise level, on validation molecules."""
    import mlflow

    from molguide.diagnostics.noise_levels import log_noise_levels, noise_level_diagnostics
    from molguide.diagnostics.plots import plot_noise_levels

    target = PropertyTarget.from_dict(job.metadata["target"])
    held = split_molecules(config.data, "valid", config.classifier.holdout, labelled=target.name)
    log_dataset(
        held, describe_split(config.data, "valid", config.classifier.holdout), "validation", data_source()
    )
    rows = noise_level_diagnostics(
        averaged_copy(trainer),
        job.diffusion,
        held,
        target.labels(held.properties[target.name]),
        target.target_class,
        progress=progress,
    )
    log_noise_levels(rows)
    trainer.extra_state["noise_levels"] = [r.as_dict() for r in rows]
    png = trainer.checkpoint_path.parent / "noise_levels.png"
    plot_noise_levels(rows, png, f"{target.name} classifier", num_classes=target.n_bins)
    mlflow.log_artifact(str(png), "plots")
    return {"noise_levels": [r.as_dict() for r in rows]}


def _standardised_property(config: RunConfig, mols: MoleculeSet) -> tuple[str, np.ndarray, float, float]:
    """The target property, its standardised values on ``mols``, and their mean and std."""
    prop = config.target.property
    values = mols.properties[prop]
    mean, std = float(values.mean()), float(values.std())
    return prop, (values - mean) / std, mean, std


def _evaluator_job(config: RunConfig, mols: MoleculeSet, progress: bool) -> TrainingJob:
    prop, standardised, mean, std = _standardised_property(config, mols)
    model = build_predictor(config.evaluator.model_dump(), 1, False, atom_types(config))
    onehot_scale = VPDiffusion.from_config(config.diffusion.model_dump()).onehot_scale
    return TrainingJob(
        model,
        RegressionObjective(onehot_scale),
        _batches(config, mols, target=standardised),
        None,
        f"evaluator: {prop} on {len(mols)} evaluator-half molecules",
        {"property": prop, "mean": mean, "std": std, "onehot_scale": onehot_scale},
    )


def _selector_job(config: RunConfig, mols: MoleculeSet, progress: bool) -> TrainingJob:
    """The selector: an evaluator of the same design trained on the generator half, which
    judges guidance settings while their weights are chosen (the evaluator judges once)."""
    job = _evaluator_job(config, mols, progress)
    job.message = job.message.replace("evaluator:", "selector:").replace("evaluator-half", "generator-half")
    return job


def _evaluator_reference_rows(config: RunConfig, trainer: Trainer, job: TrainingJob, progress: bool) -> dict:
    """The evaluator's error on generator-half molecules beside the naive and #Atoms rows."""
    from molguide.diagnostics.baselines import atom_count_predictor
    from molguide.models.predictor import predict_property

    meta, prop = job.metadata, job.metadata["property"]
    gen = split_molecules(config.data, "generator_half", config.evaluator.holdout, labelled=prop)
    # The lower-bound row judges these: the evaluator's evaluation set.
    where = describe_split(config.data, "generator_half", config.evaluator.holdout)
    log_dataset(gen, where, "evaluation", data_source())
    truth = gen.properties[prop]
    model = averaged_copy(trainer)
    pred = predict_property(model, gen, meta["mean"], meta["std"], meta["onehot_scale"])
    atoms = atom_count_predictor(job.batches.molecules, prop)(gen.num_atoms)
    rng = np.random.default_rng(0)
    rows = {
        "evaluator_mae": float(np.abs(pred - truth).mean()),  # the lower-bound row
        "naive_mae": float(np.abs(rng.permutation(truth) - truth).mean()),
        "atoms_mae": float(np.abs(atoms - truth).mean()),
        "evaluator_rmse": float(np.sqrt(((pred - truth) ** 2).mean())),
    }
    log_metrics_batch([(k, v, 0) for k, v in rows.items()])
    trainer.extra_state["reference_rows"] = rows
    log.info(
        "evaluator on %d generator-half molecules: MAE %.4f (naive %.4f, #atoms %.4f) %s",
        len(gen),
        rows["evaluator_mae"],
        rows["naive_mae"],
        rows["atoms_mae"],
        prop,
    )
    return rows


def _regressor_job(config: RunConfig, mols: MoleculeSet, progress: bool) -> TrainingJob:
    """The noise-level regressor of density and energy guidance: N(mu_t(z), s_t(z)^2) of the
    standardised property, trained by negative log-likelihood on noised molecules."""
    prop, standardised, mean, std = _standardised_property(config, mols)
    diffusion = VPDiffusion.from_config(config.diffusion.model_dump())
    model = build_predictor(config.regressor.model_dump(), 2, True, atom_types(config))
    return TrainingJob(
        model,
        NoisyGaussianObjective(diffusion),
        _batches(config, mols, target=standardised),
        diffusion,
        f"regressor: N(mu_t, s_t^2) of {prop} on {len(mols)} noised molecules",
        {"property": prop, "mean": mean, "std": std},
    )


def _regressor_diagnostics(config: RunConfig, trainer: Trainer, job: TrainingJob, progress: bool) -> dict:
    """Negative log-likelihood, MAE and coverage per noise level, on validation molecules."""
    from molguide.diagnostics.regressor_levels import regressor_noise_levels

    meta = job.metadata
    held = split_molecules(config.data, "valid", config.regressor.holdout, labelled=meta["property"])
    rows = regressor_noise_levels(
        averaged_copy(trainer),
        job.diffusion,
        held,
        held.properties[meta["property"]],
        meta["mean"],
        meta["std"],
    )
    log_metrics_batch(
        [(name, getattr(r, name), r.bin) for r in rows for name in ("regressor_nll", "regressor_mae")]
    )
    trainer.extra_state["noise_levels"] = [r.as_dict() for r in rows]
    log.info(
        "regressor %s: NLL per noise level %s (nats, standardised); MAE at t < 0.1 %.4g",
        meta["property"],
        ", ".join(f"{r.regressor_nll:.2f}" for r in rows),
        rows[0].regressor_mae,
    )
    return {"noise_levels": [r.as_dict() for r in rows]}


def _reward_job(config: RunConfig, mols: MoleculeSet, progress: bool) -> TrainingJob:
    section, prop = config.reward, config.target.property
    target = fitted_target(config, mols.properties[prop])
    direction = target.direction or 1.0
    weights, ess_fraction = reward_weights(mols.properties[prop], section.beta, direction, section.clip_z)
    model_config = {**config.model.model_dump(), "num_atom_types": len(atom_types(config))}
    diffusion_config = config.diffusion.model_dump()
    base_weights = None
    if section.init_from_score:
        base_folder = Path(config.output_dir) / "score"
        if not (base_folder / "config.json").is_file():
            raise ValueError(
                f"reward.init_from_score: no score network in {base_folder}; run train-score first"
            )
        base = read_network(base_folder)
        # The fine-tuned copy is the base network: its architecture and diffusion, not the config's
        # (they differ when the base is a shipped generator, model.pretrained).
        model_config = base.network.config
        diffusion_config = base.record.diffusion.model_dump()
        base_weights = base.network.state_dict()
    # A guidance term needs the reward model's score only: no bond-order head to train.
    model = build_score_model({**model_config, "bond_head": False})
    if base_weights is not None:
        model.load_state_dict({k: v for k, v in base_weights.items() if not k.startswith("bond_head.")})
    if section.correction is not None:  # the frozen score network plus a small trained correction
        model = ResidualScoreNetwork(model, {"backbone_kwargs": dict(section.correction)})
    diffusion = VPDiffusion.from_config(diffusion_config)
    ess = {"reward_weight_ess": ess_fraction * len(mols), "reward_weight_ess_fraction": ess_fraction}
    message = (
        f"reward model: r = exp({section.beta:g} * {direction:+g} * z({prop})), z clipped at "
        f"{section.clip_z}; ESS {100 * ess_fraction:.1f}% of {len(mols)} molecules"
    )
    if section.correction is not None:
        message += f"; a correction network {section.correction} on the frozen score network"
    metadata = {
        "property": prop,
        "beta": section.beta,
        "clip_z": section.clip_z,
        "direction": direction,
        "mean": float(mols.properties[prop].mean()),
        "std": float(mols.properties[prop].std()),
        "reward_weight_ess": ess["reward_weight_ess"],
    }
    objective = DenoisingObjective(diffusion, weight_key="weight", hydrogen_channel=_hydrogen_channel(config))
    batches = _batches(config, mols, weight=weights)
    return TrainingJob(model, objective, batches, diffusion, message, metadata, ess, dict(ess))


def _cfg_start(config: RunConfig) -> str | None:
    """What the CFG model starts from: ``cfg.train.init_from``, else the run's pretrained
    generator (fine-tuned with a zero context input, so it starts as that generator)."""
    return config.cfg.train.init_from or config.model.pretrained


def _cfg_job(config: RunConfig, mols: MoleculeSet, progress: bool) -> TrainingJob:
    section, prop = config.cfg, config.target.property
    target = fitted_target(config, mols.properties[prop])
    onehot = np.eye(target.n_bins, dtype=np.float32)[target.labels(mols.properties[prop])]
    base, source = config.model.model_dump(), _cfg_start(config)
    if source:  # fine-tuned from an unconditional network: its architecture, a context added
        from molguide.runs.tracked_training import read_warm_start

        base = read_warm_start(source)[1]
    model_config = {**base, "context_dim": target.n_bins, "num_atom_types": len(atom_types(config))}
    model = build_score_model(model_config)
    diffusion = VPDiffusion.from_config(config.diffusion.model_dump())
    hydrogen = _hydrogen_channel(config)
    objective = DenoisingObjective(
        diffusion, context_key="context", p_uncond=section.p_uncond, hydrogen_channel=hydrogen
    )
    bonds = bond_labels(config, mols, model_config, progress)  # CFG's network is the sampler's base
    return TrainingJob(
        model,
        objective,
        _batches(config, mols, bonds=bonds, context=onehot),
        diffusion,
        f"CFG model: {target.describe()}, label dropped with p = {section.p_uncond:g}",
        # atom_types: what warm_start checks the generator it starts from against, channel by channel
        {"target": target.to_dict(), "p_uncond": section.p_uncond, "atom_types": list(atom_types(config))},
        summary={"target": target.describe()},
    )


TRAINING_SPECS: dict[str, TrainingSpec] = {
    spec.kind: spec
    for spec in (
        TrainingSpec("score", "molguide-score", "train", "train", _score_job, labelled=False),
        TrainingSpec(
            "classifier",
            "molguide-guidance",
            "classifier",
            "classifier.train",
            _classifier_job,
            finish=_classifier_diagnostics,
        ),
        TrainingSpec(
            "evaluator",
            "molguide-guidance",
            "evaluator",
            "evaluator.train",
            _evaluator_job,
            split="evaluator_half",
            finish=_evaluator_reference_rows,
        ),
        TrainingSpec(
            "selector",
            "molguide-guidance",
            "selector",
            "evaluator.train",
            _selector_job,
            split="generator_half",
        ),
        TrainingSpec("reward", "molguide-guidance", "reward", "reward.train", _reward_job),
        TrainingSpec(
            "regressor",
            "molguide-guidance",
            "regressor",
            "regressor.train",
            _regressor_job,
            finish=_regressor_diagnostics,
        ),
        TrainingSpec("cfg", "molguide-guidance", "cfg", "cfg.train", _cfg_job, start_from=_cfg_start),
    )
}


def averaged_copy(trainer: Trainer) -> torch.nn.Module:
    """The trained network with EMA weights, as a copy in eval mode.

    A copy, because the trainer's own model must keep its raw weights: they go into the
    checkpoint that a later, longer run resumes from.
    """
    model = copy.deepcopy(trainer.model)
    model.load_state_dict(trainer.averaged_weights())
    return model.eval()


# Settings a resumed run may change: how long it trains and how often it reports.
RESUMABLE_CHANGES = (
    "steps",
    "checkpoint_every",
    "log_every",
    "prefetch",
    # how a run finishes: a decay branch resumes the constant-rate run it continues
    "lr_decay_start",
    "lr_decay_steps",
    "lr_final",
)


def resume_signature(config: RunConfig, spec: TrainingSpec, job: TrainingJob, settings: TrainConfig) -> dict:
    """What a checkpoint must have been trained with for this run to resume it: the data
    (set, split, size, hydrogens), the network's own config (architecture,
    parameterisation), the diffusion (schedule, loss), the optimisation settings but
    :data:`RESUMABLE_CHANGES`, and the kind's metadata (target binning, scaling)."""
    data = {**config.data.model_dump(), "split": spec.split or config.data.split}
    train = {k: v for k, v in asdict(settings).items() if k not in RESUMABLE_CHANGES}
    diffusion = job.diffusion.config if job.diffusion is not None else None
    signature = {"data": data, "model": job.model.config, "diffusion": diffusion, "train": train}
    return as_json({**signature, "kind": job.metadata})


def train_config(section: TrainSection) -> TrainConfig:
    """The Trainer's settings from a config's train section."""
    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in section.model_dump().items() if k in fields})

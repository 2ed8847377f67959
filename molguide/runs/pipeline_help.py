"""What each ``molguide run`` pipeline does and its main config keys (``molguide run
PIPELINE --help``, the pipeline list of ``molguide run --help``), and the pipeline's own
defaults that ``run`` and ``config show`` layer the config file and ``--set`` over.

Imports neither torch, MLflow nor RDKit: the help shows the defaults the config schema
declares (:mod:`molguide.runs.config`) under the pipeline's own file, without validating
them (validation imports the registries, and with them torch); ``molguide config show
PIPELINE`` prints the validated config. A test holds the two to the same values.
"""

from __future__ import annotations

import importlib.resources
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

HELP_WIDTH = 100  # what `run PIPELINE --help` fits


@dataclass(frozen=True)
class PipelineHelp:
    """``summary``: one line for ``run --help``; ``description``: a paragraph; ``keys``: the
    main config keys (dotted); ``experiment``: the MLflow experiment its runs go to."""

    summary: str
    description: str
    keys: tuple[str, ...]
    experiment: str


_TRAINING_KEYS = ("train.steps", "train.batch_size", "train.lr", "train.seed", "train.max_minutes")

PIPELINE_HELP: dict[str, PipelineHelp] = {
    "quickstart": PipelineHelp(
        "everything, small, on CPU: classifier, evaluator, reward model, guided sampling",
        "Everything molguide does, small, on a CPU. It starts from the shipped QM9 generator "
        "(model.pretrained: qm9; null trains a score model here instead), trains a noise-level "
        "classifier and a reward model on a subset of QM9's generator half and an evaluator (the "
        "oracle) on the other half, then samples guide.n_samples molecules unguided and guided "
        "from the same seeds, judges them with the evaluator, GFN2-xTB and RDKit, and prints a "
        "summary table. Each step is a nested MLflow run under one parent; the same command "
        "resumes after an interruption. Its own defaults: molguide/runs/quickstart.yaml.",
        (
            "output_dir",
            "device",
            "data.max_molecules",
            "model.pretrained",
            "target.property",
            "target.n_bins",
            "target.target",
            "classifier.train.steps",
            "evaluator.train.steps",
            "reward.train.steps",
            "guide.classifier",
            "guide.reward",
            "guide.n_samples",
            "guide.steps",
            "guide.xtb",
        ),
        "molguide-quickstart",
    ),
    "full": PipelineHelp(
        "every training and sampling step of a config under one parent run",
        "Every step under one parent MLflow run: train-score, train-classifier, train-evaluator, "
        "train-reward, train-cfg (when cfg.enabled), sample and guide; with protocol.enabled, "
        "EDM's QM9 protocol instead (train-score, protocol-train, protocol; docs/protocol.md). "
        "Meant for a config file (-c configs/...): the built-in defaults train on whole QM9 "
        "halves. The same command resumes every unfinished training.",
        (
            "output_dir",
            "device",
            "data.split",
            "data.max_molecules",
            "model.pretrained",
            "model.backbone",
            "model.backbone_kwargs",
            "train.steps",
            "target.property",
            "target.target",
            "cfg.enabled",
            "sample.n_samples",
            "guide.n_samples",
            "guide.sweep",
            "protocol.enabled",
            "protocol.properties",
        ),
        "molguide-full",
    ),
    "toy": PipelineHelp(
        "the guidance theory checked on a Gaussian mixture (about a minute)",
        "The guidance theory checked on a Gaussian mixture, whose exact scores and class "
        "probabilities are known: exact classifier guidance, reward guidance, CFG's E[1/p(c|x)], "
        "guidance error against excess cross-entropy, smoothness, and small trained models' errors. "
        "Logs the numbers and a plot to MLflow. Of the config it reads only output_dir.",
        ("output_dir",),
        "molguide-toy",
    ),
    "train-score": PipelineHelp(
        "train the score (denoising) network: the generator",
        "Trains the score network (model.*) on data.split of data.dataset with the diffusion "
        "process of diffusion.*, checkpointing to <output_dir>/score/last.pt, and exports it beside "
        "the checkpoint (score/config.json + model.safetensors), which molguide.load(output_dir), "
        "sample and guide read. The same command resumes. With model.pretrained it uses that "
        "generator instead of training. Runs data-parallel under torchrun.",
        (
            "output_dir",
            "device",
            "data.dataset",
            "data.split",
            "data.max_molecules",
            "model.pretrained",
            "model.backbone",
            "model.backbone_kwargs",
            "model.parameterisation",
            "diffusion.schedule",
            "diffusion.steps",
            *_TRAINING_KEYS,
            "train.init_from",
        ),
        "molguide-score",
    ),
    "train-evaluator": PipelineHelp(
        "train the property evaluator (the oracle) on QM9's evaluator half",
        "Trains the evaluator, the oracle that judges generated molecules: an invariant network "
        "(evaluator.*) predicting target.property of clean molecules, trained on QM9's evaluator "
        "half (the half the generator never saw, EDM's protocol). Logs evaluator_mae on "
        "generator-half molecules (a lower bound), naive_mae and atoms_mae; writes "
        "<output_dir>/evaluator/ (one folder per property of target.goals).",
        (
            "output_dir",
            "device",
            "data.max_molecules",
            "target.property",
            "target.goals",
            "evaluator.backbone",
            "evaluator.backbone_kwargs",
            "evaluator.holdout",
            *(f"evaluator.{k}" for k in _TRAINING_KEYS),
        ),
        "molguide-guidance",
    ),
    "sample": PipelineHelp(
        "sample a trained score model unguided and judge the molecules",
        "Samples sample.n_samples molecules from a trained run (sample.model, default output_dir) "
        "at each step count of sample.steps with the sample section's sampler, and judges them "
        "(validity, strict validity, stability, uniqueness, novelty, seconds per molecule): one "
        "nested MLflow run per step count, the molecules as an SDF artifact.",
        (
            "output_dir",
            "device",
            "sample.model",
            "sample.n_samples",
            "sample.steps",
            "sample.method",
            "sample.grid_power",
            "sample.sampler_options",
            "sample.batch_size",
            "sample.seed",
            "sample.xtb",
        ),
        "molguide-score",
    ),
    "design": PipelineHelp(
        "variants of a lead at several start levels, unguided and guided, judged",
        "Makes design.n variants of the lead (design.lead, the first molecule of an SDF) at each "
        "start level design.t0, with the trained run design.model (default output_dir): unguided, and "
        "guided with design.guidance towards the run's trained goal, from the same seeds. Each "
        "setting is a nested MLflow run with its improvement over the lead (interval), Tanimoto, "
        "heavy-atom RMSD, scaffold kept and validity, and its variants as SDF and CSV; the parent "
        "has the table and the curve against t0 (docs/edit.md).",
        (
            "output_dir",
            "device",
            "design.lead",
            "design.model",
            "design.t0",
            "design.n",
            "design.keep",
            "design.guidance",
            "design.steps",
            "design.seed",
        ),
        "molguide-design",
    ),
    "guide": PipelineHelp(
        "sample unguided and guided from the same seeds, judge, report",
        "Samples guide.n_samples molecules from the trained run in output_dir unguided and with "
        "every guidance setting whose network the run has (each kind's weight guide.<kind>, plus "
        "guide.sweep; one nested MLflow run each) from the same seeds, judges them with the "
        "evaluator and GFN2-xTB, and logs paired improvements with bootstrap intervals, hit rates, "
        "sample quality, the SDF of every setting and plots. It reads output_dir's score network "
        "(train-score), classifier and evaluator, and the networks of any other kinds there.",
        (
            "output_dir",
            "device",
            "target.property",
            "target.target",
            "target.goals",
            "guide.<kinds>",
            "guide.t_min",
            "guide.t_max",
            "guide.sweep",
            "guide.n_samples",
            "guide.steps",
            "guide.method",
            "guide.seed",
            "guide.xtb",
        ),
        "molguide-guidance",
    ),
    "evaluate": PipelineHelp(
        "chemistry metrics of a molecule file, logged to MLflow",
        "Judges the molecules of evaluate.file (SDF, XYZ or a SMILES CSV): validity, strict "
        "validity, stability, uniqueness, novelty against QM9 and GFN2-xTB properties, plus the "
        "property predictions of output_dir's evaluator when there is one. Writes "
        "<output_dir>/evaluate/evaluated.sdf (the input records with molguide_* tags) and a CSV "
        "beside it, and logs them to MLflow. (molguide evaluate FILE does the same without MLflow.)",
        ("evaluate.file", "evaluate.xtb", "evaluate.novelty", "output_dir"),
        "molguide-evaluate",
    ),
}

# What each guidance network's training does; a kind registered later without an entry here
# gets a description from the registry (its kinds' summaries) and an invariant predictor's keys.
_NETWORK_TEXT = {
    "classifier": (
        "train the noise-level classifier of classifier guidance",
        "Trains the noise-level classifier p_t(class | z_t) of classifier guidance: an invariant "
        "network (classifier.*) predicting target.property's quantile bin (target.n_bins bins of "
        "data.split, or target.thresholds) from molecules noised by the process of diffusion.*. "
        "Logs held-out classifier_ce, classifier_accuracy, classifier_ece and guidance_mse_est per "
        "noise level; writes <output_dir>/classifier/ (one folder per property of target.goals).",
        ("target.n_bins", "target.thresholds", "classifier.time_heads", "classifier.grad_penalty"),
    ),
    "reward": (
        "train the reward-reweighted score model of reward guidance",
        "Trains the reward model of reward guidance: a copy of the score network (from "
        "<output_dir>/score when reward.init_from_score) fine-tuned by denoising score matching on "
        "molecules weighted by r = exp(reward.beta * z(target.property)), z standardised and "
        "clipped at reward.clip_z; logs the weights' effective sample size (reward_weight_ess). "
        "Needs train-score (or model.pretrained) first. Runs data-parallel under torchrun.",
        ("target.target", "reward.beta", "reward.clip_z", "reward.init_from_score"),
    ),
    "cfg": (
        "train the conditional score model of classifier-free guidance",
        "Trains the conditional score model of classifier-free guidance: the score network with the "
        "target class of target.property as a one-hot label, dropped with probability "
        "cfg.p_uncond. With model.pretrained (or cfg.train.init_from) it is fine-tuned from that "
        "generator with zero-weight label inputs; otherwise it trains model's architecture from "
        "scratch. Runs data-parallel under torchrun.",
        ("target.n_bins", "target.target", "cfg.p_uncond", "model.pretrained"),
    ),
    "regressor": (
        "train the noise-level regressor of density, energy and TFG guidance",
        "Trains the noise-level regressor N(mu_t(z), s_t(z)^2) of target.property (standardised) "
        "by negative log-likelihood on molecules noised by the process of diffusion.*: the "
        "network of the guidance kinds that aim at values (density, energy, tfg). Logs NLL and "
        "MAE per noise level; writes <output_dir>/regressor/ (one folder per property of "
        "target.goals).",
        ("target.goals",),
    ),
}

# Sections whose keys are an invariant predictor's (NetworkSection).
_PREDICTOR_KEYS = ("backbone", "backbone_kwargs", "holdout")


def _network_help(network: str) -> PipelineHelp:
    from molguide.guidance.kinds import GUIDANCE_KINDS

    kinds = [k for k in GUIDANCE_KINDS.values() if k.network == network]
    if network in _NETWORK_TEXT:
        summary, description, own = _NETWORK_TEXT[network]
    else:
        names = ", ".join(k.name for k in kinds)
        summary = f"train the {network} network ({names} guidance)"
        description = (
            f"Trains the {network} network that {names} guidance uses ("
            + "; ".join(k.summary for k in kinds)
            + f"), configured by the {network} section."
        )
        own = ()
    if network in ("reward", "cfg"):  # score-network copies: their own train section only
        network_keys: tuple[str, ...] = ()
    else:
        network_keys = tuple(f"{network}.{k}" for k in _PREDICTOR_KEYS)
    train = tuple(f"{network}.{k}" for k in _TRAINING_KEYS)
    keys = ("output_dir", "device", "data.max_molecules", "target.property", *own, *network_keys, *train)
    return PipelineHelp(summary, description, tuple(dict.fromkeys(keys)), "molguide-guidance")


def pipeline_help(pipeline: str) -> PipelineHelp:
    """The help of ``pipeline`` (a ``train-<network>`` of a guidance kind from the registry)."""
    if pipeline in PIPELINE_HELP:
        return PIPELINE_HELP[pipeline]
    if pipeline.startswith("train-"):
        return _network_help(pipeline.removeprefix("train-"))
    raise KeyError(pipeline)


def pipeline_defaults(pipeline: str) -> dict[str, Any] | None:
    """The pipeline's own defaults under ``-c FILE`` and ``--set`` (None: the schema's):
    the quickstart's are ``molguide/runs/quickstart.yaml``."""
    if pipeline != "quickstart":
        return None
    from molguide.runs.config import parse_yaml

    return parse_yaml(importlib.resources.files("molguide.runs").joinpath("quickstart.yaml").read_text())


def declared_defaults(model: Any = None) -> dict[str, Any]:
    """The defaults a config model declares, nested like its sections, without validating
    anything (no registry, no torch): for the help only."""
    from pydantic import BaseModel

    if model is None:
        from molguide.runs.config import RunConfig

        model = RunConfig
    tree: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            tree[name] = declared_defaults(kind)
        else:
            tree[name] = field.get_default(call_default_factory=True)
    return tree


def default_tree(pipeline: str) -> dict[str, Any]:
    """The pipeline's defaults as ``run`` resolves them with no file and no ``--set``
    (declared, not validated)."""
    from molguide.runs.config import _merge

    return _merge(declared_defaults(), pipeline_defaults(pipeline) or {})


def lookup(tree: dict[str, Any], dotted: str) -> Any:
    """The value at ``a.b.c`` of a nested dict (KeyError naming the key when missing)."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _has(tree: dict[str, Any], dotted: str) -> bool:
    try:
        lookup(tree, dotted)
    except KeyError:
        return False
    return True


def show_value(value: Any) -> str:
    """A value as YAML writes it in one line (null, true, [1, 3], {hidden: 64})."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def main_keys(pipeline: str) -> list[str]:
    """The pipeline's main config keys, ``guide.<kinds>`` spelt out as one key per kind."""
    keys = []
    for key in pipeline_help(pipeline).keys:
        if key == "guide.<kinds>":
            from molguide.guidance.kinds import GUIDANCE_KINDS

            keys += [f"guide.{name}" for name in GUIDANCE_KINDS]
        else:
            keys.append(key)
    return keys


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_pipeline(pipeline: str, width: int = HELP_WIDTH) -> str:
    """The body of ``molguide run PIPELINE --help``: what it does, where it logs, and its
    main config keys with their defaults, in lines of at most ``width`` characters."""
    info = pipeline_help(pipeline)
    tree = default_tree(pipeline)
    keys = [key for key in main_keys(pipeline) if _has(tree, key)]  # a later kind's own section
    column = min(max(len(k) for k in keys) + 2, 34)
    lines = [
        *textwrap.wrap(info.description, width),
        "",
        *textwrap.wrap(
            f"MLflow experiment: {info.experiment}. Every key with its default: molguide config "
            f"show {pipeline}",
            width,
        ),
        "",
        *textwrap.wrap("main config keys (defaults; change one with --set KEY=VALUE):", width),
        *(_fit(f"  {key:<{column}}{show_value(lookup(tree, key))}", width) for key in keys),
    ]
    return "\n".join(lines)


def pipeline_list(pipelines: Iterable[str], width: int = HELP_WIDTH) -> str:
    """One line per pipeline for ``molguide run --help``."""
    names = list(pipelines)
    column = max(len(n) for n in names) + 2
    lines = ["pipelines (molguide run PIPELINE --help says more):"]
    for name in names:
        lines.append(_fit(f"  {name:<{column}}{pipeline_help(name).summary}", width))
    return "\n".join(lines)

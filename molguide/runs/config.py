"""Typed run configuration: YAML files plus ``--set key.path=value`` overrides.

Unknown keys, wrong types and bad values are reported as one message naming the
key path and what is allowed (pydantic does the checking). Names of backbones,
samplers, data sets and target properties are checked against their registries
(:data:`molguide.models.registry.BACKBONES`, :data:`molguide.diffusion.samplers.SAMPLERS`,
:data:`molguide.data.registry.DATASETS`), so what a registry holds a config accepts.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from molguide.generation.limits import MAX_SAMPLES, check_sample_count, short
from molguide.guidance.kinds import GUIDANCE_KINDS

log = logging.getLogger("molguide")
MAX_DEPTH = 32  # sections nest 3 deep; a deeper YAML value is a mistake or an attack


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _one_of(name: str, allowed: Iterable[str]) -> str:
    """``name`` when it is among ``allowed``, else the error pydantic gives for a Literal."""
    allowed = list(allowed)
    if name in allowed:
        return name
    quoted = [repr(a) for a in allowed]
    expected = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})


def _registered(module: str, name: str) -> AfterValidator:
    """A validator accepting the keys of ``module.name`` (a registry dict or a tuple of names),
    imported when a config is checked: torch-backed registries stay out of ``import``."""

    def check(value: str) -> str:
        import importlib

        return _one_of(value, getattr(importlib.import_module(module), name))

    return AfterValidator(check)


def known_properties(info: ValidationInfo | None) -> tuple[str, ...]:
    """The properties a config may aim at: those ``data.properties`` declares for a user's
    file (``data.path``; passed as validation context by :func:`load_config`), else every
    registered data set's targets."""
    if info is not None and info.context and "file_properties" in info.context:
        return tuple(info.context["file_properties"])
    from molguide.data.registry import target_properties

    return target_properties()


def _target_property(name: str, info: ValidationInfo) -> str:
    return _one_of(name, known_properties(info))


BackboneName = Annotated[str, _registered("molguide.models.registry", "BACKBONES")]
SamplerName = Annotated[str, _registered("molguide.diffusion.samplers", "SAMPLERS")]
DatasetName = Annotated[str, _registered("molguide.data.registry", "DATASETS")]
PropertyName = Annotated[str, AfterValidator(_target_property)]
Parameterisation = Annotated[str, _registered("molguide.models.score", "PARAMETERISATIONS")]
LossWeighting = Annotated[str, _registered("molguide.diffusion.process", "LOSS_WEIGHTINGS")]
TypeLoss = Annotated[str, _registered("molguide.diffusion.process", "TYPE_LOSSES")]
ScheduleName = Annotated[str, _registered("molguide.diffusion.schedule", "SCHEDULES")]


def _sampler_options(section: Any) -> Any:
    """Options the section's sampler does not have, or negative ones, fail here, by name."""
    from molguide.diffusion.samplers import SAMPLERS

    known = SAMPLERS[section.method].OPTIONS
    for key, value in section.sampler_options.items():
        if key not in known:
            raise PydanticCustomError(
                "value_error",
                "sampler '{method}' has no option '{key}' (its options: {known})",
                {"method": section.method, "key": key, "known": ", ".join(known) or "none"},
            )
        if not value >= 0:
            raise PydanticCustomError(
                "value_error", "{key} must be >= 0, got {value}", {"key": key, "value": value}
            )
    return section


def _backbone_kwargs(kwargs: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """Sizes the backbone cannot be built with (a zero or negative width) or that a saved
    network may not have (the bounds of :class:`~molguide.storage.metadata.NetworkConfig`)
    fail here, by name: before training, not at its export."""
    from molguide.storage.metadata import backbone_problem

    backbone = info.data.get("backbone")
    problem = backbone_problem(backbone, kwargs) if backbone else None
    if problem:
        raise PydanticCustomError("value_error", "{problem}", {"problem": problem})
    return kwargs


class _Backbone(_Section):
    """A section choosing a backbone and its sizes."""

    _check_kwargs = field_validator("backbone_kwargs", check_fields=False)(_backbone_kwargs)


class DataProperty(_Section):
    """One property of a user's file (``data.properties.<name>``)."""

    column: str | None = Field(None, description="its SD tag or CSV column (default: the property's name)")
    unit: str = Field("", description="shown in tables and plots, e.g. 'kcal/mol'")
    description: str = ""


class DataConfig(_Section):
    dataset: DatasetName | None = Field("qm9", description="a registered data set (ignored with data.path)")
    path: str | None = Field(
        None,
        description="your own molecules instead (docs/own-data.md): an SDF with 3D coordinates and "
        "properties as SD tags, or a CSV / .smi of SMILES embedded in 3D by RDKit",
    )
    properties: dict[str, DataProperty] = Field(
        default_factory=dict,
        description="data.path's properties guidance may aim at: {name: {column, unit, description}} "
        "or a list of tag/column names",
    )
    split_by: Literal["random", "scaffold"] = Field(
        "random", description="data.path's split: random molecules or Bemis-Murcko scaffolds"
    )
    split_seed: int = Field(0, ge=0)
    split_fractions: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="train, valid, test shares of data.path (train is halved as in EDM)"
    )
    conformers: int = Field(1, ge=1, le=100, description="3D conformers per SMILES of a CSV / .smi")
    embed_seed: int = Field(0, ge=0, description="seed of the 3D embedding of SMILES")
    smiles_column: str | None = Field(None, description="the CSV's SMILES column (default: found by name)")
    max_atoms: int | None = Field(
        None, ge=2, le=1000, description="data.path's molecules with more atoms (H included) are left out"
    )
    elements: list[str] | None = Field(
        None,
        description="data.path's molecules with other elements are left out (e.g. [H, C, N, O, F, S, Cl]); "
        "None: every element the file holds is an atom type",
    )
    split: Literal["train", "generator_half", "evaluator_half"] = "generator_half"
    max_molecules: int | None = Field(None, ge=1, description="first N molecules of the split (None: all)")
    remove_hydrogens: bool = False

    @field_validator("properties", mode="before")
    @classmethod
    def _names_alone(cls, value: Any) -> Any:
        """``[LogP, TPSA]`` is short for ``{LogP: {}, TPSA: {}}`` (each read from its own tag)."""
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return {v: {} for v in value}
        return value

    @field_validator("elements")
    @classmethod
    def _element_symbols(cls, symbols: list[str] | None) -> list[str] | None:
        from molguide.data.elements import is_element_symbol

        for sym in symbols or []:
            if not is_element_symbol(sym):
                raise ValueError(f"{sym!r} is not an element symbol")
        return symbols

    @field_validator("split_fractions")
    @classmethod
    def _shares(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0 or abs(sum(value) - 1) > 1e-6:
            raise ValueError(f"three positive shares summing to 1, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.path:
            if "dataset" in self.model_fields_set and self.dataset is not None:
                raise PydanticCustomError(
                    "value_error", "give data.dataset or data.path, not both (data.path is your own file)"
                )
            self.dataset = None
        elif self.dataset is None:
            raise PydanticCustomError("value_error", "give data.dataset (e.g. qm9) or data.path")
        elif self.properties:
            raise PydanticCustomError(
                "value_error", "data.properties describes data.path's columns; data.path is not set"
            )
        return self


class ModelConfig(_Backbone):
    backbone: BackboneName = "egnn"
    backbone_kwargs: dict[str, Any] = Field(default_factory=lambda: {"hidden": 64, "num_layers": 4})
    parameterisation: Parameterisation = Field(
        "eps", description="network predicts the noise (EDM) or the clean molecule (positions + type logits)"
    )
    self_condition: bool = Field(False, description="feed the previous clean estimate back in (EGNN only)")
    bond_head: bool = Field(
        False,
        description="also predict bond orders (x0 + EGNN; trained on bonds perceived from the DFT "
        "geometries); the returned molecules then carry the predicted bonds",
    )
    fixed_atoms: bool = Field(
        False,
        description="train to keep atoms: some atoms of each molecule are given clean and flagged, the "
        "rest generated (diffusion.loss.fixed_prob); generate(keep=...) then needs no RePaint "
        "approximation (docs/edit.md)",
    )
    pretrained: str | None = Field(
        None,
        description="a shipped generator (qm9) or a saved model folder: train-score uses it instead of "
        "training (its own architecture and diffusion; the keys above are then ignored)",
    )

    @field_validator("backbone_kwargs")
    @classmethod
    def _positions_move(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("coordinate_updates", True) is False:  # a predictor-only switch
            raise PydanticCustomError(
                "value_error",
                "coordinate_updates: false is for classifiers and evaluators; "
                "a score network's positions are its output",
            )
        return kwargs


class LossSection(_Section):
    """Training of x0 networks (see molguide.diffusion.process.LossSettings); time_power,
    align_noise and self_condition_prob apply to eps networks too."""

    weighting: LossWeighting = "snr_clamp"
    snr_min: float = Field(0.05, gt=0)
    snr_max: float = Field(1.5, gt=0)
    type_loss: TypeLoss = "ce"
    type_weight: float = Field(1.0, ge=0)
    time_power: float = Field(1.0, gt=0, description="t = u^power: > 1 trains more near the data")
    align_noise: bool = Field(False, description="rotate position noise onto the data (Kabsch)")
    self_condition_prob: float = Field(0.5, ge=0, le=1)
    bond_weight: float = Field(1.0, ge=0, description="factor on the bond-order cross-entropy (bond_head)")
    fixed_prob: float = Field(
        0.5, ge=0, le=1, description="share of molecules with fixed atoms (model.fixed_atoms)"
    )


class DiffusionConfig(_Section):
    schedule: ScheduleName = "polynomial_2"
    steps: int = Field(1000, ge=10)
    precision: float = Field(1e-5, gt=0, lt=0.5)
    loss: LossSection = Field(default_factory=LossSection)


class TrainSection(_Section):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-12, ge=0)
    warmup_steps: int = Field(0, ge=0)
    lr_decay_start: int | None = Field(
        None, ge=0, description="step at which a cosine decay of the learning rate starts (None: constant)"
    )
    lr_decay_steps: int = Field(0, ge=0, description="length of that decay in steps")
    lr_final: float = Field(0.0, ge=0, description="learning rate at the end of that decay")
    ema_decay: float = Field(0.999, ge=0, lt=1)
    ema_warmup: bool = Field(
        False, description="EMA decay min(ema_decay, (1 + n) / (10 + n)): forgets the init"
    )
    grad_clip: float = Field(2.0, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    resume: bool = True
    init_from: str | None = Field(
        None,
        description=(
            "start a new run from these weights (a training checkpoint, a saved model folder or a "
            "shipped name); a wider or deeper EGNN grows from them computing the same function"
        ),
    )
    max_minutes: float | None = Field(None, gt=0, description="stop (with a checkpoint) after this long")
    mixed_precision: bool = Field(
        False, description="bf16 autocast of the network forward (positions and the loss stay float32)"
    )

    @model_validator(mode="after")
    def _decay(self) -> TrainSection:
        # A decay start without a length would drop the rate to lr_final in one step.
        if self.lr_decay_start is not None and self.lr_decay_steps < 1:
            raise PydanticCustomError(
                "value_error",
                "lr_decay_steps must be at least 1 when lr_decay_start ({start}) is set",
                {"start": self.lr_decay_start},
            )
        return self


class _Sampling(_Section):
    """The sampler settings the sample and guide sections share."""

    method: SamplerName = "ancestral"
    grid_power: float = Field(
        1.0, gt=0, description="time grid t = u^p (1: EDM's even grid; 2: more steps near the data)"
    )
    sampler_options: dict[str, float] = Field(
        default_factory=dict, description="the sampler's own settings, e.g. {eta: 3.0} for dpmpp2m_sde"
    )
    _options = model_validator(mode="after")(_sampler_options)
    batch_size: int = Field(250, ge=1)
    seed: int = Field(0, ge=0)
    max_samples: int = Field(
        MAX_SAMPLES, ge=1, description="n_samples above this is refused (raise it to sample more in one run)"
    )

    @model_validator(mode="after")
    def _bounded(self) -> _Sampling:
        # Refused here, before anything is drawn or trained: no allocation, no resume hint.
        n_samples = getattr(self, "n_samples", None)
        if n_samples is not None:
            try:
                check_sample_count(n_samples, self.max_samples, name="n_samples")
            except ValueError as err:
                raise PydanticCustomError("value_error", "{problem}", {"problem": str(err)}) from None
        return self


class SampleSection(_Sampling):
    n_samples: int = Field(1000, ge=1)
    steps: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [100], min_length=1)
    model: str | None = Field(
        None,
        description="the trained run to sample: a folder, runs:/<id> or a shipped name (default: output_dir)",
    )
    xtb: bool = False


class DesignSection(_Section):
    """``molguide run design``: variants of a lead at each start level (docs/edit.md)."""

    lead: str | None = Field(None, description="an SDF whose first molecule (3D, with hydrogens) is the lead")
    model: str | None = Field(
        None, description="the trained run to design with: a folder, runs:/<id> or qm9 (default: output_dir)"
    )
    t0: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.1, 0.2, 0.3], min_length=1, description="start levels, one setting each"
    )
    n: int = Field(20, ge=1, le=100_000, description="variants per start level and setting")
    keep: str | list[int] | None = Field(None, description="atoms of the lead that stay: a SMARTS or indices")
    guidance: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="weights by guidance kind for the guided variants, e.g. {classifier: 2.0}, towards the "
        "run's trained goal; empty: unguided only",
    )
    steps: int | None = Field(None, ge=1, description="steps over [t0, 0] (default: model steps x t0)")
    seed: int = Field(0, ge=0)


class PredictorTrainSection(TrainSection):
    """Training defaults of classifiers and evaluators (a partial override keeps the rest)."""

    steps: int = Field(2000, ge=1)
    lr: float = Field(5e-4, gt=0)
    ema_decay: float = Field(0.99, ge=0, lt=1)


class RewardTrainSection(TrainSection):
    """Fine-tuning defaults of the reward-reweighted score model."""

    lr: float = Field(2e-4, gt=0)
    ema_decay: float = Field(0.99, ge=0, lt=1)


class CfgTrainSection(TrainSection):
    """Training defaults of the conditional (CFG) score model."""

    lr: float = Field(5e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    ema_decay: float = Field(0.995, ge=0, lt=1)


class TargetSection(_Section):
    """Which property guidance aims at and how it becomes classes (see PropertyTarget)."""

    property: PropertyName = "gap_eV"
    n_bins: int = Field(3, ge=2, le=20, description="quantile bins (ignored with thresholds)")
    thresholds: list[float] | None = None
    target: Literal["high", "low"] | int = "high"
    target_value: float | None = None
    goals: dict[str, Any] | None = Field(
        None,
        description="several properties at once, {property: goal} as generate(target=...) takes them "
        "(docs/generate.md): 'high', 'low', a value, {value, tolerance}, {bin}, each with weight, t_min, "
        "t_max; the first property is `property` (its bins, the reward model's property)",
    )

    @model_validator(mode="after")
    def _goals_name_the_properties(self, info: ValidationInfo) -> TargetSection:
        if not self.goals:
            return self
        from molguide.guidance.goals import parse_goals

        try:
            goals = parse_goals(self.goals)
        except ValueError as err:
            raise PydanticCustomError("goals", "{msg}", {"msg": str(err)}) from None
        known = known_properties(info)
        for goal in goals:
            if goal.property not in known:
                raise PydanticCustomError(
                    "goals",
                    "target.goals: {prop} is not a property (there are: {known})",
                    {"prop": repr(goal.property), "known": ", ".join(known)},
                )
        first = goals[0]
        # The single-property keys follow the first goal (its bins, the reward's direction).
        # They may come from a base layer (a pipeline's defaults, -c FILE) under the --set
        # that gives the goals, so the goals win; a different value is named, not kept.
        implied = {
            "property": first.property,
            "target": "high" if first.kind == "value" else first.bin if first.kind == "bin" else first.kind,
            "target_value": first.value if first.kind == "value" else None,
        }
        for key, value in implied.items():
            if key in self.model_fields_set and getattr(self, key) != value:
                old = getattr(self, key)
                log.warning("target.%s = %r is replaced by target.goals' first goal (%s)", key, old, value)
        self.__dict__.update(implied)
        return self

    def goal_list(self) -> list:
        """Every property's :class:`~molguide.guidance.goals.Goal`, the first property first."""
        from molguide.guidance.goals import Goal, parse_goals

        if self.goals:
            return parse_goals(self.goals)
        if self.target_value is not None:
            return [Goal(self.property, "value", value=float(self.target_value))]
        if isinstance(self.target, str):
            return [Goal(self.property, self.target)]
        return [Goal(self.property, "bin", bin=int(self.target))]

    def further_properties(self) -> list[str]:
        """The properties of ``goals`` after the first (their networks: ``<kind>.<property>``)."""
        return [goal.property for goal in self.goal_list()[1:]]

    def for_property(self, prop: str) -> TargetSection:
        """The section of one further property: its own quantile bins, steering "high"."""
        return TargetSection(property=prop, n_bins=self.n_bins)


class NetworkSection(_Backbone):
    """An invariant predictor (noise-level classifier or clean-molecule evaluator)."""

    backbone: BackboneName = "egnn"
    backbone_kwargs: dict[str, Any] = Field(default_factory=lambda: {"hidden": 64, "num_layers": 3})
    time_heads: int = Field(1, ge=1, description="one output head per bucket of t (classifier only)")
    grad_penalty: float = Field(0.0, ge=0, description="smoothness: weight of sigma^2 |grad log p|^2")
    train: PredictorTrainSection = Field(default_factory=PredictorTrainSection)
    holdout: int = Field(2000, ge=10, description="validation molecules for the diagnostics")


class CfgSection(_Section):
    """Conditional score model for classifier-free guidance (label = target class one-hot)."""

    enabled: bool = Field(False, description="train it in the full pipeline")
    p_uncond: float = Field(0.1, ge=0, le=1, description="probability the label is dropped (null token)")
    train: CfgTrainSection = Field(default_factory=CfgTrainSection)


class RewardSection(_Section):
    """Reward-reweighted score model: r(x) = exp(beta * z(property)), z standardised and clipped."""

    beta: float = Field(1.0, description="inverse temperature on the standardised property")
    clip_z: float | None = Field(
        3.0, gt=0, description="clip the standardised property to +-clip_z (None: no clip)"
    )
    init_from_score: bool = True
    correction: dict[str, Any] | None = Field(
        None,
        description="experimental: backbone sizes of a small correction network (e.g. {hidden: 32, "
        "num_layers: 3}): the reward model is then the frozen score network plus this correction, "
        "and reward guidance costs the correction alone (needs init_from_score). Measured once in "
        "the quickstart it steered the property the wrong way (README); None: fine-tune a full copy",
    )
    train: RewardTrainSection = Field(default_factory=RewardTrainSection)

    @model_validator(mode="after")
    def _correction_needs_base(self) -> RewardSection:
        import inspect

        from molguide.models.registry import BACKBONES, backbone_argument_problem

        if self.correction is None:
            return self
        if not self.init_from_score:
            raise ValueError(
                "correction: a correction is trained on top of the score network; set init_from_score: true"
            )
        known = set(inspect.signature(BACKBONES["egnn"]().__init__).parameters) - {
            "self",
            "in_features",
            "out_features",
        }
        unknown = sorted(set(self.correction) - known)
        if unknown:
            raise ValueError(f"correction: unknown EGNN setting(s) {unknown}; known: {sorted(known)}")
        problem = backbone_argument_problem("egnn", self.correction)
        if problem:
            raise ValueError(f"correction: {problem}")
        return self


class _GuideSettings(_Sampling):
    t_min: float = Field(0.0, ge=0, le=1)
    t_max: float = Field(1.0, ge=0, le=1)
    sweep: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=list, description="extra weights, one nested run each"
    )
    n_samples: int = Field(500, ge=2)
    steps: int = Field(100, ge=1)
    xtb: bool = True
    diagnostics_molecules: int = Field(1000, ge=10)

    @model_validator(mode="after")
    def _window(self) -> _GuideSettings:
        # An empty window would switch every term off without a word.
        if self.t_min >= self.t_max:
            raise PydanticCustomError(
                "value_error",
                "t_min ({t_min}) must be below t_max ({t_max}): guidance acts for t in [t_min, t_max]",
                {"t_min": self.t_min, "t_max": self.t_max},
            )
        return self


GuideSection = create_model(
    "GuideSection",
    __base__=_GuideSettings,
    __module__=__name__,
    __doc__="Guided sampling: one weight per guidance kind (molguide.guidance.kinds), "
    "their time window, and the sweep.",
    **{
        kind.name: (float, Field(kind.default_weight, ge=0, description=kind.summary))
        for kind in GUIDANCE_KINDS.values()
    },
)


class _ProtocolSettings(_Section):
    """EDM's QM9 protocol in ``molguide run full`` (docs/protocol.md).

    Per property: a noise-level classifier (``classifier`` section, ``n_bins`` quantile
    bins of the generator half) and an evaluator (``evaluator`` section, evaluator half);
    with ``cfg.enabled`` also a conditional score model. Then ``n_samples`` (N, value)
    pairs of generator-half molecules are sampled unguided and guided, judged by the
    evaluator, and logged as the stability and conditional-MAE tables.
    """

    enabled: bool = Field(False, description="run the protocol steps in the full pipeline")
    properties: list[PropertyName] = Field(
        default_factory=lambda: ["alpha_bohr3", "gap_eV", "homo_eV", "lumo_eV", "mu_D", "cv_calmolK"],
        min_length=1,
    )
    n_samples: int = Field(10000, ge=2, description="(N, value) pairs, one sample each per setting")
    max_samples: int = Field(
        MAX_SAMPLES, ge=1, description="n_samples above this is refused (raise it to go on)"
    )
    n_bins: int = Field(10, ge=2, le=20, description="quantile bins of each property's classifier")
    n_reference: int = Field(10000, ge=2, description="random generator-half molecules of the data row")
    steps: int = Field(1000, ge=1, description="sampling steps")
    method: SamplerName = "ancestral"
    sampler: Literal["edm", "model"] = Field(
        "edm",
        description="edm: protocol.method on EDM's even time grid; model: the sampler the score "
        "network recommends (its method, grid and options, e.g. the shipped generator's), with "
        "protocol.steps",
    )
    seed: int = Field(0, ge=0)
    select: bool = Field(
        True,
        description="choose each guidance kind's weight on the generator half (judged by a selector, an "
        "evaluator trained on the generator half) and judge only the chosen weight with the evaluator; "
        "false: the evaluator judges every weight (a sweep)",
    )
    max_validity_drop: float = Field(
        0.05, ge=0, le=1, description="a chosen weight keeps strict validity within this of unguided's"
    )
    xtb_molecules: int = Field(
        200, ge=0, description="GFN2-xTB judges this many molecules of every gap/HOMO/LUMO/mu row (0: off)"
    )
    xtb_workers: int = Field(1, ge=1, description="xTB processes")
    pairs: list[tuple[PropertyName, PropertyName]] = Field(
        default_factory=list,
        description="EEGSDE's multi-property rows: pairs of properties, each molecule steered to both of "
        "its values at once, e.g. [[cv_calmolK, mu_D], [gap_eV, mu_D], [alpha_bohr3, mu_D]]",
    )

    @model_validator(mode="after")
    def _bounded(self) -> _ProtocolSettings:
        try:
            check_sample_count(self.n_samples, self.max_samples, name="n_samples")
        except ValueError as err:
            raise PydanticCustomError("value_error", "{problem}", {"problem": str(err)}) from None
        return self

    @field_validator("properties")
    @classmethod
    def _distinct(cls, properties: list[str]) -> list[str]:
        if len(set(properties)) != len(properties):
            raise ValueError(f"each property once, got {properties}")
        return properties

    @model_validator(mode="after")
    def _pairs_of_listed_properties(self) -> _ProtocolSettings:
        for a, b in self.pairs:
            if a == b:
                raise ValueError(f"pairs: {a} twice in one pair")
            missing = [p for p in (a, b) if p not in self.properties]
            if missing:
                raise ValueError(
                    f"pairs: {missing[0]} is not in protocol.properties (its networks are trained there)"
                )
        return self


def _weight_list(weights: list[float]) -> list[float]:
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got {weights}")
    return sorted(set(weights))


ProtocolSection = create_model(
    "ProtocolSection",
    __base__=_ProtocolSettings,
    __module__=__name__,
    __doc__=_ProtocolSettings.__doc__
    + "\n    ``<kind>_weights``: the weights of each guidance kind that steers every molecule "
    "to its own target, one row each.\n",
    **{
        f"{kind.name}_weights": (
            Annotated[list[float], AfterValidator(_weight_list)],
            Field(
                default_factory=lambda kind=kind: list(kind.protocol_weights),
                description=f"{kind.label} weights, one row each ({kind.summary})",
            ),
        )
        for kind in GUIDANCE_KINDS.values()
        if kind.per_sample_targets
    },
)


class EvaluateSection(_Section):
    """``molguide run evaluate``: chemistry metrics of a molecule file, logged to MLflow."""

    file: str | None = Field(None, description="SDF, XYZ or SMILES CSV to evaluate")
    xtb: bool = True
    novelty: bool = True


class _RunSections(_Section):
    name: str = "molguide"
    output_dir: str = "runs/default"
    device: str = "cpu"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    train: TrainSection = Field(default_factory=TrainSection)
    sample: SampleSection = Field(default_factory=SampleSection)
    target: TargetSection = Field(default_factory=TargetSection)
    classifier: NetworkSection = Field(default_factory=NetworkSection)
    evaluator: NetworkSection = Field(default_factory=NetworkSection)
    reward: RewardSection = Field(default_factory=RewardSection)
    cfg: CfgSection = Field(default_factory=CfgSection)
    guide: GuideSection = Field(default_factory=GuideSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    protocol: ProtocolSection = Field(default_factory=ProtocolSection)
    design: DesignSection = Field(default_factory=DesignSection)

    @model_validator(mode="after")
    def _protocol_is_qm9s(self) -> _RunSections:
        if self.protocol.enabled and self.data.path:
            raise PydanticCustomError(
                "value_error",
                "protocol.enabled: EDM's protocol is QM9's benchmark (its tables, units and published "
                "rows); with data.path use the guide pipeline (docs/own-data.md)",
            )
        return self


# A guidance kind whose network has no section above gets an invariant predictor's
# (backbone, sizes, training), so registering the kind is enough to configure and train it.
RunConfig = create_model(
    "RunConfig",
    __base__=_RunSections,
    __module__=__name__,
    __doc__="Everything a run needs; ``molguide run PIPELINE -c FILE --set a.b=c`` builds one.",
    **{
        kind.network: (NetworkSection, Field(default_factory=NetworkSection))
        for kind in GUIDANCE_KINDS.values()
        if kind.network not in _RunSections.model_fields
    },
)


class ConfigError(ValueError):
    """A configuration problem, as one readable message."""


def _dotted(path: list[str]) -> str:
    """A key path, its middle cut when it is long (a key nested 3,000 deep)."""
    return ".".join(path) if len(path) <= 8 else ".".join(path[:4]) + "..." + ".".join(path[-3:])


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if len(keys) > MAX_DEPTH or not all(keys):
        problem = f"nested deeper than {MAX_DEPTH} levels" if all(keys) else "an empty key"
        raise ConfigError(f"--set {_dotted(keys)}: {problem}")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a section")
    node[keys[-1]] = value


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping that gives one key twice."""


class RefusedYamlError(yaml.YAMLError):
    """YAML that is valid but not accepted in a config: an alias, or nesting past MAX_DEPTH."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (plain YAML keeps
    the last silently, so a config would lose the first value without a word), aliases
    (``*name``: nine nested aliases of nine make a billion values out of a few lines, the
    "billion laughs"; no config needs one) and values nested deeper than :data:`MAX_DEPTH`
    (which would exhaust Python's recursion in the composer)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._path: list[str] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RefusedYamlError(
                f"line {event.start_mark.line + 1}: an alias (*{short(event.anchor, 40)}) is not "
                "accepted in a config; write the value out"
            )
        if parent is None or (index is None and self.check_event(yaml.ScalarEvent)):
            return super().compose_node(parent, index)  # the document, or a plain key
        # A mapping's value comes with its key node, a list item with its position.
        key = index.value if isinstance(index, yaml.ScalarNode) else "?" if index is None else str(index)
        self._path.append(key[:40] if isinstance(key, str) else "?")
        try:
            if len(self._path) > MAX_DEPTH:
                raise RefusedYamlError(f"{_dotted(self._path)}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._path.pop()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(f"key {key!r} appears twice (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping
)


def parse_yaml(text: str) -> Any:
    """YAML text as Python objects, refusing duplicate keys (:class:`yaml.YAMLError` otherwise)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as one short line (PyYAML's own spans several, with a snippet)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {err.problem}"
    return short(" ".join(str(err).split()), 200).strip("'\"")


def read_yaml_tree(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a nested dict; unreadable or malformed files (a key given twice,
    an alias, a value nested too deep, bytes that are not UTF-8 included) name the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.start}, line {line}: 0x{raw[err.start]:02x}); "
            "save the config as UTF-8"
        ) from None
    try:
        tree = parse_yaml(text) or {}
    except DuplicateKeyError as err:
        raise ConfigError(f"{path}: {err}; give each key once") from None
    except RefusedYamlError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({yaml_problem(err)})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    return tree


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _declared_properties(tree: dict[str, Any]) -> list[str] | None:
    """The property names ``data.properties`` declares when ``data.path`` is set, else None."""
    data = tree.get("data")
    if not isinstance(data, dict) or not data.get("path"):
        return None
    declared = data.get("properties") or {}
    if isinstance(declared, dict):
        return [str(k) for k in declared]
    return [str(v) for v in declared] if isinstance(declared, list) else []


def _base_for(base: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """A pipeline's defaults under the user's keys: with the user's own file (``data.path``)
    the defaults' QM9 target (a QM9 property, its bins or value) gives way to the file's
    declared properties, unless the user names a target."""
    if _declared_properties(_merge(base, user)) is None:
        return base
    if isinstance(base.get("target"), dict):  # its bins and direction stay; what names QM9 goes
        for key in ("property", "goals", "thresholds", "target_value"):
            base["target"].pop(key, None)
    if isinstance(base.get("data"), dict):
        base["data"].pop("dataset", None)
    return base


def _file_context(tree: dict[str, Any]) -> dict[str, Any] | None:
    declared = _declared_properties(tree)
    return None if declared is None else {"file_properties": declared}


def _file_property_defaults(tree: dict[str, Any]) -> dict[str, Any]:
    """With a user's file, the properties a config leaves unset follow data.properties:
    ``target.property`` is the first declared one, ``protocol.properties`` all of them."""
    declared = _declared_properties(tree)
    if not declared:
        return tree
    tree = dict(tree)
    for section, key, value in (("target", "property", declared[0]), ("protocol", "properties", declared)):
        part = tree.get(section)
        if isinstance(part, dict) and (key in part or part.get("goals")):
            continue  # given, or implied by target.goals' first goal
        if part is None or isinstance(part, dict):
            tree[section] = {**(part or {}), key: value}
    return tree


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Read a YAML config (or the defaults) and apply ``key.path=value`` overrides.

    ``base`` (a pipeline's own defaults, e.g. the quickstart's) lies under the file:
    the file's keys replace the base's one by one, sections merge.
    """
    file_tree: dict[str, Any] = read_yaml_tree(path) if path else {}
    settings = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as err:
            what = str(err) if isinstance(err, (RefusedYamlError, DuplicateKeyError)) else yaml_problem(err)
            raise ConfigError(f"--set {short(item, 60)}: not a YAML value ({what})") from None
        settings.append((key.strip(), value))

    def layered(tree: dict[str, Any]) -> dict[str, Any]:
        """``tree`` under the file's keys (sections merge), then each ``--set`` (a value replaces)."""
        tree = _merge(tree, copy.deepcopy(file_tree))
        for key, value in settings:
            _set_path(tree, key, copy.deepcopy(value))
        return tree

    tree = layered(_base_for(copy.deepcopy(base or {}), layered({})))
    try:
        return RunConfig.model_validate(_file_property_defaults(tree), context=_file_context(tree))
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top level)"
            shown = "input" in e and not isinstance(e["input"], dict)  # a whole section tells nothing
            problems.append(f"{where}: {e['msg']}" + (f" (got {short(e['input'])})" if shown else ""))
        source = f"{path}: " if path else ""
        raise ConfigError(source + "; ".join(problems)) from None


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML (logged with every run)."""
    return yaml.safe_dump(config.model_dump(), sort_keys=False)

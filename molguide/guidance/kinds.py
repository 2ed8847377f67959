"""Guidance kinds: one registry entry per kind of guidance a trained run can apply.

An entry names the trained network the kind needs, its weight's default in the
``guide`` section, the baseline its samples are compared with, how plots draw it, and
how it builds its term from a trained network, a target, a weight and a time window
(docs/guidance.md). Everything that applies guidance by name reads this registry:
``Designer.generate(guidance={...})``, the ``guide`` pipeline's settings and its config
section (one weight per kind), EDM's protocol (kinds that take one target per sample,
one ``<kind>_weights`` list each), the headline settings and the plots.

This module imports no torch at import time (configs and the command line read it); the
builders import the terms when they are called. Each kind's network's record (what it
carries beside its weights) is declared here with the kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from molguide.guidance.records import DiffusionRecord, Record, TargetRecord

if TYPE_CHECKING:
    import torch

    from molguide.diffusion.process import VPDiffusion
    from molguide.diffusion.sampling import GuidanceTerm
    from molguide.guidance.targets import PropertyTarget
    from molguide.guidance.terms import TimeWindow


@dataclass(frozen=True)
class TermRequest:
    """What a guidance term is built from.

    ``classes`` is the target class for every molecule (an int), one per molecule of
    the sampled call (a (B,) integer tensor, EDM's protocol) or a (K,) boolean mask of
    the accepted classes; ``values`` is the target value in the property's unit (a float
    or a (B,) tensor) for kinds that aim at values (``takes_values``), with ``tolerance``
    the accepted distance (None: the value itself); ``record`` is what was saved with
    ``network`` (:mod:`molguide.storage.metadata`, e.g. a reward model's trained direction).
    """

    network: torch.nn.Module
    record: Any
    target: PropertyTarget
    classes: int | torch.Tensor
    diffusion: VPDiffusion
    weight: float
    window: TimeWindow
    values: float | torch.Tensor | None = None
    tolerance: float | None = None


@dataclass(frozen=True)
class GuidanceKind:
    """One kind of guidance.

    Attributes:
        name: the weight's key (``generate(guidance={name: w})``, ``guide.<name>``) and the
            prefix of its settings' names (``<name>_w2``).
        network: the kind of trained network it needs (``molguide run train-<network>``).
        record: what that network carries beside its weights (a
            :class:`~molguide.guidance.records.Record`, checked when a saved network is read).
        summary: one line for configs, docs and logs.
        default_weight: the ``guide`` section's default weight.
        build: the term from a :class:`TermRequest`; raises ValueError when the network
            cannot serve the target (named in the message).
        samples_own_network: the sampler's base score is this kind's own network (CFG:
            the conditional network with the null label), not the run's score model.
        reference: the setting its samples are paired with: ``"unguided"`` or, for a kind
            that samples its own network, that network's unguided setting.
        zero_weight_guides: weight 0 is a setting of its own (CFG: plain conditional
            sampling), not "off".
        per_sample_targets: the term can steer each molecule to its own target (EDM's
            protocol); such kinds get a ``protocol.<name>_weights`` list.
        takes_values: the term aims at a value (``TermRequest.values``), not at classes;
            it serves value goals only.
        protocol_weights: that list's default.
        label, marker: how plots draw it.
    """

    name: str
    network: str
    record: type[Record]
    summary: str
    default_weight: float
    build: Callable[[TermRequest], GuidanceTerm]
    samples_own_network: bool = False
    reference: str = "unguided"
    zero_weight_guides: bool = False
    per_sample_targets: bool = False
    takes_values: bool = False
    protocol_weights: tuple[float, ...] = ()
    label: str = ""
    marker: str = "o"

    def weights(self, configured: float, sweep: list[float] | tuple[float, ...] = ()) -> list[float]:
        """The weights to sample at, sorted: the configured one and the sweep's
        (without 0 unless weight 0 is a setting of this kind)."""
        chosen = {float(configured), *(float(w) for w in sweep)}
        if not self.zero_weight_guides:
            chosen.discard(0.0)
        return sorted(chosen)

    def is_on(self, weight: float) -> bool:
        """Whether a configured weight asks for this kind's samples."""
        return weight > 0 or (self.zero_weight_guides and weight == 0)


GUIDANCE_KINDS: dict[str, GuidanceKind] = {}


def register_guidance_kind(kind: GuidanceKind) -> GuidanceKind:
    """Add a kind to the registry (its name must be new)."""
    if kind.name in GUIDANCE_KINDS:
        raise ValueError(f"guidance kind {kind.name!r} is registered already")
    if kind.name in (k.reference for k in GUIDANCE_KINDS.values()) or kind.reference == kind.name:
        raise ValueError(f"guidance kind {kind.name!r}: the name of a baseline setting")
    GUIDANCE_KINDS[kind.name] = kind
    return kind


def guidance_kind(name: str) -> GuidanceKind:
    """The registered kind ``name``; the error lists the kinds there are."""
    try:
        return GUIDANCE_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown guidance kind {name!r}; allowed: {list(GUIDANCE_KINDS)}") from None


def baselines() -> tuple[str, ...]:
    """The settings guided settings are compared with (they carry no weight in their names)."""
    return tuple(dict.fromkeys(("unguided", *(k.reference for k in GUIDANCE_KINDS.values()))))


def setting_name(kind: str, weight: float) -> str:
    """``classifier_w2`` etc.: the name of a guided setting (baselines keep their own name)."""
    return kind if kind in baselines() else f"{kind}_w{weight:g}"


# ----------------------------------------------------------------------------- the kinds


class ClassifierRecord(TargetRecord):
    """A noise-level classifier: its target binning and per-noise-level diagnostics."""

    diffusion: DiffusionRecord
    noise_levels: list[dict[str, Any]] = Field(default_factory=list)


class RewardRecord(Record):
    """A reward-reweighted score network: the reward r = exp(beta * direction * z)."""

    property: str
    beta: float = Field(allow_inf_nan=False)
    clip_z: float | None = None
    direction: float
    mean: float = Field(allow_inf_nan=False)
    std: float = Field(gt=0, allow_inf_nan=False)
    reward_weight_ess: float | None = None
    diffusion: DiffusionRecord

    @field_validator("direction")
    @classmethod
    def _sign(cls, direction: float) -> float:
        if direction not in (-1.0, 1.0) or math.isnan(direction):
            raise ValueError(f"direction must be 1 (higher) or -1 (lower), got {direction}")
        return direction


class CfgRecord(TargetRecord):
    """A conditional score network for classifier-free guidance: its label binning."""

    p_uncond: float = Field(ge=0, le=1)
    diffusion: DiffusionRecord


class RegressorRecord(Record):
    """A noise-level regressor: the Gaussian N(mu_t(z), s_t(z)^2) of a standardised
    property, its scaling and its per-noise-level diagnostics."""

    property: str
    mean: float = Field(allow_inf_nan=False)
    std: float = Field(gt=0, allow_inf_nan=False)
    diffusion: DiffusionRecord
    noise_levels: list[dict[str, Any]] = Field(default_factory=list)


def _standardised_values(request: TermRequest, kind: str):
    """The request's target values in the regressor's standardised units."""
    import torch

    record, name = request.record, request.target.name
    if request.values is None:
        raise ValueError(
            f"guidance[{kind!r}]: it aims at a value of {name}; give a value goal, e.g. {{{name!r}: 2.5}}"
        )
    values = request.values
    values = values.double() if isinstance(values, torch.Tensor) else float(values)
    return (values - record.mean) / record.std


def _regressor_term(mode: str) -> Callable[[TermRequest], GuidanceTerm]:
    def build(request: TermRequest) -> GuidanceTerm:
        from molguide.guidance.terms import RegressorGuidance

        values = _standardised_values(request, mode)
        # the energy pulls towards the value itself; density may accept an interval
        tolerance = (
            None if request.tolerance is None or mode == "energy" else request.tolerance / request.record.std
        )
        return RegressorGuidance(request.network, values, mode, tolerance, request.weight, request.window)

    return build


def _denoised_estimate_term(request: TermRequest) -> GuidanceTerm:
    from molguide.guidance.terms import DenoisedEstimateGuidance

    values = _standardised_values(request, "tfg")
    return DenoisedEstimateGuidance(
        request.network, values, request.diffusion, request.weight, request.window
    )


def _classifier_term(request: TermRequest) -> GuidanceTerm:
    from molguide.guidance.terms import ClassifierGuidance

    return ClassifierGuidance(request.network, request.classes, request.weight, request.window)


def _cfg_term(request: TermRequest) -> GuidanceTerm:
    import torch

    from molguide.guidance.terms import ClassifierFreeGuidance

    classes = torch.as_tensor(request.classes)
    if classes.dtype == torch.bool:
        bins = ", ".join(str(int(k)) for k in torch.nonzero(classes).flatten())
        raise ValueError(
            f"guidance['cfg']: the conditional network takes one bin of {request.target.name}, the goal "
            f"spans bins {bins}; give a bin, or a value without a tolerance"
        )
    label = torch.nn.functional.one_hot(classes, request.target.n_bins).to(torch.get_default_dtype())
    return ClassifierFreeGuidance(request.network, label, request.diffusion, request.weight, request.window)


def _reward_term(request: TermRequest) -> GuidanceTerm:
    from molguide.guidance.terms import RewardGuidance

    trained = float(request.record.direction)
    if request.target.direction == 0:
        raise ValueError(
            f"guidance['reward']: the reward model makes {request.target.name} "
            f"{'higher' if trained > 0 else 'lower'}; it cannot aim at a value"
        )
    if request.target.direction != trained:
        raise ValueError(
            f"guidance['reward']: the reward model was trained to make {request.target.name} "
            f"{'higher' if trained > 0 else 'lower'}, the target asks the opposite"
        )
    return RewardGuidance(request.network, request.diffusion, request.weight, request.window)


register_guidance_kind(
    GuidanceKind(
        "classifier",
        network="classifier",
        record=ClassifierRecord,
        summary="classifier guidance: w * grad log p_t(target class | z_t) of the noise-level classifier",
        default_weight=1.0,
        build=_classifier_term,
        per_sample_targets=True,
        protocol_weights=(1.0,),
        label="classifier",
        marker="o",
    )
)
register_guidance_kind(
    GuidanceKind(
        "reward",
        network="reward",
        record=RewardRecord,
        summary="reward guidance: w * (s_reward - s), the reward-reweighted score minus the score",
        default_weight=1.0,
        build=_reward_term,
        label="reward",
        marker="s",
    )
)
register_guidance_kind(
    GuidanceKind(
        "cfg",
        network="cfg",
        record=CfgRecord,
        summary="classifier-free guidance: s(z|c) + w (s(z|c) - s(z)) of the conditional network "
        "(0: plain conditional sampling)",
        default_weight=0.0,
        build=_cfg_term,
        samples_own_network=True,
        reference="cfg_unconditional",
        zero_weight_guides=True,
        per_sample_targets=True,
        protocol_weights=(0.0,),
        label="CFG",
        marker="^",
    )
)


def _register_value_kind(name: str, summary: str, build, label: str, marker: str) -> None:
    """A kind that aims at values through the noise-level regressor (off unless weighted)."""
    register_guidance_kind(
        GuidanceKind(
            name,
            network="regressor",
            record=RegressorRecord,
            summary=summary,
            default_weight=0.0,
            build=build,
            per_sample_targets=True,
            takes_values=True,
            label=label,
            marker=marker,
        )
    )


_register_value_kind(
    "density",
    "density guidance: w * grad log N(value; mu_t(z), s_t(z)^2) of the noise-level regressor "
    "(trained by negative log-likelihood; with a tolerance, the log-probability of the interval)",
    _regressor_term("density"),
    "density",
    "D",
)
_register_value_kind(
    "energy",
    "energy guidance (EEGSDE): w * -grad (mu_t(z) - value)^2 / 2 of the noise-level regressor's "
    "mean, in standardised units",
    _regressor_term("energy"),
    "energy",
    "v",
)
_register_value_kind(
    "tfg",
    "training-free guidance (TFG) on the clean estimate: w J_t grad_x0 -(f(x0_hat) - value)^2 / 2, "
    "f the regressor at t = 0, J_t a Gaussian model's d x0_hat / d z_t (no gradient through the "
    "score network)",
    _denoised_estimate_term,
    "TFG",
    "P",
)

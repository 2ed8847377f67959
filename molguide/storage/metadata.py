"""What a saved network's ``config.json`` and a trained run's index hold, as typed records.

Every saved network's ``config.json`` holds its format, its own ``network`` config (which
rebuilds it), its training ``step`` and the record of its kind below. One schema,
:class:`NetworkFile`, is what :func:`~molguide.storage.trained_run.save_network` writes and
what :func:`~molguide.storage.trained_run.read_network` reads, so the two cannot drift; a
value out of range names the file and the key instead of failing later inside torch
(a segfault, an element 231, a 240 GB allocation).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from molguide.guidance.kinds import GUIDANCE_KINDS, CfgRecord, ClassifierRecord, RewardRecord
from molguide.guidance.records import DiffusionRecord, Record

__all__ = [
    "RECORDS",
    "CfgRecord",
    "ClassifierRecord",
    "DiffusionRecord",
    "EvaluatorRecord",
    "NetworkConfig",
    "NetworkFile",
    "Record",
    "RewardRecord",
    "RunIndex",
    "SamplerRecord",
    "ScoreRecord",
    "register_record",
]

RUN_FORMAT, NETWORK_FORMAT, FORMAT_VERSION = "molguide-run", "molguide-network", 2
FIRST_FORMAT = "molguide-score-model"  # format 1: a folder holding one score network

# Bounds of what a saved file may ask for: far above any molguide network or molecule,
# far below what would exhaust a machine before the weights are even compared.
MAX_ATOMS = 1000  # atom-count distributions longer than this are refused (not a molecule)
MAX_WIDTH = 4096  # any whole-number size of a backbone (hidden channels, radial basis, ...)
MAX_LAYERS = 64
MAX_LMAX = 8  # e3nn: the largest spherical-harmonic degree
MAX_SIZE = 2**26  # num_layers x width^2: about 8 x 2^26 parameters (2 GB in float32) at most
MAX_OUTPUTS = 1000  # a predictor's outputs, time heads, a CFG network's context width
MAX_SAMPLER_STEPS = 100_000

AtomicNumber = Annotated[StrictInt, Field(ge=1, le=118)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


def backbone_problem(backbone: str, kwargs: dict[str, Any]) -> str | None:
    """Why ``kwargs`` cannot size a ``backbone`` read from a file (an unknown setting, a
    width of 0 or beyond :data:`MAX_WIDTH`, too many layers), or None."""
    import inspect

    from molguide.models.registry import BACKBONES, backbone_argument_problem

    params = set(inspect.signature(BACKBONES[backbone]().__init__).parameters)
    unknown = sorted(set(kwargs) - (params - {"self", "in_features", "out_features"}))
    if unknown:
        return f"unknown {backbone} setting {unknown[0]!r}"
    problem = backbone_argument_problem(backbone, kwargs)
    if problem:
        return problem
    whole = {k: v for k, v in kwargs.items() if isinstance(v, int) and not isinstance(v, bool)}
    limits = {"num_layers": MAX_LAYERS, "lmax": MAX_LMAX}
    for key, value in whole.items():
        if value > limits.get(key, MAX_WIDTH):
            return f"{key} must be at most {limits.get(key, MAX_WIDTH)}, not {value}"
    widths = [v for k, v in whole.items() if k not in limits] or [1]
    if whole.get("num_layers", 1) * max(widths) ** 2 > MAX_SIZE:
        return f"num_layers x width^2 must be at most {MAX_SIZE} (saved networks are bounded in size)"
    return None


class NetworkConfig(BaseModel):
    """A network's own config (``network.config``): what rebuilds it
    (:func:`molguide.models.build.network_from_config`). Score networks, reward networks
    (with ``correction``) and predictors (with ``out_dim``) share it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str
    backbone_kwargs: dict[str, Any]
    num_atom_types: int = Field(5, ge=1, le=118, strict=True)
    atom_types: list[AtomicNumber] | None = Field(None, max_length=118)  # listed unless QM9's
    # score networks
    context_dim: int = Field(0, ge=0, le=MAX_OUTPUTS, strict=True)
    parameterisation: Literal["eps", "x0"] = "eps"
    self_condition: StrictBool = False
    bond_head: StrictBool = False
    fixed_atoms: StrictBool = False
    correction: dict[str, Any] | None = None
    # predictors (classifiers, evaluators)
    out_dim: int | None = Field(None, ge=1, le=MAX_OUTPUTS, strict=True)
    time_input: StrictBool | None = None
    time_heads: int | None = Field(None, ge=1, le=MAX_OUTPUTS, strict=True)
    readout_hidden: int | None = Field(None, ge=1, le=MAX_WIDTH, strict=True)

    @field_validator("backbone")
    @classmethod
    def _registered(cls, name: str) -> str:
        from molguide.models.registry import BACKBONES

        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; known: {list(BACKBONES)}")
        return name

    @field_validator("backbone_kwargs")
    @classmethod
    def _sizes(cls, kwargs: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        problem = backbone_problem(info.data["backbone"], kwargs) if "backbone" in info.data else None
        if problem:
            raise ValueError(problem)
        return kwargs

    @field_validator("correction")
    @classmethod
    def _correction_sizes(cls, correction: dict[str, Any] | None, info: ValidationInfo) -> dict | None:
        if correction is None or "backbone" not in info.data:
            return correction
        own = correction.get("backbone_kwargs")
        if set(correction) != {"backbone_kwargs"} or not isinstance(own, dict):
            raise ValueError("correction must be {backbone_kwargs: {...}}")
        problem = backbone_problem(info.data["backbone"], own)
        if problem:
            raise ValueError(f"backbone_kwargs: {problem}")
        return correction

    def as_dict(self) -> dict[str, Any]:
        """The config as read or given (keys left out stay out: they select the network class)."""
        return self.model_dump(mode="json", exclude_unset=True)


class NetworkFile(BaseModel):
    """``<kind>/config.json``: the one schema a saved network is written and read with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["molguide-network"]
    format_version: int = Field(ge=1, le=FORMAT_VERSION, strict=True)
    kind: str
    step: int = Field(0, ge=0, strict=True)
    network: NetworkConfig
    record: dict[str, Any]  # checked against RECORDS[kind] next (its errors name ``record.<key>``)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in RECORDS:
            raise ValueError(f"unknown kind of network {kind!r} (known: {', '.join(RECORDS)})")
        return kind


class RunIndex(BaseModel):
    """``molguide_run.json``: which networks a trained run holds, the data set and the target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["molguide-run"]
    format_version: int = Field(ge=1, le=FORMAT_VERSION, strict=True)
    networks: dict[str, str] = Field(min_length=1)
    dataset: str | None = None
    target: dict[str, Any] | None = None

    @field_validator("networks")
    @classmethod
    def _subfolders(cls, networks: dict[str, str]) -> dict[str, str]:
        for name, sub in networks.items():
            kind, dot, prop = name.partition(".")  # <kind> or <kind>.<property>
            if kind not in RECORDS:
                raise ValueError(f"unknown kind of network {kind!r} (known: {', '.join(RECORDS)})")
            if dot and (kind == "score" or not prop):
                raise ValueError(f"{name!r}: a further network is <kind>.<property> of a guidance kind")
            # A subfolder of the run, never a path that leads out of it.
            if not sub or sub in (".", "..") or "/" in sub or "\\" in sub:
                raise ValueError(f"{name}: {sub!r} is not the name of a subfolder")
        return networks


class SamplerRecord(Record):
    """How a score network samples best (``generate``'s defaults), e.g. the shipped one's."""

    method: str = "ancestral"
    steps: int = Field(100, ge=1, le=MAX_SAMPLER_STEPS, strict=True)
    grid_power: float = Field(1.0, gt=0, le=100, allow_inf_nan=False)
    options: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _registered(self) -> SamplerRecord:
        from molguide.diffusion.samplers import SAMPLERS

        if self.method not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.method!r}; known: {list(SAMPLERS)}")
        unknown = sorted(set(self.options) - set(SAMPLERS[self.method].OPTIONS))
        if unknown:
            raise ValueError(f"sampler {self.method!r} has no option {unknown[0]!r}")
        return self


class ScoreRecord(Record):
    """A score network: its diffusion, what its type channels are, the sizes it samples,
    how it was trained and how it samples best."""

    diffusion: DiffusionRecord
    atom_types: list[AtomicNumber] = Field(min_length=1, max_length=118)
    node_count_probs: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        min_length=2, max_length=MAX_ATOMS + 1
    )
    training: dict[str, Any] = Field(default_factory=dict)
    sampler: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sampler")
    @classmethod
    def _a_sampler(cls, sampler: dict[str, Any]) -> dict[str, Any]:
        # Kept a plain dict (only the keys given: "none" means the defaults), checked as a SamplerRecord.
        SamplerRecord.model_validate(sampler)
        return sampler

    @field_validator("atom_types")
    @classmethod
    def _distinct(cls, types: list[int]) -> list[int]:
        if len(set(types)) != len(types):
            raise ValueError("each atom type may appear once")
        return types

    @field_validator("node_count_probs")
    @classmethod
    def _a_distribution(cls, probs: list[float]) -> list[float]:
        if not math.isfinite(sum(probs)) or sum(probs) <= 0:
            raise ValueError("the atom-count probabilities must be >= 0 with a positive sum")
        if probs[0] != 0:  # entry k is the probability of k atoms
            raise ValueError(f"a molecule of 0 atoms must have probability 0, not {probs[0]}")
        return probs


class EvaluatorRecord(Record):
    """A property evaluator: the property and the scaling of its output."""

    property: str
    mean: Finite
    std: float = Field(gt=0, allow_inf_nan=False)
    onehot_scale: float = Field(0.25, gt=0, allow_inf_nan=False)
    reference_rows: dict[str, Any] = Field(default_factory=dict)


# The generator's and the evaluator's records, then each guidance kind's network's
# (declared with the kind in molguide.guidance.kinds).
RECORDS: dict[str, type[Record]] = {
    "score": ScoreRecord,
    "evaluator": EvaluatorRecord,
    "selector": EvaluatorRecord,  # an evaluator trained on the generator half: it chooses weights
    **{kind.network: kind.record for kind in GUIDANCE_KINDS.values()},
}


def register_record(kind: str, record: type[Record]) -> type[Record]:
    """The record of a kind of network that is not a guidance kind's (those come with their kind)."""
    if kind in RECORDS:
        raise ValueError(f"a record for {kind!r} networks is registered already")
    RECORDS[kind] = record
    return record

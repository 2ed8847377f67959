"""What each kind of trained network carries beside its weights, as typed records.

Every saved network's ``config.json`` holds its own ``network`` config (which rebuilds
it), its training ``step`` and the record of its kind below, checked when it is read: a
value out of range names the file and the key instead of failing later inside torch.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from molguide.guidance.targets import PropertyTarget

MAX_ATOMS = 1000  # atom-count distributions longer than this are refused (not a molecule)

AtomicNumber = Annotated[int, Field(ge=1, le=118)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Record(BaseModel):
    # Unknown keys are refused: a misspelt key would otherwise be read as its default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiffusionRecord(_Record):
    """The VP diffusion a network was trained with (``VPDiffusion.config``)."""

    schedule: str
    steps: int = Field(ge=1, le=100_000)
    precision: float = Field(gt=0, lt=1)
    onehot_scale: float = Field(0.25, gt=0, allow_inf_nan=False)
    loss: dict[str, Any] = Field(default_factory=dict)


class ScoreRecord(_Record):
    """A score network: its diffusion, what its type channels are, the sizes it samples,
    how it was trained and how it samples best."""

    diffusion: DiffusionRecord
    atom_types: list[AtomicNumber] = Field(min_length=1, max_length=118)
    node_count_probs: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        min_length=2, max_length=MAX_ATOMS + 1
    )
    training: dict[str, Any] = Field(default_factory=dict)
    sampler: dict[str, Any] = Field(default_factory=dict)

    @field_validator("atom_types")
    @classmethod
    def _distinct(cls, types: list[int]) -> list[int]:
        if len(set(types)) != len(types):
            raise ValueError(f"each atom type once, got {types}")
        return types

    @field_validator("node_count_probs")
    @classmethod
    def _a_distribution(cls, probs: list[float]) -> list[float]:
        if not math.isfinite(sum(probs)) or sum(probs) <= 0:
            raise ValueError("the atom-count probabilities must be >= 0 with a positive sum")
        return probs


class ClassifierRecord(_Record):
    """A noise-level classifier: its target binning and per-noise-level diagnostics."""

    target: dict[str, Any]
    diffusion: DiffusionRecord
    noise_levels: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def property_target(self) -> PropertyTarget:
        return PropertyTarget.from_dict(self.target)


class EvaluatorRecord(_Record):
    """A property evaluator: the property and the scaling of its output."""

    property: str
    mean: Finite
    std: float = Field(gt=0, allow_inf_nan=False)
    onehot_scale: float = Field(0.25, gt=0, allow_inf_nan=False)
    reference_rows: dict[str, Any] = Field(default_factory=dict)


class RewardRecord(_Record):
    """A reward-reweighted score network: the reward r = exp(beta * direction * z)."""

    property: str
    beta: Finite
    clip_z: float | None = None
    direction: float
    mean: Finite
    std: float = Field(gt=0, allow_inf_nan=False)
    reward_weight_ess: float | None = None
    diffusion: DiffusionRecord

    @field_validator("direction")
    @classmethod
    def _sign(cls, direction: float) -> float:
        if direction not in (-1.0, 1.0):
            raise ValueError(f"direction must be 1 (higher) or -1 (lower), got {direction}")
        return direction


class CfgRecord(_Record):
    """A conditional score network for classifier-free guidance: its label binning."""

    target: dict[str, Any]
    p_uncond: float = Field(ge=0, le=1)
    diffusion: DiffusionRecord

    @property
    def property_target(self) -> PropertyTarget:
        return PropertyTarget.from_dict(self.target)


RECORDS: dict[str, type[_Record]] = {
    "score": ScoreRecord,
    "classifier": ClassifierRecord,
    "evaluator": EvaluatorRecord,
    "reward": RewardRecord,
    "cfg": CfgRecord,
}


def register_record(kind: str, record: type[_Record]) -> type[_Record]:
    """The record a new kind of network carries (its term's module registers it)."""
    if kind in RECORDS:
        raise ValueError(f"a record for {kind!r} networks is registered already")
    RECORDS[kind] = record
    return record

"""What each kind of trained network carries beside its weights, as typed records.

Every saved network's ``config.json`` holds its own ``network`` config (which rebuilds
it), its training ``step`` and the record of its kind below, checked when it is read: a
value out of range names the file and the key instead of failing later inside torch.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field, field_validator

from molguide.guidance.kinds import GUIDANCE_KINDS, CfgRecord, ClassifierRecord, RewardRecord
from molguide.guidance.records import DiffusionRecord, Record

__all__ = [
    "RECORDS",
    "CfgRecord",
    "ClassifierRecord",
    "DiffusionRecord",
    "EvaluatorRecord",
    "Record",
    "RewardRecord",
    "ScoreRecord",
    "register_record",
]

MAX_ATOMS = 1000  # atom-count distributions longer than this are refused (not a molecule)

AtomicNumber = Annotated[int, Field(ge=1, le=118)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


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
    **{kind.network: kind.record for kind in GUIDANCE_KINDS.values()},
}


def register_record(kind: str, record: type[Record]) -> type[Record]:
    """The record of a kind of network that is not a guidance kind's (those come with their kind)."""
    if kind in RECORDS:
        raise ValueError(f"a record for {kind!r} networks is registered already")
    RECORDS[kind] = record
    return record

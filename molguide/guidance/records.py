"""The base of the records trained networks carry beside their weights (molguide.storage.metadata).

A record is a frozen pydantic model that refuses unknown keys (a misspelt key would
otherwise be read as its default); it is checked whenever a saved network is read.
Imports pydantic only: the registry of guidance kinds defines its networks' records
with it, and configs read that registry.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_BINS = 100  # a target's classes: more would be a classifier of a few molecules per class


class Record(BaseModel):
    """What a kind of trained network carries beside its weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DiffusionRecord(Record):
    """The VP diffusion a network was trained with (``VPDiffusion.config``)."""

    schedule: str
    steps: int = Field(ge=1, le=100_000, strict=True)
    precision: float = Field(gt=0, lt=1, allow_inf_nan=False)
    onehot_scale: float = Field(0.25, gt=0, allow_inf_nan=False)
    loss: dict[str, Any] = Field(default_factory=dict)

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, schedule: str) -> str:
        from molguide.diffusion.schedule import SCHEDULES

        if schedule not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {schedule!r}; known: {list(SCHEDULES)}")
        return schedule

    @field_validator("loss")
    @classmethod
    def _loss_settings(cls, loss: dict[str, Any]) -> dict[str, Any]:
        # Records written before x0 networks have none; otherwise LossSettings' own checks.
        from molguide.diffusion.process import LossSettings

        try:
            LossSettings(**loss)
        except TypeError as err:
            raise ValueError(f"not a loss setting ({err})") from None
        return loss


class TargetRecord(Record):
    """A record with a property target's binning (``PropertyTarget.to_dict``)."""

    target: dict[str, Any]

    @field_validator("target")
    @classmethod
    def _binning(cls, target: dict[str, Any]) -> dict[str, Any]:
        from molguide.guidance.targets import PropertyTarget

        n_bins, edges = target.get("n_bins"), target.get("edges")
        if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 2 <= n_bins <= MAX_BINS:
            raise ValueError(f"n_bins must be a whole number from 2 to {MAX_BINS}, not {n_bins!r}")
        numbers = isinstance(edges, list) and all(
            isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) for e in edges
        )
        if not numbers or len(edges) != n_bins - 1 or edges != sorted(edges):
            raise ValueError(f"edges must be {n_bins - 1} increasing finite numbers")
        try:
            PropertyTarget.from_dict(target)
        except (TypeError, ValueError) as err:
            raise ValueError(str(err)) from None
        return target

    @property
    def property_target(self):
        """The :class:`~molguide.guidance.targets.PropertyTarget` it was trained with."""
        from molguide.guidance.targets import PropertyTarget

        return PropertyTarget.from_dict(self.target)

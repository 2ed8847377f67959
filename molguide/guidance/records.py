"""The base of the records trained networks carry beside their weights (molguide.storage.metadata).

A record is a frozen pydantic model that refuses unknown keys (a misspelt key would
otherwise be read as its default); it is checked whenever a saved network is read.
Imports pydantic only: the registry of guidance kinds defines its networks' records
with it, and configs read that registry.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    """What a kind of trained network carries beside its weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DiffusionRecord(Record):
    """The VP diffusion a network was trained with (``VPDiffusion.config``)."""

    schedule: str
    steps: int = Field(ge=1, le=100_000)
    precision: float = Field(gt=0, lt=1)
    onehot_scale: float = Field(0.25, gt=0, allow_inf_nan=False)
    loss: dict[str, Any] = Field(default_factory=dict)


class TargetRecord(Record):
    """A record with a property target's binning (``PropertyTarget.to_dict``)."""

    target: dict[str, Any]

    @property
    def property_target(self):
        """The :class:`~molguide.guidance.targets.PropertyTarget` it was trained with."""
        from molguide.guidance.targets import PropertyTarget

        return PropertyTarget.from_dict(self.target)

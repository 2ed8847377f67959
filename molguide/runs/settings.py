"""Sampling settings: the ways of sampling one experiment compares, sample by sample.

A setting is a base score network, the guidance terms added to its score, and the
setting its samples are compared with (``reference``): guided samples with the unguided
ones of the same seeds, CFG samples with the same conditional network's null-label
samples. The ``guide`` pipeline builds its settings with :func:`guide_settings`; EDM's
protocol builds its own (one target per sample) with the same :class:`SamplingSetting`.
Both build their terms through the registry of :mod:`molguide.guidance.kinds`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from molguide.guidance.kinds import GUIDANCE_KINDS, TermRequest, setting_name
from molguide.guidance.terms import TimeWindow
from molguide.runs.config import GuideSection
from molguide.storage.trained_run import TrainedRun

log = logging.getLogger(__name__)


@dataclass
class SamplingSetting:
    """One way of sampling: ``model`` under ``terms``; ``name`` labels its runs and files."""

    name: str
    kind: str  # a guidance kind's name, or a baseline's ("unguided", "cfg_unconditional")
    weight: float
    model: torch.nn.Module
    terms: list = field(default_factory=list)
    reference: str | None = None  # the setting it is judged against (None: a baseline)
    signature: dict = field(default_factory=dict)  # what made its samples (for resumable stores)


def guide_settings(gc: GuideSection, run: TrainedRun) -> list[SamplingSetting]:
    """The ``guide`` section's settings for a trained run: unguided, then per guidance kind
    whose network the run trained (registry order) its baseline when it samples its own
    network, and one setting per weight (the configured one and the sweep)."""
    window = TimeWindow(gc.t_min, gc.t_max)
    score, target, diffusion = run.network("score"), run.target, run.diffusion
    settings = [SamplingSetting("unguided", "unguided", 0.0, score)]
    for kind in GUIDANCE_KINDS.values():
        if not run.has(kind.network):
            continue
        if kind.takes_values and target.target_value is None:
            log.warning("%s guidance aims at a value: set target.target_value to sample it", kind.name)
            continue
        network = run.network(kind.network)
        model = network if kind.samples_own_network else score
        if kind.reference != "unguided":
            settings.append(SamplingSetting(kind.reference, kind.reference, 0.0, model))
        for w in kind.weights(getattr(gc, kind.name), gc.sweep):
            request = TermRequest(
                network,
                run.record(kind.network),
                target,
                target.target_class,
                diffusion,
                w,
                window,
                values=target.target_value,
            )
            name = setting_name(kind.name, w)
            settings.append(SamplingSetting(name, kind.name, w, model, [kind.build(request)], kind.reference))
    return settings

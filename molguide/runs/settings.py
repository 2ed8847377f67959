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

from molguide.guidance.goals import Goal, goal_request, trained_goal
from molguide.guidance.kinds import GUIDANCE_KINDS, setting_name
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


def guide_settings(
    gc: GuideSection, run: TrainedRun, goals: list[Goal] | None = None
) -> list[SamplingSetting]:
    """The ``guide`` section's settings for a trained run: unguided, then per guidance kind
    whose network the run trained (registry order) its baseline when it samples its own
    network, and one setting per weight (the configured one and the sweep).

    ``goals`` (default: the goal the run's first classifier was trained for): each
    setting holds one term per goal whose property has the kind's network, weighted by
    the kind's weight times the goal's and limited to the goal's time window (else
    ``guide.t_min``/``t_max``). A kind that samples its own network (CFG) steers the first
    property alone.
    """
    score, window = run.network("score"), TimeWindow(gc.t_min, gc.t_max)
    goals = goals or [trained_goal(run.target)]
    settings = [SamplingSetting("unguided", "unguided", 0.0, score)]
    for kind in GUIDANCE_KINDS.values():
        steered = [g for g in goals if run.has(kind.network, g.property)]
        if kind.samples_own_network:
            steered = steered[:1] if steered and steered[0] is goals[0] else []
        if kind.takes_values:
            for goal in [g for g in steered if g.kind != "value"]:
                log.warning(
                    "%s guidance aims at a value: give %s a value goal to steer it", kind.name, goal.property
                )
            steered = [g for g in steered if g.kind == "value"]
        if not steered:
            continue
        model = run.network(kind.network) if kind.samples_own_network else score
        if kind.reference != "unguided":
            settings.append(SamplingSetting(kind.reference, kind.reference, 0.0, model))
        for w in kind.weights(getattr(gc, kind.name), gc.sweep):
            terms = [kind.build(goal_request(run, kind.network, goal, w, window)) for goal in steered]
            name = setting_name(kind.name, w)
            settings.append(SamplingSetting(name, kind.name, w, model, terms, kind.reference))
    return settings

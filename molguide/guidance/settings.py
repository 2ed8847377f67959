"""Sampling settings: the ways of sampling one experiment compares, sample by sample.

A setting is a base score network, the guidance terms added to its score, and the
setting its samples are compared with (``reference``): guided samples with the unguided
ones of the same seeds, CFG samples with the same conditional network's null-label
samples. The ``guide`` pipeline builds its settings with :func:`guide_settings`; EDM's
protocol builds its own (one target per sample) with the same :class:`SamplingSetting`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from molguide.config import GuideSection
from molguide.guidance.targets import PropertyTarget
from molguide.guidance.terms import ClassifierFreeGuidance, ClassifierGuidance, RewardGuidance, TimeWindow

BASELINES = ("unguided", "cfg_unconditional")  # settings that are the reference of others


@dataclass
class SamplingSetting:
    """One way of sampling: ``model`` under ``terms``; ``name`` labels its runs and files."""

    name: str
    kind: str  # unguided | cfg_unconditional | classifier | reward | cfg
    weight: float
    model: torch.nn.Module
    terms: list = field(default_factory=list)
    reference: str | None = None  # the setting it is judged against (None: a baseline)
    signature: dict = field(default_factory=dict)  # what made its samples (for resumable stores)


def guided_name(kind: str, weight: float) -> str:
    """``classifier_w2`` etc.: the name of a guided setting (baselines keep their kind)."""
    return kind if kind in BASELINES else f"{kind}_w{weight:g}"


def guide_settings(
    gc: GuideSection,
    target: PropertyTarget,
    score: torch.nn.Module,
    sigma_fn,
    classifier: torch.nn.Module,
    reward: torch.nn.Module | None = None,
    cfg: torch.nn.Module | None = None,
) -> list[SamplingSetting]:
    """The ``guide`` section's settings: unguided, classifier guidance at each weight (the
    configured one and the sweep), reward guidance likewise (with a reward model), and with
    a CFG model its null-label baseline and CFG at each weight."""
    window = TimeWindow(gc.t_min, gc.t_max)
    settings = [SamplingSetting("unguided", "unguided", 0.0, score)]
    for w in sorted({gc.classifier, *gc.sweep} - {0.0}):
        term = ClassifierGuidance(classifier, target.target_class, w, window)
        settings.append(
            SamplingSetting(guided_name("classifier", w), "classifier", w, score, [term], "unguided")
        )
    if reward is not None:
        for w in sorted({gc.reward, *gc.sweep} - {0.0}):
            term = RewardGuidance(reward, sigma_fn, w, window)
            settings.append(SamplingSetting(guided_name("reward", w), "reward", w, score, [term], "unguided"))
    if cfg is not None:
        label = torch.nn.functional.one_hot(torch.tensor(target.target_class), target.n_bins).float()
        # CFG is judged against the same network's unconditional samples (null label),
        # so the improvement measures the label and w, not a difference between networks.
        settings.append(SamplingSetting("cfg_unconditional", "cfg_unconditional", 0.0, cfg))
        for w in sorted({gc.cfg, *gc.sweep}):
            term = ClassifierFreeGuidance(cfg, label, sigma_fn, w, window)
            settings.append(
                SamplingSetting(guided_name("cfg", w), "cfg", w, cfg, [term], "cfg_unconditional")
            )
    return settings

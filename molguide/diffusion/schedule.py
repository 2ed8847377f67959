"""Noise schedules of the variance-preserving process: alpha_t^2 + sigma_t^2 = 1 on T+1 steps."""

from __future__ import annotations

import math

import numpy as np
import torch

SCHEDULES = ("polynomial_2", "cosine")


def _clip_step_ratios(alpha2: np.ndarray, clip_value: float = 0.001) -> np.ndarray:
    """Clip alpha^2_t / alpha^2_{t-1} from below so no single step destroys the signal."""
    alpha2 = np.concatenate([[1.0], alpha2])
    ratios = np.clip(alpha2[1:] / alpha2[:-1], clip_value, 1.0)
    return np.cumprod(ratios)


def polynomial_alpha2(steps: int, power: float = 2.0, precision: float = 1e-5) -> np.ndarray:
    """EDM's ``polynomial_2``: alpha^2 = (1 - u^power)^2 on EDM's grid of T+1 points,
    step ratios clipped at 0.001, then squeezed into [s, 1 - s] with s = ``precision``."""
    n = steps + 1
    u = np.linspace(0, n, n) / n  # EDM's grid: T+1 points from 0 to 1
    alpha2 = _clip_step_ratios((1 - u**power) ** 2)
    return (1 - 2 * precision) * alpha2 + precision


def cosine_alpha2(steps: int, offset: float = 0.008, precision: float = 1e-5) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule on T+1 points, clipped like EDM's."""
    u = np.linspace(0, 1, steps + 1)
    f = np.cos((u + offset) / (1 + offset) * math.pi / 2) ** 2
    alpha2 = _clip_step_ratios(f / f[0])
    return (1 - 2 * precision) * alpha2 + precision


class NoiseSchedule:
    """alpha_t and sigma_t tabulated on integer steps 0..T (float64), indexed by t in [0, 1]."""

    def __init__(self, kind: str = "polynomial_2", steps: int = 1000, precision: float = 1e-5) -> None:
        if kind == "polynomial_2":
            alpha2 = polynomial_alpha2(steps, 2.0, precision)
        elif kind == "cosine":
            alpha2 = cosine_alpha2(steps, precision=precision)
        else:
            raise ValueError(f"unknown noise schedule {kind!r}; choose one of {list(SCHEDULES)}")
        self.kind = kind
        self.steps = steps
        self.precision = precision
        self.alpha2 = torch.tensor(alpha2, dtype=torch.float64)

    def index(self, t: torch.Tensor) -> torch.Tensor:
        """Integer step of continuous times t in [0, 1]."""
        return torch.round(t.double() * self.steps).long().clamp(0, self.steps)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.alpha2.to(t.device)[self.index(t)].sqrt()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return (1 - self.alpha2.to(t.device)[self.index(t)]).sqrt()

"""The arithmetic of one reverse step of the VP process (the samplers of
:mod:`molguide.diffusion.samplers` are built from it).

From time t to s < t with alpha_{t|s} = alpha_t / alpha_s and
sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2 (docs/sampling.md):
- ancestral: mean (z_t + sigma_{t|s}^2 score) / alpha_{t|s}, std sigma_{t|s} sigma_s / sigma_t;
- DDIM (probability flow, deterministic): eps = -sigma_t score,
  z_s = alpha_s (z_t - sigma_t eps) / alpha_t + sigma_s eps;
- DPM-Solver++ (Lu et al. 2022) on the clean-sample estimate
  D = (z_t + sigma_t^2 score) / alpha_t, with h = lambda_s - lambda_t for the
  log-SNR lambda = log(alpha / sigma): see :func:`dpm_solver_pp_step`.
The score already contains every guidance term, so guidance is scaled exactly like
the model's own score and never touches the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from molguide.diffusion.schedule import NoiseSchedule


@dataclass(frozen=True)
class StepCoefficients:
    """alpha and sigma at the two ends of a step."""

    alpha_t: float
    sigma_t: float
    alpha_s: float
    sigma_s: float

    @classmethod
    def between(cls, schedule: NoiseSchedule, t: float, s: float) -> StepCoefficients:
        ts = torch.tensor([t, s], dtype=torch.float64)
        a, sg = schedule.alpha(ts), schedule.sigma(ts)
        return cls(float(a[0]), float(sg[0]), float(a[1]), float(sg[1]))


def time_grid(steps: int, schedule_steps: int, power: float = 1.0, t_start: float = 1.0) -> torch.Tensor:
    """S + 1 strictly decreasing times from ``t_start`` (1: pure noise) to 0 that fall on the
    schedule's integer grid.

    ``power`` 1 spaces them evenly (EDM's sampler); ``power`` p > 1 places them at
    t_start u^p for u evenly spaced from 1 to 0, so more of the steps fall near the data end
    (t = 0), where the molecule's bonds are decided.
    """
    if not 0 < t_start <= 1:
        raise ValueError(f"t_start must be in (0, 1], got {t_start}")
    top = round(schedule_steps * t_start)
    if top < 1:
        raise ValueError(f"t_start {t_start:g} is below the schedule's first step, 1/{schedule_steps}")
    if not 1 <= steps <= top:
        where = "" if t_start == 1 else f" from t_start {t_start:g}"
        raise ValueError(f"steps must be in [1, {top}]{where}, got {steps}")
    if not power > 0:
        raise ValueError(f"the grid power must be > 0, got {power}")
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    ints = torch.round(top * u**power).tolist()
    # Crowding rounds neighbours onto one integer: keep at least one grid point between them.
    for k in range(steps - 1, -1, -1):
        ints[k] = max(ints[k], ints[k + 1] + 1)
    return torch.tensor(ints, dtype=torch.float64) / schedule_steps


def ancestral_mean_std(
    z: torch.Tensor, score: torch.Tensor, c: StepCoefficients
) -> tuple[torch.Tensor, float]:
    """Mean and standard deviation of p(z_s | z_t) under the (guided) score."""
    a_ts = c.alpha_t / c.alpha_s
    var_ts = c.sigma_t**2 - a_ts**2 * c.sigma_s**2
    std = (var_ts * c.sigma_s**2 / c.sigma_t**2) ** 0.5
    return (z + var_ts * score) / a_ts, std


def ddim_step(z: torch.Tensor, score: torch.Tensor, c: StepCoefficients) -> torch.Tensor:
    """Deterministic DDIM / probability-flow step under the (guided) score."""
    eps = -c.sigma_t * score
    return c.alpha_s * (z - c.sigma_t * eps) / c.alpha_t + c.sigma_s * eps


def clean_estimate(z: torch.Tensor, score: torch.Tensor, c: StepCoefficients) -> torch.Tensor:
    """The clean sample the (guided) score implies at t: (z_t + sigma_t^2 score) / alpha_t."""
    return (z + c.sigma_t**2 * score) / c.alpha_t


def log_snr_step(c: StepCoefficients) -> float:
    """h = lambda_s - lambda_t > 0, the step's length in half log-SNR."""
    return math.log(c.alpha_s / c.sigma_s) - math.log(c.alpha_t / c.sigma_t)


def dpm_solver_pp_step(
    z: torch.Tensor,
    clean: torch.Tensor,
    previous: torch.Tensor | None,
    c: StepCoefficients,
    ratio: float,
    eta: float,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """One step of DPM-Solver++(2M) from t to s, its stochastic form mixed in by ``eta``.

    With h = lambda_s - lambda_t and H = (1 + eta) h:
    z_s = (sigma_s / sigma_t) e^{-eta h} z_t + alpha_s (1 - e^{-H}) D
          + sigma_s sqrt(1 - e^{-2 eta h}) noise,
    where D is the clean estimate ``clean`` and, with the previous step's estimate
    ``previous`` and r = h_previous / h (``ratio``), the second-order
    D + (D - previous) / (2 r). ``eta`` 0 is the probability-flow ODE solver of Lu et
    al. (2022); ``eta`` 1 their SDE solver, whose first-order form is exactly the
    ancestral step (the posterior q(z_s | z_t, x0 = D)). ``noise`` None: its mean.
    """
    h = log_snr_step(c)
    decay = -math.expm1(-(1.0 + eta) * h)  # 1 - e^{-H}
    d = clean if previous is None else clean + (clean - previous) / (2.0 * ratio)
    out = (c.sigma_s / c.sigma_t) * math.exp(-eta * h) * z + c.alpha_s * decay * d
    if noise is not None:
        out = out + c.sigma_s * math.sqrt(-math.expm1(-2.0 * eta * h)) * noise
    return out

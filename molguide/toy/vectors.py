"""Diffusion on plain vectors: the Gaussian-mixture test bed of the guidance theory.

The same schedule, reverse steps and training loop as the molecules, on points in
R^d: a sampler that takes any score function, small time-conditioned MLPs, and the
two objectives (denoising score matching, optionally reward-weighted or
conditional; noisy-data cross-entropy) that molguide uses for molecules.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from molguide.diffusion.samplers import build_sampler
from molguide.diffusion.schedule import NoiseSchedule
from molguide.toy.mixture import GaussianMixture

# score_fn(z, t, alpha, sigma) -> score (N, d); t, alpha, sigma are floats of the current step
VectorScore = Callable[[torch.Tensor, float, float, float], torch.Tensor]


def default_mixture(dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """The toy problem: three anisotropic components in 2-D, classes (0, 0, 1), p(y=1) = 0.2."""
    means = torch.tensor([[-1.5, 0.0], [1.5, 1.5], [1.5, -1.0]], dtype=dtype)
    covs = torch.tensor(
        [[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 0.8]], [[0.6, -0.2], [-0.2, 0.6]]], dtype=dtype
    )
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=dtype), classes=[0, 0, 1])


@torch.no_grad()
def sample_vectors(
    score_fn: VectorScore,
    schedule: NoiseSchedule,
    n: int,
    dim: int,
    steps: int = 1000,
    method: str = "ancestral",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Reverse-time samples in R^dim under ``score_fn`` (which includes any guidance), with
    the registered sampler ``method`` on EDM's even time grid."""
    sampler = build_sampler(method, schedule)
    sampler.set_timesteps(steps)

    def score(k: int, t: float, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        coef = sampler.coefficients(k)
        with torch.enable_grad():  # learned classifiers differentiate through their network
            return (score_fn(states[0], t, coef.alpha_t, coef.sigma_t).detach(),)

    def noise() -> tuple[torch.Tensor, ...]:
        return (torch.randn(n, dim, generator=generator, dtype=dtype),)

    start = torch.randn(n, dim, generator=generator, dtype=dtype)
    return sampler.run((start,), score, noise)[0]


class VectorMLP(nn.Module):
    """A time-conditioned MLP on R^d: (x, t[, context]) -> out_dim outputs."""

    def __init__(
        self, dim: int, out_dim: int, hidden: int = 128, layers: int = 3, context_dim: int = 0
    ) -> None:
        super().__init__()
        self.context_dim = context_dim
        widths = [dim + 1 + context_dim] + [hidden] * layers
        body: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            body += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*body, nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        parts = [x, t.to(x.dtype).reshape(-1, 1).expand(len(x), 1)]
        if self.context_dim:
            parts.append(context if context is not None else x.new_zeros(len(x), self.context_dim))
        return self.net(torch.cat(parts, -1))


def _noise(schedule: NoiseSchedule, x0: torch.Tensor, generator: torch.Generator):
    steps = torch.randint(0, schedule.steps + 1, (len(x0),), generator=generator)
    t = steps.double() / schedule.steps
    alpha = schedule.alpha(t).to(x0.dtype).unsqueeze(-1)
    sigma = schedule.sigma(t).to(x0.dtype).unsqueeze(-1)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    return alpha * x0 + sigma * eps, t.to(x0.dtype), eps


class VectorDenoisingObjective:
    """eps-prediction MSE on batches {"x": (B, d)[, "weight": (B,)][, "context": (B, C)]}.

    With weights this is weighted denoising score matching: its minimiser is the
    score of the reweighted distribution r(x) p(x) / Z (docs/guidance.md).
    """

    def __init__(self, schedule: NoiseSchedule, p_uncond: float = 0.0) -> None:
        self.schedule, self.p_uncond = schedule, p_uncond

    def __call__(self, model: nn.Module, batch: dict, generator: torch.Generator) -> torch.Tensor:
        x0 = batch["x"]
        context = batch.get("context")
        if context is not None:
            keep = torch.rand(len(x0), generator=generator) >= self.p_uncond
            context = context * keep.to(context.dtype).unsqueeze(-1)
        zt, t, eps = _noise(self.schedule, x0, generator)
        per_point = ((model(zt, t, context) - eps) ** 2).mean(-1)
        weight = batch.get("weight")
        if weight is None:
            return per_point.mean()
        return (per_point * weight).sum() / weight.sum()


class VectorClassifierObjective:
    """Cross-entropy of a time-conditioned classifier on noised points {"x", "y"}."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule

    def __call__(self, model: nn.Module, batch: dict, generator: torch.Generator):
        zt, t, _ = _noise(self.schedule, batch["x"], generator)
        logits = model(zt, t)
        loss = nn.functional.cross_entropy(logits, batch["y"])
        accuracy = float((logits.argmax(-1) == batch["y"]).float().mean())
        return loss, {"accuracy": accuracy}


def eps_model_score(model: nn.Module, context: torch.Tensor | None = None) -> VectorScore:
    """The score -eps_hat / sigma of a trained noise-prediction MLP, as a VectorScore."""

    def score(z: torch.Tensor, t: float, alpha: float, sigma: float) -> torch.Tensor:
        tt = torch.full((len(z),), t, dtype=z.dtype)
        ctx = None if context is None else context.to(z.dtype).expand(len(z), -1)
        return -model(z, tt, ctx) / sigma

    return score

"""Density and energy guidance from a noise-level regressor, against their closed forms
(float64): a regressor whose mean is linear in the atom features and whose spread is fixed."""

from __future__ import annotations

import math

import pytest
import torch

from molguide.diffusion.sampling import GuidanceState
from molguide.guidance.terms import RegressorGuidance, gaussian_log_probability

LOG_S = -0.3


class _LinearRegressor(torch.nn.Module):
    """mu = sum over a molecule's atoms of zh . a; log s = LOG_S (so d mu / d zh_i = a)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = a

    def forward(self, zx, zh, t, batch, num_graphs, edge_index):
        per_atom = zh @ self.a + 0 * zx.sum(-1)  # positions unused, still in the graph
        mu = torch.zeros(num_graphs, dtype=zh.dtype).index_add(0, batch, per_atom)
        return torch.stack([mu, torch.full_like(mu, LOG_S)], -1)


def _state(seed: int = 0) -> tuple[GuidanceState, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(4, generator=gen, dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    zx = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    zh = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    state = GuidanceState(
        zx=zx, zh=zh, t=torch.tensor([0.2, 0.7], dtype=torch.float64), batch=batch, num_graphs=2,
        edge_index=torch.zeros(2, 0, dtype=torch.long), score_x=torch.zeros_like(zx),
        score_h=torch.zeros_like(zh),
    )  # fmt: skip
    mu = torch.zeros(2, dtype=torch.float64).index_add(0, batch, zh @ a)
    return state, a, mu


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def test_density_guidance_is_the_gradient_of_the_gaussian_log_likelihood():
    """grad_zh_i log N(c; mu, s^2) = (c - mu) / s^2 * a for every atom i of the molecule."""
    state, a, mu = _state()
    c = torch.tensor([0.5, -1.0], dtype=torch.float64)
    gx, gh = RegressorGuidance(_LinearRegressor(a), c, "density", weight=2.0)(state)
    s2 = math.exp(2 * LOG_S)
    expected = 2.0 * ((c - mu) / s2)[state.batch].unsqueeze(-1) * a
    torch.testing.assert_close(gh, expected, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(gx) == 0


def test_density_guidance_with_a_tolerance_is_the_gradient_of_the_interval_probability():
    """d/dmu log(Phi(b) - Phi(a)) = (phi(a) - phi(b)) / (s (Phi(b) - Phi(a))), a, b = (c -+ tol - mu) / s."""
    state, a, mu = _state(1)
    c, tol, s = 0.3, 0.4, math.exp(LOG_S)
    _, gh = RegressorGuidance(_LinearRegressor(a), c, "density", tolerance=tol)(state)
    per_mol = []
    for m in mu.tolist():
        lo, hi = (c - tol - m) / s, (c + tol - m) / s
        per_mol.append((_phi(lo) - _phi(hi)) / (s * (_cdf(hi) - _cdf(lo))))
    expected = torch.tensor(per_mol, dtype=torch.float64)[state.batch].unsqueeze(-1) * a
    torch.testing.assert_close(gh, expected, rtol=1e-9, atol=1e-12)


def test_energy_guidance_is_eegsdes_squared_error_gradient():
    """grad_zh_i of -(mu - c)^2 / 2 = -(mu - c) a; the regressor's spread plays no part."""
    state, a, mu = _state(2)
    _, gh = RegressorGuidance(_LinearRegressor(a), 1.5, "energy", weight=0.5)(state)
    expected = 0.5 * (-(mu - 1.5))[state.batch].unsqueeze(-1) * a
    torch.testing.assert_close(gh, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("offset", [0.0, 3.0, 19.0, -19.0])
def test_the_interval_probability_stays_exact_far_in_either_tail(offset):
    """log P(offset - 0.5 < y < offset + 0.5) for y ~ N(0, 1), against erfc (no cancellation
    of two probabilities near 1 when the interval sits far above the mean)."""
    got = float(gaussian_log_probability(torch.tensor(offset, dtype=torch.float64), torch.tensor(0.0,
                dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), 0.5))  # fmt: skip
    lo, hi = abs(offset) - 0.5, abs(offset) + 0.5  # P is symmetric in the offset's sign
    exact = math.log(0.5 * math.erfc(lo / math.sqrt(2)) - 0.5 * math.erfc(hi / math.sqrt(2)))
    assert got == pytest.approx(exact, rel=1e-9)


def test_per_molecule_values_are_cut_with_their_samples():
    state, a, _ = _state()
    values = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    term = RegressorGuidance(_LinearRegressor(a), values, "density")
    assert term.for_samples(1, 3).values.tolist() == [0.2, 0.3]
    with pytest.raises(ValueError, match="3 target values for a batch of 2 molecules"):
        term(state)


def test_training_free_guidance_follows_the_predictor_on_the_clean_estimate():
    """grad_zh_i = -(f(x0_hat) - c) a J_t: the predictor's gradient at the score network's clean
    estimate, carried to z_t by a Gaussian model's Jacobian J_t = alpha v / (alpha^2 v + sigma^2),
    v the spread of the molecule's own clean types (no gradient through the score network)."""
    import dataclasses

    from molguide.diffusion.process import Denoised, VPDiffusion
    from molguide.guidance.terms import DenoisedEstimateGuidance
    from molguide.runs.config import DiffusionConfig

    state, a, _ = _state(3)
    gen = torch.Generator().manual_seed(4)
    x0x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    x0h = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    zeros_x, zeros_h = torch.zeros_like(x0x), torch.zeros_like(x0h)
    state = dataclasses.replace(state, denoised=Denoised(zeros_x, zeros_h, x0x, x0h, zeros_x, zeros_h))
    diffusion = VPDiffusion.from_config(DiffusionConfig().model_dump())
    _, gh = DenoisedEstimateGuidance(_LinearRegressor(a), 0.7, diffusion, weight=1.5)(state)
    mu0 = torch.zeros(2, dtype=torch.float64).index_add(0, state.batch, x0h @ a)
    alpha, sigma = diffusion.schedule.alpha(state.t).double(), diffusion.schedule.sigma(state.t).double()
    v = torch.stack(
        [x0h[state.batch == k].sub(x0h[state.batch == k].mean(0)).pow(2).mean() for k in range(2)]
    )
    jacobian = alpha * v / (alpha**2 * v + sigma**2)
    expected = 1.5 * (-(mu0 - 0.7) * jacobian)[state.batch].unsqueeze(-1) * a
    torch.testing.assert_close(gh, expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="needs the score network's clean estimate"):
        DenoisedEstimateGuidance(_LinearRegressor(a), 0.7, diffusion)(
            dataclasses.replace(state, denoised=None)
        )

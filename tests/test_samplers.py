"""Few-step samplers (DPM-Solver++ 2M and its SDE form) checked against closed forms in float64."""

import torch

from molguide.diffusion.samplers import build_sampler
from molguide.diffusion.schedule import NoiseSchedule
from molguide.diffusion.steps import ancestral_mean_std, dpm_solver_pp_step

SCHEDULE = NoiseSchedule("polynomial_2", 1000)


def _gaussian_score(mu: float, var: float):
    """The exact score of z_t when the data are N(mu, var): -(z - alpha mu) / (alpha^2 var + sigma^2)."""

    def score(k, t, states):
        ts = torch.tensor([t], dtype=torch.float64)
        a, s = float(SCHEDULE.alpha(ts)), float(SCHEDULE.sigma(ts))
        return tuple(-(z - a * mu) / (a * a * var + s * s) for z in states)

    return score


def _flow_error(name: str, steps: int, mu=0.7, var=0.3, end=0.1) -> float:
    """Largest gap between the solver's end point at t = ``end`` and the exact probability-flow
    map, affine for Gaussian data: z_end = alpha_end mu + (std_end / std_1)(z_1 - alpha_1 mu).
    (It stops short of t = 0, where the last step's log-SNR length is unbounded.)"""
    sampler = build_sampler(name, SCHEDULE)
    sampler.set_timesteps(steps)
    times = sampler.timesteps = torch.linspace(1.0, end, steps + 1, dtype=torch.float64)
    z1 = torch.linspace(-3, 3, 41, dtype=torch.float64)
    out = sampler.run((z1.clone(),), _gaussian_score(mu, var), noise=lambda: None)[0]
    a = SCHEDULE.alpha(times[[0, -1]]).double()
    sd = torch.sqrt(a * a * var + SCHEDULE.sigma(times[[0, -1]]).double() ** 2)
    exact = a[1] * mu + (sd[1] / sd[0]) * (z1 - a[0] * mu)
    return float((out - exact).abs().max())


def test_dpm_solver_pp_2m_is_second_order_and_beats_ddim_on_the_exact_flow():
    errors = {s: _flow_error("dpmpp2m", s) for s in (10, 20, 40, 80)}
    # Second order: doubling the steps cuts the error about fourfold (first order: twofold).
    assert all(errors[s] / errors[2 * s] > 3.0 for s in (10, 20, 40)), errors
    ddim = _flow_error("ddim", 20)
    assert errors[20] < ddim / 5, (errors[20], ddim)


def test_the_sde_solver_at_first_order_is_the_ancestral_step():
    g = torch.Generator().manual_seed(0)
    z, score, noise = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    sampler = build_sampler("ancestral", SCHEDULE)
    sampler.set_timesteps(20)
    coef = sampler.coefficients(3)
    mean, std = ancestral_mean_std(z, score, coef)
    clean = (z + coef.sigma_t**2 * score) / coef.alpha_t
    got = dpm_solver_pp_step(z, clean, None, coef, 1.0, 1.0, noise)
    torch.testing.assert_close(got, mean + std * noise, rtol=1e-12, atol=1e-12)


def _moments(
    name: str, steps: int, mu: float, var: float, n: int = 200_000, **options
) -> tuple[float, float]:
    g = torch.Generator().manual_seed(1)
    sampler = build_sampler(name, SCHEDULE, options)
    sampler.set_timesteps(steps, 2.0)
    z = torch.randn(n, generator=g, dtype=torch.float64)
    draw = lambda: (torch.randn(n, generator=g, dtype=torch.float64),)  # noqa: E731
    out = sampler.run((z,), _gaussian_score(mu, var), draw)[0]
    return float(out.mean()), float(out.var())


def test_few_step_solvers_sample_the_data_distribution_closer_than_the_ancestral_sampler():
    """From N(0, 1) noise towards N(mu, var) with the exact score (sampling error of the
    variance 0.001): at 20 steps the ODE solver lands on var and the SDE solver (eta 1)
    nearer than the ancestral sampler, which under-disperses (measured: 0.236 for 0.3);
    at 100 steps the SDE solver with its default eta (2) is within 1 %, the ancestral
    sampler 5 % short."""
    mu, var = 0.7, 0.3
    gaps = {}
    for label, name, steps, options in [
        ("ancestral20", "ancestral", 20, {}),
        ("sde20", "dpmpp2m_sde", 20, {"eta": 1.0}),
        ("ode20", "dpmpp2m", 20, {}),
        ("ancestral100", "ancestral", 100, {}),
        ("sde100", "dpmpp2m_sde", 100, {}),
    ]:
        mean, v = _moments(name, steps, mu, var, **options)
        assert abs(mean - mu) < 0.005, (label, mean)
        gaps[label] = abs(v - var) / var
    assert gaps["ode20"] < 0.015, gaps
    assert gaps["sde20"] < gaps["ancestral20"] / 2, gaps
    assert gaps["sde100"] < 0.01 and gaps["ancestral100"] > 0.04, gaps

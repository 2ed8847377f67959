"""The guidance theory on Gaussian mixtures, checked against closed forms (docs/theory.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from molguide.toy import checks as toy
from molguide.toy import theory
from molguide.toy.mixture import GaussianMixture
from molguide.toy.vectors import default_mixture


@pytest.fixture(scope="module")
def gm() -> GaussianMixture:
    return default_mixture()


def test_scores_and_guidance_equal_autograd_of_the_closed_forms(gm):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(64, generator=gen, dtype=torch.float64)  # per-point noise levels
    sigma = (1 - alpha**2).sqrt()
    for y in (None, 0, 1):
        if y is None:
            target = gm.log_prob(x, alpha, sigma).sum()
            closed = gm.score(x.detach(), alpha, sigma)
        else:
            target = gm.class_log_posterior(x, alpha, sigma)[:, y].sum()
            closed = gm.guidance(x.detach(), alpha, sigma, y)
        auto = torch.autograd.grad(target, x)[0]
        assert torch.allclose(auto, closed, atol=1e-12), y


def test_log_prob_matches_scipy_and_classes_normalise(gm):
    from scipy.stats import multivariate_normal

    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = sum(
        w * multivariate_normal(m, c).pdf(x.numpy())
        for w, m, c in zip(gm.weights.numpy(), gm.means.numpy(), gm.covs.numpy())
    )
    assert np.allclose(gm.log_prob(x).exp().numpy(), ref, rtol=1e-12)
    assert torch.allclose(
        gm.class_log_posterior(x, 0.6, 0.8).exp().sum(-1), torch.ones(32, dtype=torch.float64)
    )


def test_tilted_mixture_is_r_times_p_normalised(gm):
    a = torch.tensor(toy.REWARD_DIRECTION, dtype=torch.float64)
    tilted = gm.tilted(a)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    log_ratio = tilted.log_prob(x) - gm.log_prob(x) - x @ a
    assert float(log_ratio.std()) < 1e-10  # p^r / (r p) is a constant: 1 / E_p[r]
    assert math.isclose(float(log_ratio[0]), -math.log(float(gm.expected_reward(a))), rel_tol=1e-10)


def test_exact_classifier_guidance_at_w1_samples_the_conditional(gm):
    res = toy.exact_classifier_guidance_check(gm, n=6000, steps=100, seed=3)
    for k in range(2):
        assert abs(res["mean_sampled"][k] - res["mean_exact"][k]) < 4 * res["mean_se"][k] + 0.01
        for j in range(2):
            # Var of a sample covariance entry is about (S_kk S_jj + S_kj^2) / n.
            c = res["cov_exact"]
            se = math.sqrt((c[k][k] * c[j][j] + c[k][j] ** 2) / 6000)
            assert abs(res["cov_sampled"][k][j] - c[k][j]) < 4 * se + 0.02
    se = math.hypot(res["class_fraction_se"], 0.001)
    assert abs(res["class_fraction_sampled"] - res["class_fraction_exact"]) < 4 * se + 0.005


def test_reward_guidance_at_w1_matches_the_tilted_distribution(gm):
    res = toy.reward_guidance_check(gm, weights=(0.0, 1.0, 2.0), n=6000, steps=100, seed=4)
    rows = {r["w"]: r for r in res["rows"]}
    assert abs(rows[1.0]["reward_mean"] - res["reward_exact_w1"]) < 3 * rows[1.0]["reward_se"]
    assert abs(rows[0.0]["reward_mean"] - res["reward_exact_w0"]) < 3 * rows[0.0]["reward_se"]
    assert rows[0.0]["reward_mean"] < rows[1.0]["reward_mean"] < rows[2.0]["reward_mean"]


def test_cfg_inverse_probability_is_one_over_prior_at_w0_and_falls_with_w(gm):
    weights = [0.0, 0.5, 1.0, 2.0, 4.0]
    exact = theory.inverse_probability_cfg(gm, toy.TARGET, weights)
    assert math.isclose(exact[0], 1 / float(gm.class_prior()[toy.TARGET]), rel_tol=1e-6)
    assert all(a > b for a, b in zip(exact, exact[1:]))
    assert exact[-1] >= 1.0


def test_guidance_error_follows_excess_cross_entropy(gm):
    res = toy.error_versus_excess_ce(gm, n=4000, seed=5)
    # Smooth perturbations: MSE ~ excess CE (slope 1), within the theory's sqrt bound (slope >= 1/2).
    assert 0.8 < res["slope"] < 1.2
    assert res["max_ratio"] < 30
    for t in toy.NOISE_TIMES:
        ratios = [r["ratio"] for r in res["rows"] if r["t"] == t and r["classifier"].startswith("shift")]
        assert ratios == sorted(ratios)  # better classifiers, smaller ratio: bounded as CE -> 0


def test_rough_classifier_is_caught_by_the_smoothness_diagnostic(gm):
    for row in toy.smoothness_check(gm, n=4000, seed=6):
        assert row["rough_excess_ce"] < 1e-4  # cross-entropy barely notices ...
        assert row["rough_guidance_mse"] > 0.5  # ... but the guidance vector is wrong
        assert row["rough_flagged"] and not row["exact_flagged"]


def test_networks_trained_by_molguide_recover_the_exact_scores_and_classifier(gm):
    nets = toy.train_toy_models(gm, n=20000, steps=1500, seed=0)
    rows = toy.trained_model_errors(gm, nets, n=3000)["rows"]
    for r in rows:
        # Relative MSE against the closed-form scores (measured: <= 0.04 and <= 0.07 at t = 0.1,
        # below 0.02 from t = 0.3 on) and the classifier's exact excess CE (measured <= 7e-4).
        assert r["score_rel_mse"] < 0.1, r
        assert r["reward_score_rel_mse"] < 0.15, r
        assert r["classifier_excess_ce"] < 0.005, r

"""The guidance theory as numbers: excess cross-entropy, guidance error, smoothness, E[1/p].

Exact on Gaussian mixtures (docs/theory.md):
- excess cross-entropy eps_t^2 = CE_t(p_hat) - CE_t(p) = E_{z ~ p_t} KL(p_t(.|z) || p_hat_t(.|z));
- guidance error MSE_t = E_{z ~ p_t(.|y)} |grad log p_hat_t(y|z) - grad log p_t(y|z)|^2;
- the theory bounds MSE_t by (a smoothness constant) x d x sqrt(eps_t^2); the fitted
  log-log slope of MSE against eps^2 and the ratio MSE / (d sqrt(eps^2)) make it visible;
- a classifier can have tiny excess CE and a wildly wrong gradient when it is not
  smooth: :func:`gradient_lipschitz` measures how fast its gradient changes and
  :func:`lipschitz_bound` gives what an exact noisy classifier can reach;
- under the CFG-tilted law p_w(x|c) ~ p(x|c) p(c|x)^w, E[1/p(c|x)] equals 1/p(c) at
  w = 0 and falls with w (:func:`inverse_probability_cfg`, exact by quadrature).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from molguide.toy.mixture import GaussianMixture

# log p_hat_t(. | z) as a function of (z, alpha, sigma) -> (N, C) log-probabilities
LogClassifier = Callable[[torch.Tensor, float, float], torch.Tensor]


def noised_samples(
    gm: GaussianMixture, n: int, alpha: float, sigma: float, generator: torch.Generator, y: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws of (z_t, y) from the noised mixture (optionally of class y only)."""
    source = gm.conditional(y) if y is not None else gm
    x0, labels = source.sample(n, generator)
    if y is not None:
        labels = torch.full_like(labels, y)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    return alpha * x0 + sigma * noise, labels


def excess_cross_entropy(
    gm: GaussianMixture, classifier: LogClassifier, alpha: float, sigma: float, z: torch.Tensor
) -> tuple[float, float]:
    """(excess CE, its standard error) on draws ``z`` from p_t: the mean KL of the posteriors."""
    with torch.no_grad():
        log_true = gm.class_log_posterior(z, alpha, sigma)
        log_hat = classifier(z, alpha, sigma)
    kl = (log_true.exp() * (log_true - log_hat)).sum(-1)
    return float(kl.mean()), float(kl.std() / len(kl) ** 0.5)


def classifier_gradient(classifier: LogClassifier, z: torch.Tensor, alpha: float, sigma: float, y: int):
    """grad_z log p_hat_t(y | z) by autograd, (N, d)."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        logp = classifier(z, alpha, sigma)[:, y].sum()
        return torch.autograd.grad(logp, z)[0]


def guidance_mse(
    gm: GaussianMixture, classifier: LogClassifier, alpha: float, sigma: float, y: int, z: torch.Tensor
) -> float:
    """Exact guidance error E |grad log p_hat(y|z) - grad log p(y|z)|^2 on draws z ~ p_t(.|y)."""
    err = classifier_gradient(classifier, z, alpha, sigma, y) - gm.guidance(z, alpha, sigma, y)
    return float((err**2).sum(-1).mean())


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log x (positive entries only)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def gradient_lipschitz(
    grad_fn: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    delta: float,
    generator: torch.Generator,
) -> float:
    """Smoothness diagnostic: median of |grad(z + delta u) - grad(z)| / delta over random unit u.

    A finite-difference estimate of the local Lipschitz constant of the guidance
    gradient (the operator norm of the Hessian of log p_hat along random directions).
    The median keeps a few wild points from dominating.
    """
    u = torch.randn(z.shape, generator=generator, dtype=z.dtype)
    u = u / u.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (z.dim() - 1)))
    diff = grad_fn(z + delta * u) - grad_fn(z)
    return float((diff.flatten(1).norm(dim=1) / delta).median())


def lipschitz_bound(alpha: float, sigma: float, spread: float) -> float:
    """Hessian bound of an exact noisy classifier: alpha^2 spread / sigma^4.

    grad^2 log p_t(y|z) = alpha^2 / sigma^4 (Cov[x0 | z, y] - Cov[x0 | z]); both
    posterior covariances are bounded by the data's spread (its largest squared
    radius), so a classifier whose gradient varies faster than this is not smooth
    in the sense the theory needs.
    """
    return alpha**2 * spread / sigma**4


def inverse_probability_cfg(
    gm: GaussianMixture, y: int, weights: list[float], lim: float = 9.0, points: int = 801
) -> list[float]:
    """E[1/p(y|x)] under p_w(x|y) ~ p(x|y) p(y|x)^w for each w, by quadrature on a 2-D grid.

    At w = 0 the value is exactly 1/p(y) (the integral of p(x)/p(y)). Plain Monte
    Carlo is badly heavy-tailed here; the grid is exact to the quadrature error.
    """
    if gm.dim != 2:
        raise ValueError("quadrature is implemented for 2-D mixtures")
    axis = torch.linspace(-lim, lim, points, dtype=gm.means.dtype)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    x = torch.stack([gx.flatten(), gy.flatten()], -1)
    log_cond = gm.conditional(y).log_prob(x)
    log_post = gm.class_log_posterior(x)[:, y]
    out = []
    for w in weights:
        log_tilted = log_cond + w * log_post
        num = torch.logsumexp(log_tilted - log_post, 0)
        den = torch.logsumexp(log_tilted, 0)
        out.append(float(torch.exp(num - den)))
    return out


def classifier_lipschitz(
    classifier: LogClassifier, z: torch.Tensor, alpha: float, sigma: float, y: int, delta: float,
    generator: torch.Generator,
) -> float:  # fmt: skip
    """:func:`gradient_lipschitz` of grad_z log p_hat_t(y | z) at one noise level."""
    return gradient_lipschitz(
        lambda zz: classifier_gradient(classifier, zz, alpha, sigma, y), z, delta, generator
    )

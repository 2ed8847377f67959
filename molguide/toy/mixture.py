"""Gaussian mixtures under the VP noising: exact classifiers, scores and guidance (docs/theory.md).

Component k, N(mu_k, Sigma_k) with weight pi_k, is at noise level (alpha, sigma)
N(alpha mu_k, C_k) with C_k = alpha^2 Sigma_k + sigma^2 I. Everything below follows:
- noisy posterior p_t(k | x) = softmax_k(log pi_k + log N(x; alpha mu_k, C_k));
- component score g_k = -C_k^{-1}(x - alpha mu_k); marginal score sum_k p_t(k|x) g_k;
- a class y is a group of components; grad log p_t(y | x) = s_t(x | y) - s_t(x);
- the reward r(x) = exp(<a, x>) tilts the mixture into another mixture with means
  mu_k + Sigma_k a and log-weights log pi_k + <a, mu_k> + a^T Sigma_k a / 2.

All computations are in the tensors' dtype (use float64 for exact checks). ``alpha``
and ``sigma`` are floats or per-point tensors of shape (N,).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Scalar = float | torch.Tensor


class GaussianMixture:
    """A Gaussian mixture in R^d whose components are grouped into classes.

    Args:
        means: (K, d); covs: (K, d, d) symmetric positive definite; weights: (K,) summing to 1.
        classes: (K,) class index of every component (default: each component its own class).
    """

    def __init__(
        self,
        means: torch.Tensor,
        covs: torch.Tensor,
        weights: torch.Tensor,
        classes: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        self.means = torch.as_tensor(means)
        self.covs = torch.as_tensor(covs, dtype=self.means.dtype)
        self.weights = torch.as_tensor(weights, dtype=self.means.dtype)
        k, d = self.means.shape
        if self.covs.shape != (k, d, d) or self.weights.shape != (k,):
            raise ValueError(
                f"shapes: means {tuple(self.means.shape)}, covs {tuple(self.covs.shape)}, "
                f"weights {tuple(self.weights.shape)}"
            )
        if not torch.allclose(self.weights.sum(), torch.ones((), dtype=self.weights.dtype)):
            raise ValueError("mixture weights must sum to 1")
        self.classes = torch.as_tensor(classes if classes is not None else range(k), dtype=torch.long)
        self.num_classes = int(self.classes.max()) + 1

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # ------------------------------------------------------------------ noised components
    def _noised(self, x: torch.Tensor, alpha: Scalar, sigma: Scalar):
        """Per point and component: (log pi_k + log N(x; alpha mu_k, C_k), g_k)."""
        d = x.shape[1]
        # A shared noise level gives one (1, K, d, d) covariance that broadcasts over points.
        a = torch.as_tensor(alpha, dtype=x.dtype).reshape(-1, 1, 1, 1)
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        eye = torch.eye(d, dtype=x.dtype)
        cov = a**2 * self.covs.unsqueeze(0) + s**2 * eye  # (1 or N, K, d, d)
        diff = x.unsqueeze(1) - a[..., 0] * self.means.unsqueeze(0)  # (N, K, d)
        # Precisions and log-determinants once per distinct covariance; einsum over points.
        chol = torch.linalg.cholesky(cov)
        precision = torch.cholesky_inverse(chol)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        g = -torch.einsum("nkij,nkj->nki", precision, diff)
        maha = -(diff * g).sum(-1)
        log_joint = torch.log(self.weights) - 0.5 * (maha + logdet + d * math.log(2 * math.pi))
        return log_joint, g

    def log_prob(self, x: torch.Tensor, alpha: Scalar = 1.0, sigma: Scalar = 0.0) -> torch.Tensor:
        """log p_t(x), (N,)."""
        log_joint, _ = self._noised(x, alpha, sigma)
        return torch.logsumexp(log_joint, -1)

    def component_posterior(self, x: torch.Tensor, alpha: Scalar = 1.0, sigma: Scalar = 0.0) -> torch.Tensor:
        """p_t(k | x), (N, K)."""
        log_joint, _ = self._noised(x, alpha, sigma)
        return torch.softmax(log_joint, -1)

    def class_log_posterior(self, x: torch.Tensor, alpha: Scalar = 1.0, sigma: Scalar = 0.0) -> torch.Tensor:
        """The exact noisy classifier log p_t(c | x), (N, C)."""
        log_joint, _ = self._noised(x, alpha, sigma)
        per_class = torch.stack(
            [torch.logsumexp(log_joint[:, self.classes == c], -1) for c in range(self.num_classes)], -1
        )
        return per_class - torch.logsumexp(log_joint, -1, keepdim=True)

    def score(self, x: torch.Tensor, alpha: Scalar = 1.0, sigma: Scalar = 0.0, y: int | None = None):
        """grad_x log p_t(x) (``y`` None) or grad_x log p_t(x | y), (N, d)."""
        log_joint, g = self._noised(x, alpha, sigma)
        return self._posterior_average(log_joint, g, y)

    def _posterior_average(self, log_joint: torch.Tensor, g: torch.Tensor, y: int | None) -> torch.Tensor:
        if y is not None:
            log_joint = log_joint.masked_fill(self.classes.unsqueeze(0) != y, -math.inf)
        return (torch.softmax(log_joint, -1).unsqueeze(-1) * g).sum(1)

    def score_and_guidance(
        self, x: torch.Tensor, alpha: Scalar, sigma: Scalar, y: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad log p_t(x), grad log p_t(y | x)) from one evaluation of the components."""
        log_joint, g = self._noised(x, alpha, sigma)
        score = self._posterior_average(log_joint, g, None)
        return score, self._posterior_average(log_joint, g, y) - score

    def guidance(self, x: torch.Tensor, alpha: Scalar, sigma: Scalar, y: int) -> torch.Tensor:
        """The exact classifier-guidance vector grad_x log p_t(y | x), (N, d)."""
        return self.score_and_guidance(x, alpha, sigma, y)[1]

    # ------------------------------------------------------------------ sampling, conditioning
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples and their class labels."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        chol = torch.linalg.cholesky(self.covs)
        x = self.means[comp] + (chol[comp] @ noise.unsqueeze(-1)).squeeze(-1)
        return x, self.classes[comp]

    def class_prior(self) -> torch.Tensor:
        """p(c), (C,)."""
        return torch.zeros(self.num_classes, dtype=self.weights.dtype).index_add_(
            0, self.classes, self.weights
        )

    def conditional(self, y: int) -> GaussianMixture:
        """The mixture p(x | y) (the components of class y, renormalised)."""
        keep = self.classes == y
        w = self.weights[keep]
        return GaussianMixture(self.means[keep], self.covs[keep], w / w.sum())

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact mean (d,) and covariance (d, d)."""
        mean = (self.weights.unsqueeze(-1) * self.means).sum(0)
        centred = self.means - mean
        second = self.covs + centred.unsqueeze(-1) * centred.unsqueeze(-2)
        return mean, (self.weights.view(-1, 1, 1) * second).sum(0)

    # ------------------------------------------------------------------ reward tilting
    def tilted(self, a: torch.Tensor) -> GaussianMixture:
        """p^r proportional to exp(<a, x>) p(x): again a mixture (classes kept)."""
        a = torch.as_tensor(a, dtype=self.means.dtype)
        shift = self.covs @ a
        log_w = torch.log(self.weights) + self.means @ a + 0.5 * (shift @ a)
        return GaussianMixture(self.means + shift, self.covs, torch.softmax(log_w, 0), self.classes)

    def expected_reward(self, a: torch.Tensor) -> torch.Tensor:
        """E_p[exp(<a, x>)] in closed form."""
        a = torch.as_tensor(a, dtype=self.means.dtype)
        return (self.weights * torch.exp(self.means @ a + 0.5 * ((self.covs @ a) @ a))).sum()

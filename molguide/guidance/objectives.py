"""Training objectives of the property networks, for :class:`molguide.training.trainer.Trainer`.

- :class:`NoisyClassifierObjective`: cross-entropy of p_hat_t(y | z_t) on molecules
  noised by the same VP process as the score model, t uniform on the grid; an
  optional smoothness penalty lambda * E[sigma_t^2 |grad_z log p_hat_t(y|z_t)|^2]
  (sigma_t^2 makes the penalty comparable across noise levels, since exact noisy
  classifier gradients grow like 1/sigma_t).
- :class:`RegressionObjective`: L1 error of the clean-molecule evaluator on a
  standardised property (EDM's property networks use L1 as well).
- :class:`NoisyGaussianObjective`: negative log-likelihood of N(mu_t(z_t), s_t(z_t)^2)
  for the standardised property of noised molecules: the noise-level regressor of
  density and energy guidance (a cross-entropy of a continuous label).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from molguide.data.graphs import fully_connected_edges
from molguide.diffusion.process import VPDiffusion
from molguide.guidance.terms import clamp_log_scale, gaussian_log_probability


class NoisyClassifierObjective:
    """Cross-entropy on noised molecules; batches carry ``label`` (B,) class indices."""

    def __init__(self, diffusion: VPDiffusion, grad_penalty: float = 0.0) -> None:
        if grad_penalty < 0:
            raise ValueError(f"grad_penalty must be >= 0, got {grad_penalty}")
        self.diffusion, self.grad_penalty = diffusion, grad_penalty

    def __call__(self, model: torch.nn.Module, batch: dict, generator: torch.Generator):
        b, num_graphs = batch["batch"], int(batch["num_graphs"])
        t = self.diffusion.sample_times(num_graphs, generator).to(b.device)
        noised = self.diffusion.noise(batch["pos"], batch["onehot"], b, t, generator)
        zx, zh = noised.zx, noised.zh
        if self.grad_penalty:
            zx, zh = zx.requires_grad_(True), zh.requires_grad_(True)
        logits = model(zx, zh, t, b, num_graphs, fully_connected_edges(b))
        labels = batch["label"].long()
        loss = F.cross_entropy(logits, labels)
        extras = {"accuracy": float((logits.argmax(-1) == labels).float().mean())}
        if self.grad_penalty:
            logp = torch.log_softmax(logits, -1).gather(1, labels.unsqueeze(1)).sum()
            gx, gh = torch.autograd.grad(logp, (zx, zh), create_graph=True)
            sq = gx.pow(2).sum(-1) + gh.pow(2).sum(-1)
            per_mol = torch.zeros(num_graphs, dtype=sq.dtype, device=sq.device).index_add_(0, b, sq)
            sigma2 = self.diffusion.schedule.sigma(t).to(sq.dtype) ** 2
            penalty = (sigma2 * per_mol).mean()
            loss = loss + self.grad_penalty * penalty
            extras["grad_penalty"] = float(penalty.detach())
        return loss, extras


class RegressionObjective:
    """L1 error on a standardised property; batches carry ``target`` (B,)."""

    def __init__(self, onehot_scale: float) -> None:
        self.onehot_scale = onehot_scale

    def __call__(self, model: torch.nn.Module, batch: dict, generator: torch.Generator):
        b, num_graphs = batch["batch"], int(batch["num_graphs"])
        pred = model(batch["pos"], batch["onehot"] * self.onehot_scale, None, b, num_graphs).squeeze(-1)
        return F.l1_loss(pred, batch["target"].to(pred.dtype))


class NoisyGaussianObjective:
    """Gaussian negative log-likelihood on noised molecules; batches carry ``target`` (B,),
    the standardised property. The network's two outputs are mu and log s."""

    def __init__(self, diffusion: VPDiffusion) -> None:
        self.diffusion = diffusion

    def __call__(self, model: torch.nn.Module, batch: dict, generator: torch.Generator):
        b, num_graphs = batch["batch"], int(batch["num_graphs"])
        t = self.diffusion.sample_times(num_graphs, generator).to(b.device)
        noised = self.diffusion.noise(batch["pos"], batch["onehot"], b, t, generator)
        out = model(noised.zx, noised.zh, t, b, num_graphs, fully_connected_edges(b))
        y = batch["target"].to(out.dtype)
        mu, log_s = out[:, 0], clamp_log_scale(out[:, 1])
        loss = -gaussian_log_probability(y, mu, log_s).mean()
        mae, mean_log_s = (mu - y).detach().abs().mean(), log_s.detach().mean()
        return loss, {"mae": float(mae), "mean_log_s": float(mean_log_s)}

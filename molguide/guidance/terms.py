"""Guidance terms for the molecule sampler (docs/guidance.md).

Every term maps a :class:`~molguide.diffusion.sampling.GuidanceState` to a vector
shaped like z_t = (x, h), with its position part centred per molecule; it has a
weight w and a time window [t_min, t_max] outside which it is off. Terms add.

- :class:`ClassifierGuidance`: w * grad_z log p_hat_t(y | z_t);
- :class:`ClassifierFreeGuidance`: turns the base score s(z) (the conditional
  network with the null label) into s(z|c) + w (s(z|c) - s(z));
- :class:`RewardGuidance`: w * (s^r_t(z) - s_t(z)) with s^r the reward-reweighted model;
- :class:`RegressorGuidance`: towards a value c from a noise-level regressor,
  w * grad log N(c; mu_t(z), s_t(z)^2) (density) or w * -grad (mu_t(z) - c)^2 / 2 (energy,
  EEGSDE's);
- :class:`DenoisedEstimateGuidance`: training-free guidance (TFG) on the score network's
  clean estimate x0_hat, w J_t grad_{x0} -(f(x0_hat) - c)^2 / 2 (J_t: a Gaussian model's
  d x0_hat / d z_t).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch

from molguide.data.geometry import remove_mean
from molguide.diffusion.process import VPDiffusion, network_setting
from molguide.diffusion.sampling import GuidanceState


@dataclass
class TimeWindow:
    """Guidance is on for t in [t_min, t_max] (t = 1 is pure noise, t = 0 data)."""

    t_min: float = 0.0
    t_max: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.t_min <= self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min <= t_max <= 1, got [{self.t_min}, {self.t_max}]")

    def factor(self, t: torch.Tensor) -> torch.Tensor:
        return ((t >= self.t_min) & (t <= self.t_max)).to(torch.float64)


class _WeightedTerm:
    def __init__(self, weight: float, window: TimeWindow | None) -> None:
        self.weight = float(weight)
        self.window = window or TimeWindow()

    def _scale(self, state: GuidanceState) -> torch.Tensor | None:
        """Per-node weight (N, 1), or None when the term is off for the whole batch."""
        per_mol = self.weight * self.window.factor(state.t)
        if not bool((per_mol != 0).any()):
            return None
        return per_mol.to(state.zx.dtype)[state.batch].unsqueeze(-1)


class ClassifierGuidance(_WeightedTerm):
    """w * grad_z log p_hat_t(y | z_t) from a noise-level classifier.

    Args:
        classifier: a :class:`~molguide.models.predictor.MoleculePredictor` with time input.
        target_class: the class y to steer towards: one int for every molecule, a
            (B,) integer tensor with one class per molecule of the sampled batch (EDM's
            conditional protocol, where each molecule has its own target), or a (K,)
            boolean mask of the classes that meet the goal (the term then follows
            grad log sum_{k in mask} p_hat_t(k | z_t), :mod:`molguide.guidance.goals`).
    """

    def __init__(
        self,
        classifier: torch.nn.Module,
        target_class: int | torch.Tensor,
        weight: float = 1.0,
        window: TimeWindow | None = None,
    ) -> None:
        super().__init__(weight, window)
        self.classifier = classifier
        self.target_class = _class_or_classes(target_class)

    def __call__(self, state: GuidanceState) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self._scale(state)
        if scale is None:
            return torch.zeros_like(state.zx), torch.zeros_like(state.zh)
        gx, gh = classifier_log_prob_gradient(self.classifier, state, self.target_class)
        return scale * gx, scale * gh

    def for_samples(self, start: int, end: int) -> ClassifierGuidance:
        """This term for samples [start, end) of a call (per-sample classes are cut to them)."""
        if not isinstance(self.target_class, torch.Tensor) or self.target_class.dtype == torch.bool:
            return self
        return ClassifierGuidance(self.classifier, self.target_class[start:end], self.weight, self.window)


def _class_or_classes(target_class: int | torch.Tensor) -> int | torch.Tensor:
    """An int stays an int; a tensor of classes becomes a flat int64 tensor; a boolean
    mask of classes stays a mask (it must accept a class)."""
    if isinstance(target_class, torch.Tensor):
        if target_class.dtype == torch.bool:
            if target_class.dim() != 1 or not bool(target_class.any()):
                raise ValueError(f"target_class: a class mask is one non-empty (K,) mask, got {target_class}")
            return target_class
        if target_class.dim() == 0:
            return int(target_class)
        if target_class.dim() != 1 or target_class.dtype.is_floating_point:
            raise ValueError(f"target_class: expected an int or a (B,) integer tensor, got {target_class}")
        return target_class.long()
    return int(target_class)


def classifier_log_prob_gradient(
    classifier: torch.nn.Module, state: GuidanceState, target_class: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_h) of log p_hat_t(y | z_t), the position part centred.

    ``target_class`` is one class for every molecule, a (B,) tensor of per-molecule
    classes, or a (K,) boolean mask: then y is "any class of the mask" and the
    log-probability is log sum_{k in mask} p_hat_t(k | z_t).
    Each molecule's log-probability depends on its own atoms only, so the
    gradient of the summed log-probabilities is every molecule's own gradient.
    """
    zx = state.zx.detach().requires_grad_(True)
    zh = state.zh.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = classifier(zx, zh, state.t, state.batch, state.num_graphs, state.edge_index)
        logp_all = torch.log_softmax(logits, -1)
        if isinstance(target_class, torch.Tensor) and target_class.dtype == torch.bool:
            if len(target_class) != logp_all.shape[-1]:
                n_classes = logp_all.shape[-1]
                raise ValueError(f"a mask of {len(target_class)} classes for a {n_classes}-class classifier")
            logp = torch.logsumexp(logp_all[:, target_class.to(logits.device)], dim=-1).sum()
        elif isinstance(target_class, torch.Tensor):
            if len(target_class) != state.num_graphs:
                raise ValueError(
                    f"{len(target_class)} target classes for a batch of {state.num_graphs} molecules"
                )
            index = target_class.to(logits.device).long().unsqueeze(-1)
            logp = logp_all.gather(1, index).sum()
        else:
            logp = logp_all[:, target_class].sum()
        gx, gh = torch.autograd.grad(logp, (zx, zh))
    return remove_mean(gx, state.batch, state.num_graphs), gh


class ClassifierFreeGuidance(_WeightedTerm):
    """CFG: with the base score s(z) = s(z | null), adds (1 + w)(s(z|c) - s(z)).

    The sampler's base model must be the same conditional network called with the
    null (all-zero) context, so the total is s(z|c) + w (s(z|c) - s(z)): w = 0 is
    plain conditional sampling, w > 0 sharpens towards c.

    Args:
        model: the conditional score network (``context_dim`` = number of classes).
        context: (context_dim,) the label's one-hot for every molecule, or (B, context_dim)
            one label per molecule of the sampled batch.
        diffusion: the diffusion the model was trained with (its scores come from
            :meth:`~molguide.diffusion.process.VPDiffusion.denoise`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        context: torch.Tensor,
        diffusion: VPDiffusion,
        weight: float = 1.0,
        window: TimeWindow | None = None,
    ) -> None:
        super().__init__(weight, window)
        self.model, self.context, self.diffusion = model, context, _checked_diffusion(diffusion)

    def __call__(self, state: GuidanceState) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self._scale(state)
        if scale is None:
            return torch.zeros_like(state.zx), torch.zeros_like(state.zh)
        ctx = self.context.to(state.zx)
        if ctx.dim() == 2 and len(ctx) != state.num_graphs:
            raise ValueError(f"{len(ctx)} CFG labels for a batch of {state.num_graphs} molecules")
        ctx = ctx.expand(state.num_graphs, -1)
        with torch.no_grad():
            d = self.diffusion.denoise(
                self.model, state.zx, state.zh, state.t, state.batch, state.edge_index, ctx, state.self_cond,
                fixed=_flags_for(self.model, state),
            )  # fmt: skip
        sx, sh = d.score_x, d.score_h
        gamma = 1.0 + scale  # (1 + w) on the molecules where the term is on
        on = scale != 0
        gx = torch.where(on, gamma * (sx - state.score_x), torch.zeros_like(sx))
        gh = torch.where(on, gamma * (sh - state.score_h), torch.zeros_like(sh))
        return gx, gh

    def for_samples(self, start: int, end: int) -> ClassifierFreeGuidance:
        """This term for samples [start, end) of a call (one label per sample: cut to them)."""
        if self.context.dim() != 2:
            return self
        return ClassifierFreeGuidance(
            self.model, self.context[start:end], self.diffusion, self.weight, self.window
        )


class RewardGuidance(_WeightedTerm):
    """w * (s^r_t(z) - s_t(z)): s^r from a score network trained on reward-weighted data.

    At w = 1 the sampler targets p^r(x) ~ r(x) p(x) (exactly, with exact scores). A
    :class:`~molguide.models.residual.ResidualScoreNetwork` whose frozen base is the
    sampler's own network runs its correction only: the base's output at the step is
    taken from the sampler (the same numbers, one small network instead of a second
    generator).
    """

    def __init__(
        self,
        reward_model: torch.nn.Module,
        diffusion: VPDiffusion,
        weight: float = 1.0,
        window: TimeWindow | None = None,
    ) -> None:
        super().__init__(weight, window)
        self.reward_model, self.diffusion = reward_model, _checked_diffusion(diffusion)
        # sampler network -> (fingerprint of its weights, whether it is the base): compared
        # again when the network's weights change in place (a load_state_dict, more training)
        self._shares_base: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __call__(self, state: GuidanceState) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self._scale(state)
        if scale is None:
            return torch.zeros_like(state.zx), torch.zeros_like(state.zh)
        with torch.no_grad():
            d = self.diffusion.denoise(
                self.reward_model,
                state.zx,
                state.zh,
                state.t,
                state.batch,
                state.edge_index,
                self_cond=state.self_cond,
                fixed=_flags_for(self.reward_model, state),
                base_output=self._base_output(state),
            )
        return scale * (d.score_x - state.score_x), scale * (d.score_h - state.score_h)

    def _base_output(self, state: GuidanceState) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The sampler's output at this step when it is the residual reward network's base, else None."""
        has_base = getattr(self.reward_model, "has_base", None)
        if has_base is None or state.model is None or state.denoised is None:
            return None
        fingerprint = _weights_fingerprint(state.model) + _weights_fingerprint(self.reward_model)
        known = self._shares_base.get(state.model)
        if known is None or known[0] != fingerprint:
            known = (fingerprint, bool(has_base(state.model)))
            self._shares_base[state.model] = known
        if not known[1]:
            return None
        d = state.denoised
        if self.reward_model.parameterisation == "x0":
            return d.x0_x, d.logits
        return d.eps_x, d.eps_h


def _flags_for(network: torch.nn.Module, state: GuidanceState) -> torch.Tensor | None:
    """The kept-atom flags for a term's own network, where it was trained with fixed atoms
    (a conditional or reward network fine-tuned from such a generator)."""
    return state.fixed if network_setting(network, "fixed_atoms", False) else None


def _weights_fingerprint(model: torch.nn.Module) -> tuple:
    """Where a network's weights live and how often they were written in place (cheap)."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def _checked_diffusion(diffusion: VPDiffusion) -> VPDiffusion:
    if not isinstance(diffusion, VPDiffusion):  # e.g. a schedule's sigma function (the old argument)
        raise TypeError(
            f"expected the VPDiffusion the network was trained with, got {type(diffusion).__name__}"
        )
    return diffusion


class RegressorGuidance(_WeightedTerm):
    """Guidance towards a property value from a noise-level regressor (docs/guidance.md).

    The regressor predicts, in standardised units, a Gaussian N(mu_t(z), s_t(z)^2) of the
    property given z_t. Two terms read it:

    - ``mode="density"``: w * grad_z log p_t(c | z_t), with p_t the Gaussian: the
      log-likelihood of the value c, or with a ``tolerance`` the log-probability that the
      property lies within c +- tolerance. The network is trained by negative log-likelihood,
      a cross-entropy, so the guidance-error theory of classifiers applies to it.
    - ``mode="energy"``: w * -grad_z (mu_t(z_t) - c)^2 / 2, EEGSDE's energy guidance (the
      squared error of the regressor's mean; its spread is not used).

    Args:
        regressor: an invariant predictor with time input and two outputs (mu, log s).
        values: c in standardised units: one float for every molecule or a (B,) tensor,
            one per molecule of the sampled call (EDM's protocol).
        tolerance: half-width of the accepted interval in standardised units (density only).
    """

    def __init__(
        self,
        regressor: torch.nn.Module,
        values: float | torch.Tensor,
        mode: str = "density",
        tolerance: float | None = None,
        weight: float = 1.0,
        window: TimeWindow | None = None,
    ) -> None:
        super().__init__(weight, window)
        if mode not in ("density", "energy"):
            raise ValueError(f"mode must be 'density' or 'energy', got {mode!r}")
        if tolerance is not None and not tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance}")
        self.regressor, self.mode, self.tolerance = regressor, mode, tolerance
        self.values = values.double().flatten() if isinstance(values, torch.Tensor) else float(values)

    def __call__(self, state: GuidanceState) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self._scale(state)
        if scale is None:
            return torch.zeros_like(state.zx), torch.zeros_like(state.zh)
        zx = state.zx.detach().requires_grad_(True)
        zh = state.zh.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self.regressor(zx, zh, state.t, state.batch, state.num_graphs, state.edge_index)
            mu, log_s = out[:, 0], out[:, 1]
            c = torch.as_tensor(self.values, dtype=mu.dtype, device=mu.device)
            if c.dim() == 1 and len(c) != state.num_graphs:
                raise ValueError(f"{len(c)} target values for a batch of {state.num_graphs} molecules")
            if self.mode == "energy":
                objective = -0.5 * (mu - c) ** 2
            else:
                objective = gaussian_log_probability(c, mu, clamp_log_scale(log_s), self.tolerance)
            gx, gh = torch.autograd.grad(objective.sum(), (zx, zh))
        return scale * remove_mean(gx, state.batch, state.num_graphs), scale * gh

    def for_samples(self, start: int, end: int) -> RegressorGuidance:
        """This term for samples [start, end) of a call (per-sample values are cut to them)."""
        if not isinstance(self.values, torch.Tensor):
            return self
        return RegressorGuidance(
            self.regressor, self.values[start:end], self.mode, self.tolerance, self.weight, self.window
        )


LOG_SCALE_RANGE = (-7.0, 5.0)  # the regressor's log s is clamped here (training and guidance alike)


def clamp_log_scale(log_s: torch.Tensor) -> torch.Tensor:
    """The regressor's log standard deviation, kept where the likelihood stays finite."""
    return log_s.clamp(*LOG_SCALE_RANGE)


def gaussian_log_probability(
    c: torch.Tensor, mu: torch.Tensor, log_s: torch.Tensor, tolerance: float | None = None
) -> torch.Tensor:
    """log N(c; mu, s^2), or with a tolerance log P(|y - c| <= tolerance) for y ~ N(mu, s^2).

    The interval's probability Phi(b) - Phi(a) is computed on the side of the Gaussian where
    it does not cancel (both ends far in the upper tail become both ends in the lower tail).
    """
    s = log_s.exp()
    if tolerance is None:
        return -0.5 * ((c - mu) / s) ** 2 - log_s - 0.5 * math.log(2 * math.pi)
    a, b = (c - tolerance - mu) / s, (c + tolerance - mu) / s
    upper = (a + b) > 0  # the interval lies mostly above the mean: mirror it
    a, b = torch.where(upper, -b, a), torch.where(upper, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp((log_a - log_b).clamp(max=-1e-12)))


class DenoisedEstimateGuidance(_WeightedTerm):
    """Training-free guidance on the clean estimate (TFG, DPS): towards a value c by a
    predictor of the clean molecule applied to the score network's estimate x0_hat.

    w * J_t * grad_{x0} -(f(x0_hat) - c)^2 / 2, with f the noise-level regressor read at
    t = 0 (a clean-molecule predictor: it was trained down to t = 0) and c in its
    standardised units. The denoiser's Jacobian d x0_hat / d z_t is replaced by that of a
    Gaussian data model, J_t = alpha_t v / (alpha_t^2 v + sigma_t^2), v the spread of each
    molecule's own clean estimate (1 / alpha_t at low noise; plain 1 / alpha_t would
    overshoot by orders of magnitude at high noise), so no gradient flows through the score
    network: the cost is one predictor pass per step, not a second generator.

    Args:
        regressor: the noise-level regressor (two outputs: mu, log s; only mu is read).
        values: c in standardised units: a float or one per molecule of the call.
        diffusion: the score network's diffusion (its alpha_t).
    """

    def __init__(
        self,
        regressor: torch.nn.Module,
        values: float | torch.Tensor,
        diffusion: VPDiffusion,
        weight: float = 1.0,
        window: TimeWindow | None = None,
    ) -> None:
        super().__init__(weight, window)
        self.regressor, self.diffusion = regressor, _checked_diffusion(diffusion)
        self.values = values.double().flatten() if isinstance(values, torch.Tensor) else float(values)

    def __call__(self, state: GuidanceState) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self._scale(state)
        if scale is None:
            return torch.zeros_like(state.zx), torch.zeros_like(state.zh)
        if state.denoised is None:
            raise ValueError(
                "training-free guidance needs the score network's clean estimate (state.denoised)"
            )
        x0x = state.denoised.x0_x.detach().to(state.zx.dtype).requires_grad_(True)
        x0h = state.denoised.x0_h.detach().to(state.zh.dtype).requires_grad_(True)
        t_clean = torch.zeros_like(state.t)  # the regressor was trained down to t = 0: a clean predictor
        with torch.enable_grad():
            mu = self.regressor(x0x, x0h, t_clean, state.batch, state.num_graphs, state.edge_index)[:, 0]
            c = torch.as_tensor(self.values, dtype=mu.dtype, device=mu.device)
            if c.dim() == 1 and len(c) != state.num_graphs:
                raise ValueError(f"{len(c)} target values for a batch of {state.num_graphs} molecules")
            gx, gh = torch.autograd.grad((-0.5 * (mu - c) ** 2).sum(), (x0x, x0h))
        jx, jh = self._jacobian_factors(state, x0x.detach(), x0h.detach())
        gx = remove_mean(gx, state.batch, state.num_graphs)
        return scale * jx * gx, scale * jh * gh

    def _jacobian_factors(self, state: GuidanceState, x0x: torch.Tensor, x0h: torch.Tensor):
        """d x0_hat / d z_t of a Gaussian data model, alpha v / (alpha^2 v + sigma^2) per node,
        with v the spread of each molecule's own clean estimate (positions per axis, types per
        channel): 1 / alpha_t at low noise, small where x0_hat has collapsed to the mean."""
        b, n = state.batch, state.num_graphs
        alpha = self.diffusion.schedule.alpha(state.t).to(x0x.dtype)
        sigma = self.diffusion.schedule.sigma(state.t).to(x0x.dtype)
        counts = torch.zeros(n, dtype=x0x.dtype, device=x0x.device).index_add_(
            0, b, torch.ones_like(b, dtype=x0x.dtype)
        )
        centred = remove_mean(x0x, b, n)
        vx = (
            torch.zeros(n, dtype=x0x.dtype, device=x0x.device).index_add_(0, b, centred.pow(2).mean(-1))
            / counts
        )
        mean_h = (
            torch.zeros(n, x0h.shape[1], dtype=x0h.dtype, device=x0h.device).index_add_(0, b, x0h)
            / counts[:, None]
        )
        vh = (
            torch.zeros(n, dtype=x0h.dtype, device=x0h.device).index_add_(
                0, b, (x0h - mean_h[b]).pow(2).mean(-1)
            )
            / counts
        )

        def factor(v: torch.Tensor) -> torch.Tensor:
            return (alpha * v / (alpha**2 * v + sigma**2))[b].unsqueeze(-1)

        return factor(vx), factor(vh)

    def for_samples(self, start: int, end: int) -> DenoisedEstimateGuidance:
        """This term for samples [start, end) of a call (per-sample values are cut to them)."""
        if not isinstance(self.values, torch.Tensor):
            return self
        return DenoisedEstimateGuidance(
            self.regressor, self.values[start:end], self.diffusion, self.weight, self.window
        )

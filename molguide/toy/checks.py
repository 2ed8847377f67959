"""The guidance theory checked on a Gaussian mixture (docs/theory.md).

Everything here has an exact answer, so every number is a check: samplers with exact
scores hit the closed forms, networks trained by molguide's own training loop recover
the exact scores and classifier, the guidance error follows the excess cross-entropy,
a rough classifier is caught by the smoothness diagnostic, CFG lowers E[1/p(c|x)], and
reward guidance raises E[r]. The functions return plain dicts; the ``toy`` pipeline
(:mod:`molguide.runs.toy`) runs them all and the tests call them directly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from molguide.diffusion.schedule import NoiseSchedule
from molguide.toy import theory
from molguide.toy.mixture import GaussianMixture
from molguide.toy.vectors import (
    VectorClassifierObjective,
    VectorDenoisingObjective,
    VectorMLP,
    eps_model_score,
    sample_vectors,
)
from molguide.training.trainer import TensorBatches, TrainConfig, Trainer

TARGET = 1  # the minority class of the default mixture, p(y = 1) = 0.2
REWARD_DIRECTION = (0.5, 0.25)
NOISE_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)


def _coefficients(schedule: NoiseSchedule, t: float) -> tuple[float, float]:
    tt = torch.tensor([t], dtype=torch.float64)
    return float(schedule.alpha(tt)), float(schedule.sigma(tt))


def _exact_guided_score(gm: GaussianMixture, y: int, w: float):
    def fn(z, t, alpha, sigma):
        score, guide = gm.score_and_guidance(z, alpha, sigma, y)
        return score + w * guide

    return fn


def exact_classifier_guidance_check(
    gm: GaussianMixture, n: int = 10000, steps: int = 250, seed: int = 0
) -> dict:
    """Classifier guidance at w = 1 with the exact classifier must sample p(x | y)."""
    schedule = NoiseSchedule()
    x = sample_vectors(
        _exact_guided_score(gm, TARGET, 1.0),
        schedule,
        n,
        gm.dim,
        steps,
        generator=torch.Generator().manual_seed(seed),
    )
    cond = gm.conditional(TARGET)
    mean, cov = cond.moments()
    ref, _ = cond.sample(200000, torch.Generator().manual_seed(seed + 1))
    p_sampled = gm.class_log_posterior(x)[:, TARGET].exp()
    p_ref = gm.class_log_posterior(ref)[:, TARGET].exp()
    return {
        "mean_sampled": x.mean(0).tolist(),
        "mean_exact": mean.tolist(),
        "mean_se": (x.std(0) / math.sqrt(n)).tolist(),
        "cov_sampled": torch.cov(x.T).tolist(),
        "cov_exact": cov.tolist(),
        "class_fraction_sampled": float(p_sampled.mean()),
        "class_fraction_exact": float(p_ref.mean()),
        "class_fraction_se": float(p_sampled.std() / math.sqrt(n)),
    }


def reward_guidance_check(
    gm: GaussianMixture,
    weights: tuple[float, ...] = (0.0, 1.0, 2.0),
    n: int = 10000,
    steps: int = 200,
    seed: int = 0,
) -> dict:
    """Reward guidance s + w (s^r - s) with exact scores; at w = 1 E[r] must equal E_{p^r}[r]."""
    a = torch.tensor(REWARD_DIRECTION, dtype=gm.means.dtype)
    tilted = gm.tilted(a)
    schedule = NoiseSchedule()
    rows = []
    for w in weights:

        def fn(z, t, alpha, sigma, w=w):
            s = gm.score(z, alpha, sigma)
            return s + w * (tilted.score(z, alpha, sigma) - s)

        x = sample_vectors(fn, schedule, n, gm.dim, steps, generator=torch.Generator().manual_seed(seed))
        r = torch.exp(x @ a)
        rows.append({"w": w, "reward_mean": float(r.mean()), "reward_se": float(r.std() / math.sqrt(n))})
    base = rows[0]["reward_mean"] if weights[0] == 0 else float(gm.expected_reward(a))
    for row in rows:
        row["reward_improvement"] = row["reward_mean"] - base
    exact_tilted = float(gm.expected_reward(2 * a) / gm.expected_reward(a))  # E_{p^r}[r] = E[r^2] / E[r]
    return {"rows": rows, "reward_exact_w1": exact_tilted, "reward_exact_w0": float(gm.expected_reward(a))}


def cfg_inverse_probability(
    gm: GaussianMixture,
    weights: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0),
    n: int = 4000,
    steps: int = 100,
    seed: int = 0,
) -> dict:
    """E[1/p(c|x)]: exact for the CFG-tilted law by quadrature, and measured on CFG samples."""
    exact = theory.inverse_probability_cfg(gm, TARGET, list(weights))
    schedule = NoiseSchedule()
    measured = []
    for w in weights:

        def fn(z, t, alpha, sigma, w=w):
            s = gm.score(z, alpha, sigma)
            s_c = gm.score(z, alpha, sigma, TARGET)
            return s_c + w * (s_c - s)

        x = sample_vectors(fn, schedule, n, gm.dim, steps, generator=torch.Generator().manual_seed(seed))
        inv = 1.0 / gm.class_log_posterior(x)[:, TARGET].exp().clamp_min(1e-12)
        measured.append({"w": w, "inv_prob_mean": float(inv.mean()), "inv_prob_median": float(inv.median())})
    return {
        "weights": list(weights),
        "inv_prob_exact": exact,
        "samples": measured,
        "inv_prior": float(1 / gm.class_prior()[TARGET]),
    }


def _perturbed_classifier(gm: GaussianMixture, delta: float, direction: torch.Tensor):
    shifted = GaussianMixture(gm.means + delta * direction, gm.covs, gm.weights, gm.classes)
    return lambda z, alpha, sigma: shifted.class_log_posterior(z, alpha, sigma)


def error_versus_excess_ce(
    gm: GaussianMixture,
    deltas: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0),
    n: int = 8000,
    seed: int = 0,
    extra_classifiers: dict | None = None,
) -> dict:
    """Guidance MSE against excess CE over classifiers of different quality, at several noise levels.

    The family: exact classifiers of mixtures whose means are shifted by delta (plus
    any ``extra_classifiers``, e.g. trained ones). Returns per-point rows, the
    fitted log-log slope and the largest ratio MSE / (d sqrt(excess CE)).
    """
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(gm.means.shape, generator=gen, dtype=gm.means.dtype)
    schedule = NoiseSchedule()
    rows = []
    classifiers = {f"shift{d:g}": _perturbed_classifier(gm, d, direction) for d in deltas}
    classifiers.update(extra_classifiers or {})
    for t in NOISE_TIMES:
        alpha, sigma = _coefficients(schedule, t)
        z, _ = theory.noised_samples(gm, n, alpha, sigma, gen)
        for name, clf in classifiers.items():
            excess, excess_se = theory.excess_cross_entropy(gm, clf, alpha, sigma, z)
            mse = theory.guidance_mse(gm, clf, alpha, sigma, TARGET, z)
            lip = theory.classifier_lipschitz(clf, z[:2000], alpha, sigma, TARGET, 0.01, gen)
            rows.append(
                {
                    "t": t,
                    "classifier": name,
                    "excess_ce": excess,
                    "excess_ce_se": excess_se,
                    "guidance_mse_exact": mse,
                    "ratio": mse / (gm.dim * math.sqrt(max(excess, 1e-300))),
                    "grad_lipschitz": lip,
                    "guidance_mse_est": gm.dim * lip * math.sqrt(max(excess, 0.0)),
                }
            )
    family = [r for r in rows if r["classifier"].startswith("shift")]
    return {
        "rows": rows,
        "slope": theory.loglog_slope(
            np.array([r["excess_ce"] for r in family]), np.array([r["guidance_mse_exact"] for r in family])
        ),
        "max_ratio": max(r["ratio"] for r in family),
    }


def smoothness_check(
    gm: GaussianMixture,
    eps: float = 0.01,
    omega: float = 200.0,
    n: int = 8000,
    seed: int = 0,
    times: tuple[float, ...] = (0.5, 0.8),
) -> list[dict]:
    """A high-frequency perturbation eps sin(omega <v, z>) of the exact classifier's logit.

    Its excess CE is tiny, its guidance error large; the smoothness diagnostic
    (gradient Lipschitz estimate against the exact-classifier bound) must flag it
    and pass the exact classifier.
    """
    gen = torch.Generator().manual_seed(seed)
    v = torch.tensor([0.6, 0.8], dtype=gm.means.dtype)

    def rough(z, alpha, sigma):
        logits = gm.class_log_posterior(z, alpha, sigma).clone()
        logits[:, TARGET] = logits[:, TARGET] + eps * torch.sin(omega * (z @ v))
        return torch.log_softmax(logits, -1)

    def exact(z, alpha, sigma):
        return gm.class_log_posterior(z, alpha, sigma)

    spread = float((gm.sample(n, gen)[0] - gm.moments()[0]).pow(2).sum(-1).quantile(0.99))
    schedule = NoiseSchedule()
    out = []
    for t in times:
        alpha, sigma = _coefficients(schedule, t)
        z, _ = theory.noised_samples(gm, n, alpha, sigma, gen)
        bound = theory.lipschitz_bound(alpha, sigma, spread)
        row = {"t": t, "lipschitz_bound": bound}
        for name, clf in (("exact", exact), ("rough", rough)):
            lip = theory.classifier_lipschitz(clf, z[:4000], alpha, sigma, TARGET, 1e-3, gen)
            row[f"{name}_excess_ce"] = theory.excess_cross_entropy(gm, clf, alpha, sigma, z)[0]
            row[f"{name}_guidance_mse"] = theory.guidance_mse(gm, clf, alpha, sigma, TARGET, z)
            row[f"{name}_grad_lipschitz"] = lip
            row[f"{name}_flagged"] = lip > bound
        out.append(row)
    return out


def train_toy_models(gm: GaussianMixture, n: int = 20000, steps: int = 1500, seed: int = 0) -> dict:
    """Score, classifier and reward-reweighted score MLPs trained by molguide's Trainer on the mixture."""
    schedule = NoiseSchedule()
    gen = torch.Generator().manual_seed(seed)
    x, y = gm.sample(n, gen)
    x, a = x.float(), torch.tensor(REWARD_DIRECTION)
    r = torch.exp(x @ a)
    cfg = TrainConfig(steps=steps, batch_size=512, lr=2e-3, ema_decay=0.99, seed=seed, log_every=steps)
    torch.manual_seed(seed)
    nets = {
        "score": VectorMLP(gm.dim, gm.dim),
        "classifier": VectorMLP(gm.dim, gm.num_classes),
        "reward_score": VectorMLP(gm.dim, gm.dim),
    }
    jobs = {
        "score": (VectorDenoisingObjective(schedule), TensorBatches(x=x)),
        "classifier": (VectorClassifierObjective(schedule), TensorBatches(x=x, y=y)),
        "reward_score": (VectorDenoisingObjective(schedule), TensorBatches(x=x, weight=r / r.mean())),
    }
    for name, (objective, data) in jobs.items():
        trainer = Trainer(nets[name], objective, data, cfg)
        trainer.train()
        nets[name].load_state_dict(trainer.averaged_weights())
        nets[name].eval()
    return nets


def trained_model_errors(gm: GaussianMixture, nets: dict, n: int = 5000, seed: int = 0) -> dict:
    """MSE of the trained score / reweighted score against the exact ones (relative to their size),
    and the trained classifier's excess CE, per noise level."""
    schedule = NoiseSchedule()
    gen = torch.Generator().manual_seed(seed)
    tilted = gm.tilted(torch.tensor(REWARD_DIRECTION, dtype=gm.means.dtype))
    rows = []
    for t in NOISE_TIMES:
        alpha, sigma = _coefficients(schedule, t)
        z, _ = theory.noised_samples(gm, n, alpha, sigma, gen)
        zr, _ = theory.noised_samples(tilted, n, alpha, sigma, gen)
        with torch.no_grad():
            s_hat = eps_model_score(nets["score"])(z.float(), t, alpha, sigma).double()
            sr_hat = eps_model_score(nets["reward_score"])(zr.float(), t, alpha, sigma).double()
        s, sr = gm.score(z, alpha, sigma), tilted.score(zr, alpha, sigma)
        clf = mlp_classifier(nets["classifier"])
        with torch.no_grad():  # held-out CE on (z, y) drawn from the noised joint
            y = gm.class_log_posterior(z, alpha, sigma).exp().multinomial(1, generator=gen)
            ce = float(-clf(z, alpha, sigma).gather(1, y).mean())
        rows.append(
            {
                "t": t,
                "score_mse": float(((s_hat - s) ** 2).sum(-1).mean()),
                "score_rel_mse": float(((s_hat - s) ** 2).sum(-1).mean() / (s**2).sum(-1).mean()),
                "reward_score_rel_mse": float(((sr_hat - sr) ** 2).sum(-1).mean() / (sr**2).sum(-1).mean()),
                "classifier_excess_ce": theory.excess_cross_entropy(gm, clf, alpha, sigma, z)[0],
                "classifier_ce": ce,
                "classifier_guidance_mse": theory.guidance_mse(gm, clf, alpha, sigma, TARGET, z),
            }
        )
    return {"rows": rows}


def mlp_classifier(net):
    """A trained classifier MLP as a LogClassifier; its time input is recovered from alpha."""
    alpha_grid = NoiseSchedule().alpha2.sqrt()

    def clf(z, alpha, sigma):
        t = float(torch.argmin((alpha_grid - alpha).abs())) / (len(alpha_grid) - 1)
        tt = torch.full((len(z),), t, dtype=torch.float32)
        return torch.log_softmax(net(z.float(), tt).double(), -1)

    return clf

"""Per-noise-level diagnostics of a guidance classifier on held-out molecules.

For each of ``n_bins`` equal-width bins of t, held-out molecules are noised at times
drawn in the bin, and we measure:
- ``classifier_ce``, ``classifier_accuracy``, ``classifier_ece`` (top-label calibration
  error, 10 confidence bins);
- ``grad_lipschitz``: how fast the guidance gradient changes (finite differences
  along random directions), beside ``lipschitz_bound`` = alpha^2 R^2 / sigma^4, what
  an exact noisy classifier can reach (R^2: the largest squared radius of the data);
- ``guidance_mse_est``: the estimated squared error of the guidance vector, either
  (a) ``cfg``: E |grad log p_hat(y|z) - (s(z|y) - s(z))|^2 against a conditional
  score model, or (b) ``bound``: d * L * sqrt(CE_t), the theory's bound with the
  measured smoothness L and the cross-entropy as an upper bound of the excess
  (labels are functions of the clean molecule, so H(y | z_0) = 0 and the true noisy
  classifier's CE is unknown but >= 0). ``guidance_mse_kind`` says which.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from molguide.data.elements import atom_types_of
from molguide.data.geometry import remove_mean
from molguide.data.graphs import collate_molecules, fully_connected_edges
from molguide.data.molecules import MoleculeSet
from molguide.diffusion.process import VPDiffusion
from molguide.diffusion.sampling import GuidanceState
from molguide.guidance.terms import classifier_log_prob_gradient


@dataclass
class NoiseLevelRow:
    """Diagnostics of one noise-level bin."""

    bin: int
    t_low: float
    t_high: float
    classifier_ce: float
    classifier_accuracy: float
    classifier_ece: float
    grad_lipschitz: float
    lipschitz_bound: float
    guidance_mse_est: float
    guidance_mse_bound: float
    guidance_mse_cfg: float
    guidance_mse_kind: str
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: sum over confidence bins of |accuracy - confidence| weighted by bin mass."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def data_spread(molecules: MoleculeSet, onehot_scale: float) -> float:
    """Largest squared radius of a clean molecule in z-space (centred positions + scaled one-hots)."""
    if len(molecules) == 0:
        return 0.0
    batch = torch.as_tensor(np.repeat(np.arange(len(molecules)), molecules.num_atoms))
    x = remove_mean(torch.as_tensor(molecules.positions).double(), batch)
    sq = (x**2).sum(-1) + onehot_scale**2
    return float(torch.zeros(len(molecules), dtype=sq.dtype).index_add_(0, batch, sq).max())


def noise_level_diagnostics(
    classifier: torch.nn.Module,
    diffusion: VPDiffusion,
    molecules: MoleculeSet,
    labels: np.ndarray,
    target_class: int,
    n_bins: int = 10,
    batch_size: int = 256,
    seed: int = 0,
    cfg_model: torch.nn.Module | None = None,
    num_classes: int | None = None,
    lipschitz_molecules: int = 64,
    progress: bool = False,
) -> list[NoiseLevelRow]:
    """Diagnostics per noise-level bin on held-out ``molecules`` with class ``labels``.

    ``cfg_model`` (a conditional score network with context = class one-hot, zeros =
    no label) enables the CFG-based guidance error estimate.
    """
    from tqdm.auto import tqdm

    labels = np.asarray(labels)
    if len(labels) != len(molecules):
        raise ValueError(f"{len(labels)} labels for {len(molecules)} molecules")
    classifier.eval()
    device = next(classifier.parameters()).device  # batches go where the classifier is
    spread = data_spread(molecules, diffusion.onehot_scale)
    types = atom_types_of(classifier.config)
    rows = []
    for b in tqdm(range(n_bins), desc="noise-level diagnostics", disable=not progress):
        gen = torch.Generator().manual_seed(seed * 1000 + b)
        lo, hi = b / n_bins, (b + 1) / n_bins
        probs, ys, mse_cfg, lips, dims = [], [], [], [], []
        for start in range(0, len(molecules), batch_size):
            idx = np.arange(start, min(start + batch_size, len(molecules)))
            batch = {k: v.to(device) for k, v in collate_molecules(molecules, idx, types).items()}
            bvec, ng = batch["batch"], int(batch["num_graphs"])
            t = (lo + (hi - lo) * torch.rand(ng, generator=gen, dtype=torch.float64)).clamp(1e-3, 1.0)
            t = t.to(device)
            noised = diffusion.noise(batch["pos"], batch["onehot"], bvec, t, gen)
            edges = fully_connected_edges(bvec)
            with torch.no_grad():
                logits = classifier(noised.zx, noised.zh, t, bvec, ng, edges)
            probs.append(torch.softmax(logits.double(), -1).cpu().numpy())
            ys.append(labels[idx])
            counts = torch.bincount(bvec, minlength=ng).double()
            dims.append(((3 + noised.zh.shape[1]) * counts - 3).cpu().numpy())
            state = GuidanceState(noised.zx, noised.zh, t, bvec, ng, edges, noised.zx, noised.zh)
            if cfg_model is not None:
                mse_cfg.append(
                    _cfg_disagreement(
                        classifier, cfg_model, diffusion, state, target_class, num_classes or logits.shape[1]
                    )
                )
            if start < lipschitz_molecules:
                lips.append(_lipschitz(classifier, state, target_class, gen))
        p, y = np.concatenate(probs), np.concatenate(ys)
        ce = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
        t_mid = torch.tensor([(lo + hi) / 2], dtype=torch.float64)
        alpha, sigma = float(diffusion.schedule.alpha(t_mid)), float(diffusion.schedule.sigma(t_mid))
        lip = float(np.median(np.concatenate(lips)))
        bound = float(np.concatenate(dims).mean()) * lip * math.sqrt(max(ce, 0.0))
        cfg = float(np.concatenate(mse_cfg).mean()) if mse_cfg else float("nan")
        rows.append(
            NoiseLevelRow(
                bin=b,
                t_low=lo,
                t_high=hi,
                classifier_ce=ce,
                classifier_accuracy=float((p.argmax(1) == y).mean()),
                classifier_ece=expected_calibration_error(p, y),
                grad_lipschitz=lip,
                lipschitz_bound=alpha**2 * spread / sigma**4,
                guidance_mse_est=cfg if mse_cfg else bound,
                guidance_mse_bound=bound,
                guidance_mse_cfg=cfg,
                guidance_mse_kind="cfg" if mse_cfg else "bound",
                n=len(y),
            )
        )
    return rows


def _cfg_disagreement(classifier, cfg_model, diffusion, state, target_class, num_classes) -> np.ndarray:
    """Per molecule |grad log p_hat(y|z) - (s(z|y) - s(z))|^2 (the CFG-implied guidance)."""
    gx, gh = classifier_log_prob_gradient(classifier, state, target_class)
    onehot = F.one_hot(torch.tensor(target_class), num_classes).to(state.zx.device, state.zx.dtype)
    null = torch.zeros(state.num_graphs, num_classes, dtype=state.zx.dtype, device=state.zx.device)
    with torch.no_grad():
        cond, uncond = (
            diffusion.denoise(cfg_model, state.zx, state.zh, state.t, state.batch, state.edge_index, label)
            for label in (onehot.expand(state.num_graphs, -1), null)
        )
    dx, dh = cond.score_x - uncond.score_x, cond.score_h - uncond.score_h
    sq = ((gx - dx) ** 2).sum(-1) + ((gh - dh) ** 2).sum(-1)
    per_mol = torch.zeros(state.num_graphs, dtype=sq.dtype, device=sq.device)
    return per_mol.index_add_(0, state.batch, sq.detach()).cpu().numpy()


def _lipschitz(classifier, state: GuidanceState, target_class: int, gen: torch.Generator) -> np.ndarray:
    """Per molecule |grad(z + delta u) - grad(z)| / delta, u a random unit direction, delta = 0.01."""
    device = state.zx.device  # drawn on the CPU generator, used where the state lives
    ux = torch.randn(state.zx.shape, generator=gen, dtype=state.zx.dtype).to(device)
    ux = remove_mean(ux, state.batch)
    uh = torch.randn(state.zh.shape, generator=gen, dtype=state.zh.dtype).to(device)
    sq = (ux**2).sum(-1) + (uh**2).sum(-1)
    norm = torch.zeros(state.num_graphs, dtype=sq.dtype, device=device).index_add_(0, state.batch, sq).sqrt()
    delta = 1e-2
    ux, uh = ux / norm[state.batch].unsqueeze(-1), uh / norm[state.batch].unsqueeze(-1)
    g0 = classifier_log_prob_gradient(classifier, state, target_class)
    moved = GuidanceState(
        state.zx + delta * ux,
        state.zh + delta * uh,
        state.t,
        state.batch,
        state.num_graphs,
        state.edge_index,
        state.score_x,
        state.score_h,
    )
    g1 = classifier_log_prob_gradient(classifier, moved, target_class)
    sq = ((g1[0] - g0[0]) ** 2).sum(-1) + ((g1[1] - g0[1]) ** 2).sum(-1)
    per_mol = torch.zeros(state.num_graphs, dtype=sq.dtype, device=device)
    per_mol.index_add_(0, state.batch, sq.detach())
    return (per_mol.sqrt() / delta).cpu().numpy()


def log_noise_levels(rows: list) -> list[dict]:
    """Per-bin diagnostics (NoiseLevelRow objects or their stored dicts) with step = bin."""
    import mlflow

    from molguide.runs.tracking import log_metrics_batch

    rows = [r.as_dict() if hasattr(r, "as_dict") else r for r in rows]
    keys = (
        "classifier_ce",
        "classifier_accuracy",
        "classifier_ece",
        "guidance_mse_est",
        "guidance_mse_bound",
        "grad_lipschitz",
        "lipschitz_bound",
    )
    log_metrics_batch(
        [(k, d[k], d["bin"]) for d in rows for k in keys if d[k] is not None and math.isfinite(d[k])]
    )
    if rows:
        mlflow.set_tag("molguide.guidance_mse_kind", rows[0]["guidance_mse_kind"])
        mlflow.set_tag("molguide.noise_bins", " ".join(f"{d['t_low']:.2f}" for d in rows))
    return rows

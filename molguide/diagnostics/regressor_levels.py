"""Per-noise-level diagnostics of a noise-level regressor on held-out molecules.

For each of ``n_bins`` equal-width bins of t, held-out molecules are noised at times drawn
in the bin and the regressor's Gaussian N(mu_t(z), s_t(z)^2) is judged against the true
property: ``regressor_nll`` (the negative log-likelihood per molecule, in nats of the
standardised property: the cross-entropy that bounds density guidance's error, as the
classifier's does), ``regressor_mae`` (of its mean, in the property's unit) and
``regressor_coverage`` (the fraction of true values within mu +- s, 0.68 when calibrated).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from molguide.data.elements import atom_types_of
from molguide.data.graphs import collate_molecules, fully_connected_edges
from molguide.data.molecules import MoleculeSet
from molguide.diffusion.process import VPDiffusion
from molguide.guidance.terms import clamp_log_scale, gaussian_log_probability


@dataclass
class RegressorLevelRow:
    """Diagnostics of one noise-level bin."""

    bin: int
    t_low: float
    t_high: float
    regressor_nll: float
    regressor_mae: float
    regressor_coverage: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def regressor_noise_levels(
    regressor: torch.nn.Module,
    diffusion: VPDiffusion,
    molecules: MoleculeSet,
    values: np.ndarray,
    mean: float,
    std: float,
    n_bins: int = 10,
    batch_size: int = 256,
    seed: int = 0,
) -> list[RegressorLevelRow]:
    """Diagnostics per noise-level bin on held-out ``molecules`` with property ``values``
    (in the property's unit; ``mean`` and ``std`` are the regressor's scaling)."""
    values = np.asarray(values, dtype=float)
    if len(values) != len(molecules):
        raise ValueError(f"{len(values)} values for {len(molecules)} molecules")
    regressor.eval()
    device = next(regressor.parameters()).device
    types = atom_types_of(regressor.config)
    rows = []
    for b in range(n_bins):
        gen = torch.Generator().manual_seed(seed * 1000 + b)
        lo, hi = b / n_bins, (b + 1) / n_bins
        nll, err, inside = [], [], []
        for start in range(0, len(molecules), batch_size):
            idx = np.arange(start, min(start + batch_size, len(molecules)))
            batch = {k: v.to(device) for k, v in collate_molecules(molecules, idx, types).items()}
            bvec, ng = batch["batch"], int(batch["num_graphs"])
            t = (lo + (hi - lo) * torch.rand(ng, generator=gen, dtype=torch.float64)).clamp(1e-3, 1.0)
            noised = diffusion.noise(batch["pos"], batch["onehot"], bvec, t.to(device), gen)
            out = regressor(noised.zx, noised.zh, t.to(device), bvec, ng, fully_connected_edges(bvec))
            y = torch.as_tensor((values[idx] - mean) / std, dtype=out.dtype, device=out.device)
            mu, log_s = out[:, 0], clamp_log_scale(out[:, 1])
            nll.append(-gaussian_log_probability(y, mu, log_s).cpu().numpy())
            err.append(((mu - y).abs() * std).cpu().numpy())
            inside.append(((mu - y).abs() <= log_s.exp()).cpu().numpy())
        rows.append(
            RegressorLevelRow(
                b,
                lo,
                hi,
                float(np.concatenate(nll).mean()),
                float(np.concatenate(err).mean()),
                float(np.concatenate(inside).mean()),
                len(molecules),
            )
        )
    return rows

"""Centre-of-mass-free geometry on batches of molecules (positions in the zero-mean subspace)."""

from __future__ import annotations

import torch
from torch_geometric.utils import scatter


def remove_mean(x: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None) -> torch.Tensor:
    """Subtract each molecule's mean position (unweighted, as EDM does) from its nodes."""
    mean = scatter(x, batch, dim=0, dim_size=num_graphs, reduce="mean")
    return x - mean[batch]


def centered_gaussian(
    num_nodes: int,
    batch: torch.Tensor,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Standard Gaussian noise on positions, projected to zero centre of mass per molecule."""
    # Draw on the generator's device (CPU generators keep runs reproducible across devices).
    source = generator.device if generator is not None else device
    eps = torch.randn(num_nodes, 3, generator=generator, dtype=dtype, device=source).to(device)
    return remove_mean(eps, batch)


def max_abs_mean(x: torch.Tensor, batch: torch.Tensor) -> float:
    """Largest absolute per-molecule mean coordinate (a check that x is centred)."""
    return float(scatter(x, batch, dim=0, reduce="mean").abs().max())


def kabsch_align(
    source: torch.Tensor, target: torch.Tensor, batch: torch.Tensor, num_graphs: int
) -> torch.Tensor:
    """``source`` rotated, molecule by molecule, onto ``target`` (both centred per molecule).

    The proper rotation R minimising sum_i |R s_i - t_i|^2 (Kabsch): with the
    covariance H = sum_i s_i t_i^T = U S V^T, R = V diag(1, 1, det(V U^T)) U^T.
    """
    cov = scatter(source.unsqueeze(-1) * target.unsqueeze(-2), batch, dim=0, dim_size=num_graphs)
    u, _, vh = torch.linalg.svd(cov.double())
    v = vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(v @ u.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rot = (v @ fix @ u.transpose(-1, -2)).to(source.dtype)  # (B, 3, 3)
    return torch.einsum("nij,nj->ni", rot[batch], source)

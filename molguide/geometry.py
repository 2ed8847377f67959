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

"""Helpers shared by the equivariance tests of the backbones."""

import torch


def random_orthogonal(det_sign: float, generator: torch.Generator) -> torch.Tensor:
    """A random 3x3 orthogonal matrix (float64) with determinant ``det_sign`` (+1 or -1)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) * det_sign < 0:
        q[:, 0] = -q[:, 0]
    return q


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| (Frobenius), detached."""
    return float(((a - b).norm() / b.norm().clamp_min(1e-30)).detach())

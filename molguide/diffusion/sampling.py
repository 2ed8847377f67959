"""Samplers: ancestral (any number of steps) and deterministic DDIM, with a guidance hook.

Both walk a grid t_S = 1 > ... > t_0 = 0 and use the score
s_t(z) = -eps_hat(z, t) / sigma_t plus the sum of the guidance terms. Guidance adds
to the score only (scaled by the step's own sigma_{t|s}^2 factor) and leaves the
noise alone. A molecule whose coordinates turn non-finite or explode is frozen,
counted and reported; the rest of the batch goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch_geometric.utils import scatter

from molguide.data.graphs import fully_connected_edges
from molguide.data.molecules import Molecule
from molguide.diffusion.process import VPDiffusion
from molguide.elements import QM9_ATOMIC_NUMBERS
from molguide.geometry import centered_gaussian, remove_mean

EXPLODED_ANGSTROM = 100.0  # no QM9-like molecule spans this; beyond it the sample is lost


class GuidanceTerm(Protocol):
    """A term added to the score: maps (z_x, z_h, t, batch, num_graphs) to (g_x, g_h).

    g_x must have zero centre of mass per molecule; the term carries its own weight
    and time schedule. Issue 4's classifier, CFG and reward terms implement this.
    """

    def __call__(
        self, zx: torch.Tensor, zh: torch.Tensor, t: torch.Tensor, batch: torch.Tensor, num_graphs: int
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class SampleResult:
    """Generated molecules and the ones that failed, with reasons (by sample index)."""

    molecules: list[Molecule]
    failures: dict[int, str] = field(default_factory=dict)
    steps: int = 0
    method: str = ""

    @property
    def num_requested(self) -> int:
        return len(self.molecules) + len(self.failures)


def time_grid(steps: int, schedule_steps: int) -> torch.Tensor:
    """S + 1 decreasing times from 1 to 0 that fall on the schedule's integer grid."""
    if not 1 <= steps <= schedule_steps:
        raise ValueError(f"steps must be in [1, {schedule_steps}], got {steps}")
    ints = torch.round(torch.linspace(schedule_steps, 0, steps + 1, dtype=torch.float64))
    return ints / schedule_steps


def _score(model, diffusion, zx, zh, t, batch, num_graphs, edges, context, guidance):
    eps_x, eps_h = model(zx, zh, t, batch, edges, context)
    sigma = diffusion.schedule.sigma(t).to(zx.dtype)[batch].unsqueeze(-1)
    sx, sh = -eps_x / sigma, -eps_h / sigma
    for term in guidance:
        with torch.enable_grad():  # classifier terms differentiate through their network
            gx, gh = term(zx, zh, t, batch, num_graphs)
        sx, sh = sx + gx.detach(), sh + gh.detach()
    return sx, sh


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    diffusion: VPDiffusion,
    node_counts: torch.Tensor | Sequence[int],
    steps: int = 1000,
    method: str = "ancestral",
    guidance: Sequence[GuidanceTerm] = (),
    context: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    atom_types: Sequence[int] = QM9_ATOMIC_NUMBERS,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> SampleResult:
    """Generate one molecule per entry of ``node_counts``.

    Args:
        method: "ancestral" (stochastic, EDM's sampler) or "ddim" (deterministic
            probability-flow discretisation, good at 50-100 steps).
        guidance: terms whose outputs add to the score (empty: the plain sampler).
        generator: seeds the initial noise and the ancestral noise (CPU generator).
    """
    from tqdm.auto import tqdm

    if method not in ("ancestral", "ddim"):
        raise ValueError(f"unknown sampler {method!r}; choose 'ancestral' or 'ddim'")
    counts = torch.as_tensor(node_counts, dtype=torch.long)
    num_graphs, k = len(counts), len(atom_types)
    batch = torch.repeat_interleave(torch.arange(num_graphs), counts).to(device)
    edges = fully_connected_edges(batch)
    dtype = next(model.parameters()).dtype
    n = int(counts.sum())
    zx = centered_gaussian(n, batch, generator, dtype, device)
    zh = torch.randn(n, k, generator=generator, dtype=dtype).to(device)
    alive = torch.ones(num_graphs, dtype=torch.bool, device=device)
    failures: dict[int, str] = {}
    grid = time_grid(steps, diffusion.schedule.steps)
    sched = diffusion.schedule

    for idx in tqdm(range(steps), desc=f"sample ({method})", unit="step", disable=not progress):
        t = torch.full((num_graphs,), float(grid[idx]), dtype=torch.float64, device=device)
        s = torch.full_like(t, float(grid[idx + 1]))
        sx, sh = _score(model, diffusion, zx, zh, t, batch, num_graphs, edges, context, guidance)
        a_t, a_s = sched.alpha(t[:1]).item(), sched.alpha(s[:1]).item()
        sg_t, sg_s = sched.sigma(t[:1]).item(), sched.sigma(s[:1]).item()
        if method == "ddim":
            eps_x, eps_h = -sg_t * sx, -sg_t * sh
            zx = a_s * (zx - sg_t * eps_x) / a_t + sg_s * eps_x
            zh = a_s * (zh - sg_t * eps_h) / a_t + sg_s * eps_h
        else:
            a_ts = a_t / a_s
            var_ts = sg_t**2 - a_ts**2 * sg_s**2
            zx = (zx + var_ts * sx) / a_ts
            zh = (zh + var_ts * sh) / a_ts
            if idx < steps - 1:  # the last step lands on t = 0: take its mean
                std = (var_ts * sg_s**2 / sg_t**2) ** 0.5
                zx = zx + std * centered_gaussian(n, batch, generator, dtype, device)
                zh = zh + std * torch.randn(n, k, generator=generator, dtype=dtype).to(device)
        zx = remove_mean(zx, batch, num_graphs)
        zx, zh = _freeze_failures(zx, zh, batch, num_graphs, alive, failures, idx)

    # Decode at t = 0: positions from the predicted clean sample, types by argmax.
    t0 = torch.zeros(num_graphs, dtype=torch.float64, device=device)
    eps_x, _ = model(zx, zh, t0, batch, edges, context)
    a0, sg0 = sched.alpha(t0[:1]).item(), sched.sigma(t0[:1]).item()
    x = remove_mean((zx - sg0 * eps_x) / a0, batch, num_graphs)
    x, zh = _freeze_failures(x, zh, batch, num_graphs, alive, failures, steps)
    types = torch.as_tensor(list(atom_types))[zh.argmax(-1).cpu()]
    molecules = []
    offsets = torch.cumsum(counts, 0) - counts
    for m in range(num_graphs):
        if m in failures:
            continue
        a, b = int(offsets[m]), int(offsets[m] + counts[m])
        molecules.append(Molecule(types[a:b].numpy(), x[a:b].double().cpu().numpy(), name=f"sample_{m}"))
    return SampleResult(molecules, failures, steps, method)


def _freeze_failures(zx, zh, batch, num_graphs, alive, failures, step):
    """Mark molecules with non-finite or exploded coordinates as failed and zero them out."""
    bad_x = (~torch.isfinite(zx)).any(-1) | (zx.abs() > EXPLODED_ANGSTROM).any(-1)
    bad_h = (~torch.isfinite(zh)).any(-1)
    bad_mol = scatter((bad_x | bad_h).float(), batch, dim=0, dim_size=num_graphs, reduce="max") > 0
    newly = bad_mol & alive
    if newly.any():
        for m in torch.nonzero(newly).flatten().tolist():
            failures[m] = f"coordinates became non-finite or exceeded {EXPLODED_ANGSTROM:g} A at step {step}"
        alive &= ~newly
        dead_nodes = ~alive[batch]
        zx = torch.where(dead_nodes.unsqueeze(-1), torch.zeros_like(zx), zx)
        zh = torch.where(dead_nodes.unsqueeze(-1), torch.zeros_like(zh), zh)
    return zx, zh

"""The sampling loop: one batch of molecules from a score network under a sampler.

:func:`sample` walks the sampler's time grid (:mod:`molguide.diffusion.samplers`:
ancestral, DDIM, or any registered one) with the score
s_t(z) = -eps_hat(z, t) / sigma_t = (alpha_t x0_hat - z) / sigma_t^2 of the network
(eps or x0 parameterised) plus the sum of the guidance terms. A self-conditioned
network gets its own previous estimate of the clean molecule at every step. Guidance adds
to the score only (scaled by the step's own sigma_{t|s}^2 factor) and leaves the
noise alone. A molecule whose coordinates turn non-finite or explode is frozen,
counted and reported; the rest of the batch goes on.

Batching, seeds, molecule sizes and guidance per sample are the business of
:class:`molguide.diffusion.pipeline.MoleculeDiffusionPipeline`, which every caller uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch_geometric.utils import scatter

from molguide.data.elements import QM9_ATOMIC_NUMBERS
from molguide.data.geometry import centered_gaussian, remove_mean
from molguide.data.graphs import fully_connected_edges
from molguide.data.molecules import Molecule
from molguide.diffusion.editing import EditProjection, MoleculeEdit
from molguide.diffusion.process import Denoised, VPDiffusion, network_setting
from molguide.diffusion.samplers import build_sampler

EXPLODED_ANGSTROM = 100.0  # no QM9-like molecule spans this; beyond it the sample is lost


@dataclass
class GuidanceState:
    """What a guidance term sees at one step: the noisy batch and the unguided score.

    ``score_x``/``score_h`` is the base model's score (before any term), so terms that
    need s_t(z) (CFG, reward) do not run the base model again. ``self_cond`` is the
    previous clean-molecule estimate the base model was given (None at the first
    step or without self-conditioning); self-conditioned term networks get it too.
    ``model`` and ``denoised`` are the base network and its full estimate at this step,
    so a term built on the same network (a residual reward network) need not run it again.
    """

    zx: torch.Tensor
    zh: torch.Tensor
    t: torch.Tensor  # (B,) float64
    batch: torch.Tensor
    num_graphs: int
    edge_index: torch.Tensor
    score_x: torch.Tensor
    score_h: torch.Tensor
    self_cond: tuple[torch.Tensor, torch.Tensor] | None = None
    model: torch.nn.Module | None = None
    denoised: Denoised | None = None
    fixed: torch.Tensor | None = None  # kept atoms a network trained with fixed atoms is told about


class GuidanceTerm(Protocol):
    """A term added to the score: maps a :class:`GuidanceState` to (g_x, g_h).

    g_x must have zero centre of mass per molecule; the term carries its own weight
    and time schedule. Terms add; the classifier, CFG and reward terms of
    :mod:`molguide.guidance.terms` implement this. A term with one target per sample
    also has ``for_samples(start, end)``, returning itself cut to those samples, so
    the pipeline can hand each batch its part.
    """

    def __call__(self, state: GuidanceState) -> tuple[torch.Tensor, torch.Tensor]: ...


def for_samples(term: GuidanceTerm, start: int, end: int) -> GuidanceTerm:
    """``term`` for samples [start, end) of a call: cut when it has per-sample targets, else itself."""
    select = getattr(term, "for_samples", None)
    return select(start, end) if select is not None else term


@dataclass
class SampleResult:
    """Generated molecules, their sample indices, and the samples that failed, with reasons.

    ``indices[k]`` is the sample number of ``molecules[k]`` (its name is ``sample_<index>``);
    ``failures`` maps the numbers of lost samples to why they were lost; ``atom_counts``
    holds the size of every requested sample, lost ones included. Sample numbers
    run over everything one call requested, so guided and unguided calls with one seed
    pair up by number.
    """

    molecules: list[Molecule]
    failures: dict[int, str] = field(default_factory=dict)
    steps: int = 0
    method: str = ""
    grid_power: float = 1.0
    indices: list[int] = field(default_factory=list)
    seconds: float = 0.0
    atom_counts: list[int] = field(default_factory=list)  # of every requested sample, lost ones too

    def __post_init__(self) -> None:
        if not self.indices:  # a result built by hand: molecules numbered in order
            self.indices = list(range(len(self.molecules)))
        if len(self.indices) != len(self.molecules):
            raise ValueError(f"{len(self.indices)} sample indices for {len(self.molecules)} molecules")

    @property
    def num_requested(self) -> int:
        return len(self.molecules) + len(self.failures)

    def by_index(self) -> list[Molecule | None]:
        """One entry per requested sample, in sample order: the molecule, or None where it was lost."""
        out: list[Molecule | None] = [None] * self.num_requested
        for index, molecule in zip(self.indices, self.molecules):
            out[index] = molecule
        return out


def _score(model, diffusion, zx, zh, t, batch, num_graphs, edges, context, guidance, self_cond, fixed=None):
    """(guided score_x, guided score_h, the base model's Denoised); ``fixed``: the kept atoms
    a network trained to keep atoms is told about."""
    denoised = diffusion.denoise(model, zx, zh, t, batch, edges, context, self_cond, fixed=fixed)
    sx, sh = denoised.score_x, denoised.score_h
    if not guidance:
        return sx, sh, denoised
    state = GuidanceState(zx, zh, t, batch, num_graphs, edges, sx, sh, self_cond, model, denoised, fixed)
    gx_total, gh_total = torch.zeros_like(sx), torch.zeros_like(sh)
    for term in guidance:
        with torch.enable_grad():  # classifier terms differentiate through their network
            gx, gh = term(state)
        gx_total, gh_total = gx_total + gx.detach(), gh_total + gh.detach()
    return sx + gx_total, sh + gh_total, denoised


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
    grid_power: float = 1.0,
    first_index: int = 0,
    sampler_options: Mapping[str, float] | None = None,
    edit: MoleculeEdit | None = None,
) -> SampleResult:
    """Generate one molecule per entry of ``node_counts``, as one batch.

    Args:
        method: a registered sampler (:data:`molguide.diffusion.samplers.SAMPLERS`):
            "ancestral" (stochastic, EDM's sampler) or "ddim" (deterministic
            probability-flow discretisation, good at 50-100 steps).
        guidance: terms whose outputs add to the score (empty: the plain sampler).
        generator: seeds the initial noise and the ancestral noise (CPU generator).
        grid_power: spacing of the time grid (:func:`molguide.diffusion.steps.time_grid`):
            1 is EDM's even grid; 2 puts more steps near the data.
        first_index: the sample number of the batch's first molecule (the pipeline's
            batches number their samples on from the earlier ones).
        sampler_options: the sampler's own settings (e.g. ``{"eta": 3.0}`` for
            "dpmpp2m_sde"; see its ``OPTIONS``).
        edit: reference molecules to start from at ``edit.t_start`` and atoms to keep
            (:mod:`molguide.diffusion.editing`); their atom counts are ``node_counts``.
    """
    sampler = build_sampler(method, diffusion.schedule, sampler_options)
    sampler.set_timesteps(steps, grid_power, edit.t_start if edit is not None else 1.0)
    counts = torch.as_tensor(node_counts, dtype=torch.long)
    num_graphs, k = len(counts), len(atom_types)
    batch = torch.repeat_interleave(torch.arange(num_graphs), counts).to(device)
    edges = fully_connected_edges(batch)
    dtype = next(model.parameters()).dtype
    n = int(counts.sum())
    zx = centered_gaussian(n, batch, generator, dtype, device)
    zh = torch.randn(n, k, generator=generator, dtype=dtype).to(device)
    projection, fixed = None, None
    if edit is not None:
        if edit.counts != counts.tolist():
            raise ValueError(f"the edit's atom counts {edit.counts} are not the samples' {counts.tolist()}")
        exact = bool(network_setting(model, "fixed_atoms", False))  # kept atoms given noise-free
        projection = EditProjection(edit, batch, num_graphs, k, diffusion.onehot_scale, dtype, device, exact)
        fixed = projection.keep if exact and bool(projection.keep.any()) else None
        if fixed is not None:  # as in training: noise on the generated atoms only, then centred
            zx, zh = remove_mean(zx * ~fixed[:, None], batch, num_graphs), zh * ~fixed[:, None]
        zx, zh = projection.start(diffusion.schedule, edit.t_start, zx, zh, generator)
    alive = torch.ones(num_graphs, dtype=torch.bool, device=device)
    failures: dict[int, str] = {}
    self_cond = None

    def noise() -> tuple[torch.Tensor, torch.Tensor]:
        eps_x = centered_gaussian(n, batch, generator, dtype, device)
        eps_h = torch.randn(n, k, generator=generator, dtype=dtype).to(device)
        if fixed is not None:  # kept atoms take no noise: only a shift common to the molecule
            return remove_mean(eps_x * ~fixed[:, None], batch, num_graphs), eps_h * ~fixed[:, None]
        return eps_x, eps_h

    def score(idx: int, t_value: float, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        nonlocal self_cond
        t = torch.full((num_graphs,), t_value, dtype=torch.float64, device=device)
        sx, sh, denoised = _score(
            model, diffusion, *states, t, batch, num_graphs, edges, context, guidance, self_cond, fixed
        )
        if network_setting(model, "self_condition", False):
            self_cond = denoised.self_condition()
        return sx, sh

    def recentre_and_freeze(idx: int, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if projection is not None:  # the kept atoms at the step's new time
            coef = sampler.coefficients(idx)
            states = projection.project(*states, coef.alpha_s, coef.sigma_s, generator)
        zx = remove_mean(states[0], batch, num_graphs)
        return _freeze_failures(zx, states[1], batch, num_graphs, alive, failures, idx)

    def renoise(idx: int, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The states at t_idx again, from those at t_idx+1 by the forward process."""
        coef = sampler.coefficients(idx)
        back = coef.alpha_t / coef.alpha_s
        std = max(coef.sigma_t**2 - back**2 * coef.sigma_s**2, 0.0) ** 0.5
        return tuple(back * z + std * eps for z, eps in zip(states, noise()))

    resample = edit.resample if edit is not None else 1
    zx, zh = sampler.run(
        (zx, zh), score, noise, recentre_and_freeze, progress, resample=resample, renoise=renoise
    )

    # Decode at t = 0: positions from the predicted clean sample; types by argmax of
    # z_h (eps networks, EDM's decoding) or of the predicted type logits (x0 networks);
    # bond orders by argmax of the bond head's logits, where the network has one.
    t0 = torch.zeros(num_graphs, dtype=torch.float64, device=device)
    with_bonds = network_setting(model, "bond_head", None) is not None
    final = diffusion.denoise(model, zx, zh, t0, batch, edges, context, self_cond, with_bonds, fixed=fixed)
    x = remove_mean(final.x0_x, batch, num_graphs)
    type_scores = zh if final.logits is None else final.logits
    x, type_scores = _freeze_failures(x, type_scores, batch, num_graphs, alive, failures, steps)
    type_index = type_scores.argmax(-1)
    if projection is not None:
        x, type_index = projection.finish(x, type_index)
    types = torch.as_tensor(list(atom_types))[type_index.cpu()]
    orders = _bond_matrices(final.bond_logits, edges, counts) if with_bonds else None
    molecules, indices = [], []
    offsets = torch.cumsum(counts, 0) - counts
    for m in range(num_graphs):
        if m in failures:
            continue
        a, b = int(offsets[m]), int(offsets[m] + counts[m])
        index = first_index + m
        molecule = Molecule(types[a:b].numpy(), x[a:b].double().cpu().numpy(), name=f"sample_{index}")
        molecule.bond_orders = orders[m] if orders is not None else None
        molecules.append(molecule)
        indices.append(index)
    lost = {first_index + m: reason for m, reason in failures.items()}
    return SampleResult(molecules, lost, steps, method, grid_power, indices, atom_counts=counts.tolist())


def _bond_matrices(logits: torch.Tensor, edges: torch.Tensor, counts: torch.Tensor) -> list[np.ndarray]:
    """Per molecule the (n, n) argmax bond orders, from the logits of both directions of
    each pair (fully connected edges: each molecule's edges are one contiguous run)."""
    logits, edges = logits.detach().cpu(), edges.cpu()
    node_starts = (torch.cumsum(counts, 0) - counts).tolist()
    edge_counts = counts * (counts - 1)
    edge_starts = (torch.cumsum(edge_counts, 0) - edge_counts).tolist()
    out = []
    for start, size, e0, ne in zip(node_starts, counts.tolist(), edge_starts, edge_counts.tolist()):
        block = torch.zeros(size, size, logits.shape[-1], dtype=logits.dtype)
        block[edges[0, e0 : e0 + ne] - start, edges[1, e0 : e0 + ne] - start] = logits[e0 : e0 + ne]
        # The head is symmetric already; summing both directions makes the argmax exactly so.
        orders = (block + block.transpose(0, 1)).argmax(-1).numpy().astype(np.int8)
        np.fill_diagonal(orders, 0)
        out.append(orders)
    return out


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

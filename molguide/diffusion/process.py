"""The variance-preserving diffusion on z = [x, h], its denoising losses and its score.

x are positions in the zero-centre-of-mass subspace (scale 1); h are atom-type
one-hots scaled by 1/4 (without this scaling EDM's molecule stability fell from
82% to 47%). z_t = alpha_t z_0 + sigma_t eps with the position noise centred.

Two parameterisations of the network (docs/sampling.md), one score:
- "eps" (EDM): the network predicts eps; trained with an unweighted mean squared
  error, t uniform on the grid (EDM's loss, kept exactly);
- "x0": the network predicts the clean positions and atom-type logits; x0_h is
  ``onehot_scale * softmax(logits)``. Trained on |x0_hat - x0|^2 plus the types'
  cross-entropy (or their squared error), each molecule weighted by w(t) (by default
  clamp(SNR, 0.05, 1.5), EQGAT-diff's), optionally with self-conditioning, times
  drawn towards the data end and position noise rotated onto the data (Kabsch);
  a network with a bond-order head adds the cross-entropy of its bond-order logits
  on every labelled pair, with the same weight w(t).
Either way s_t(z) = (alpha_t x0_hat - z_t) / sigma_t^2 = -eps_hat / sigma_t.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch_geometric.utils import scatter

from molguide.data.geometry import kabsch_align, remove_mean
from molguide.data.graphs import fully_connected_edges
from molguide.diffusion.schedule import NoiseSchedule

ONEHOT_SCALE = 0.25
LOSS_WEIGHTINGS = ("uniform", "snr_clamp")
TYPE_LOSSES = ("ce", "mse")


@dataclass(frozen=True)
class LossSettings:
    """How an x0-parameterised network is trained (ignored by EDM's eps loss).

    Args:
        weighting: "snr_clamp" (w(t) = clamp(alpha^2/sigma^2, snr_min, snr_max)) or
            "uniform" (w = 1: plain x0 regression).
        type_loss: "ce" (cross-entropy of the type logits) or "mse" (squared error of
            the type probabilities against the one-hot).
        type_weight: factor on the type term.
        time_power: times are u^time_power on the grid, u uniform: > 1 draws more
            times near the data (t = 0); 1 is uniform.
        align_noise: rotate each molecule's position noise onto its positions
            (Kabsch) before noising. This changes the forward process: given x0 the
            noise is no longer isotropic, so the network learns the score of that
            process, not of the VP one the sampler assumes (exact only in the limit
            where alignment does not matter); the ablation measures whether it pays.
        self_condition_prob: with a self-conditioned network, the share of molecules
            whose input carries the network's own first estimate (no gradient).
        bond_weight: factor on the bond-order cross-entropy (networks with a bond head).
        fixed_prob: with a network trained to keep atoms (``fixed_atoms``), the share of
            molecules that get some atoms fixed (:func:`fixed_atom_mask`); the rest are
            generated whole, so the network stays an ordinary generator too.
    """

    weighting: str = "snr_clamp"
    snr_min: float = 0.05
    snr_max: float = 1.5
    type_loss: str = "ce"
    type_weight: float = 1.0
    time_power: float = 1.0
    align_noise: bool = False
    self_condition_prob: float = 0.5
    bond_weight: float = 1.0
    fixed_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss weighting must be one of {list(LOSS_WEIGHTINGS)}, not {self.weighting!r}")
        if self.type_loss not in TYPE_LOSSES:
            raise ValueError(f"type loss must be one of {list(TYPE_LOSSES)}, not {self.type_loss!r}")
        if not 0 < self.snr_min <= self.snr_max:
            raise ValueError(f"need 0 < snr_min <= snr_max, got {self.snr_min}, {self.snr_max}")
        if self.time_power <= 0:
            raise ValueError(f"time_power must be > 0, got {self.time_power}")
        if not 0.0 <= self.fixed_prob <= 1.0:
            raise ValueError(f"fixed_prob must be in [0, 1], got {self.fixed_prob}")
        if not 0.0 <= self.self_condition_prob <= 1.0:
            raise ValueError(f"self_condition_prob must be in [0, 1], got {self.self_condition_prob}")
        if self.bond_weight < 0:
            raise ValueError(f"bond_weight must be >= 0, got {self.bond_weight}")


@dataclass
class Denoised:
    """The network's estimate at z_t in both forms, and the score it implies.

    ``x0_h`` is in the scaled one-hot space of z_h; ``type_probs`` are the
    unscaled type probabilities (the self-conditioning input); ``logits`` are the
    type logits of an x0 network (None for eps networks); ``bond_logits`` the (E, 4)
    bond-order logits of the edges (networks with a bond head, when asked for).
    """

    eps_x: torch.Tensor
    eps_h: torch.Tensor
    x0_x: torch.Tensor
    x0_h: torch.Tensor
    score_x: torch.Tensor
    score_h: torch.Tensor
    logits: torch.Tensor | None = None
    bond_logits: torch.Tensor | None = None

    @property
    def type_probs(self) -> torch.Tensor:
        return self.x0_h / ONEHOT_SCALE if self.logits is None else torch.softmax(self.logits, -1)

    def self_condition(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions, type probabilities) as the next call's self-conditioning input."""
        return self.x0_x.detach(), self.type_probs.detach()


def network_setting(model: torch.nn.Module, name: str, default=None):
    """A score network's setting (``parameterisation``, ``self_condition``, ...), read through
    a DistributedDataParallel wrapper, whose own attributes do not include its module's."""
    return getattr(getattr(model, "module", model), name, default)


def denoised_from_output(
    parameterisation: str,
    output: tuple[torch.Tensor, torch.Tensor],
    zx: torch.Tensor,
    zh: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    onehot_scale: float = ONEHOT_SCALE,
) -> Denoised:
    """Both forms of a network's output; ``alpha``/``sigma`` are per node, shaped (N, 1)."""
    first, second = output[0], output[1]
    bonds = output[2] if len(output) > 2 else None
    if parameterisation == "eps":
        eps_x, eps_h = first, second
        x0_x, x0_h = (zx - sigma * eps_x) / alpha, (zh - sigma * eps_h) / alpha
        return Denoised(eps_x, eps_h, x0_x, x0_h, -eps_x / sigma, -eps_h / sigma)
    if parameterisation != "x0":
        raise ValueError(f"unknown parameterisation {parameterisation!r}")
    x0_x, logits = first, second
    x0_h = onehot_scale * torch.softmax(logits, -1)
    var = sigma * sigma
    score_x, score_h = (alpha * x0_x - zx) / var, (alpha * x0_h - zh) / var
    return Denoised(-sigma * score_x, -sigma * score_h, x0_x, x0_h, score_x, score_h, logits, bonds)


@dataclass
class LossDraws:
    """The random numbers of one loss evaluation (:meth:`VPDiffusion.draw`).

    ``t`` (B,) times; ``noise_x`` (N, 3) and ``noise_h`` (N, K) standard normals (centred
    and scaled when the batch is noised); ``self_condition`` (B,) uniforms deciding which
    molecules get the network's first estimate (self-conditioned networks only);
    ``fixed`` (B, 4) uniforms choosing each molecule's fixed atoms (networks trained to keep
    atoms only; :func:`fixed_atom_mask`).
    """

    t: torch.Tensor
    noise_x: torch.Tensor
    noise_h: torch.Tensor
    self_condition: torch.Tensor | None = None
    fixed: torch.Tensor | None = None


@dataclass
class NoisedBatch:
    """A noised batch and the noise that made it."""

    zx: torch.Tensor
    zh: torch.Tensor
    eps_x: torch.Tensor
    eps_h: torch.Tensor
    t: torch.Tensor  # (B,) in [0, 1]


class VPDiffusion:
    """Forward process, loss and score of the variance-preserving diffusion."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        onehot_scale: float = ONEHOT_SCALE,
        loss_settings: LossSettings | None = None,
    ) -> None:
        self.schedule = schedule
        self.onehot_scale = onehot_scale
        self.loss_settings = loss_settings or LossSettings()

    @classmethod
    def from_config(cls, config: dict) -> VPDiffusion:
        """The diffusion a :attr:`config` (or a run's ``diffusion`` section) describes."""
        settings = LossSettings(**config.get("loss", {}))  # records before x0 networks have none
        schedule = NoiseSchedule(config["schedule"], config["steps"], config["precision"])
        return cls(schedule, float(config.get("onehot_scale", ONEHOT_SCALE)), settings)

    @property
    def config(self) -> dict:
        """Everything that rebuilds this diffusion (:meth:`from_config`): the run's
        ``diffusion`` section plus the one-hot scaling."""
        s = self.schedule
        return {
            "schedule": s.kind,
            "steps": s.steps,
            "precision": s.precision,
            "loss": dataclasses.asdict(self.loss_settings),
            "onehot_scale": self.onehot_scale,
        }

    def coefficients(self, t: torch.Tensor, batch: torch.Tensor, dtype: torch.dtype):
        """(alpha_t, sigma_t) per node, shaped (N, 1)."""
        alpha = self.schedule.alpha(t).to(dtype)[batch].unsqueeze(-1)
        sigma = self.schedule.sigma(t).to(dtype)[batch].unsqueeze(-1)
        return alpha, sigma

    def denoise(
        self,
        model: torch.nn.Module,
        zx: torch.Tensor,
        zh: torch.Tensor,
        t: torch.Tensor,
        batch: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        self_cond: tuple[torch.Tensor, torch.Tensor] | None = None,
        with_bonds: bool = False,
        base_output: tuple[torch.Tensor, torch.Tensor] | None = None,
        fixed: torch.Tensor | None = None,
    ) -> Denoised:
        """Run ``model`` at z_t and return its estimate in both forms and its score
        (``with_bonds``: and its bond-order logits on ``edge_index``). ``base_output`` goes
        to a residual network whose frozen base's output at z_t is known already; ``fixed``
        (N,) flags the atoms a network trained to keep atoms is told are fixed."""
        extra = {"self_cond": self_cond} if network_setting(model, "self_condition", False) else {}
        if with_bonds:
            extra["with_bonds"] = True
        if fixed is not None:
            extra["fixed"] = fixed
        if base_output is not None:
            extra["base_output"] = base_output
        output = model(zx, zh, t, batch, edge_index, context, **extra)
        alpha, sigma = self.coefficients(t, batch, zx.dtype)
        return denoised_from_output(
            network_setting(model, "parameterisation", "eps"), output, zx, zh, alpha, sigma, self.onehot_scale
        )

    def sample_times(self, num_graphs: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Times uniform on the grid {0, 1/T, ..., 1}."""
        steps = torch.randint(0, self.schedule.steps + 1, (num_graphs,), generator=generator)
        return steps.double() / self.schedule.steps

    def sample_times_towards_data(
        self, num_graphs: int, power: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Times u^power rounded to the grid, u uniform on [0, 1] (power > 1: nearer the data)."""
        u = torch.rand(num_graphs, generator=generator, dtype=torch.float64)
        return torch.round(u**power * self.schedule.steps) / self.schedule.steps

    def draw(
        self,
        num_graphs: int,
        num_nodes: int,
        num_types: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        self_condition: bool = False,
        device: torch.device | str | None = None,
        fixed_atoms: bool = False,
    ) -> LossDraws:
        """The random numbers of one loss evaluation for ``num_graphs`` molecules of
        ``num_nodes`` atoms in all, in a fixed order: times (by this diffusion's
        ``time_power``), position noise, type noise and, for a self-conditioned network,
        which molecules get their own first estimate and, for a network trained to keep
        atoms (``fixed_atoms``), which atoms are fixed. Drawn on the generator's device
        (CPU generators keep runs reproducible across devices), else on ``device``."""
        ls = self.loss_settings
        if ls.time_power == 1.0:
            t = self.sample_times(num_graphs, generator)
        else:
            t = self.sample_times_towards_data(num_graphs, ls.time_power, generator)
        device = generator.device if generator is not None else device
        noise_x = torch.randn(num_nodes, 3, generator=generator, dtype=dtype, device=device)
        noise_h = torch.randn(num_nodes, num_types, generator=generator, dtype=dtype, device=device)
        use = torch.rand(num_graphs, generator=generator) if self_condition else None
        fixed = torch.rand(num_graphs, 4, generator=generator, dtype=torch.float64) if fixed_atoms else None
        return LossDraws(t, noise_x, noise_h, use, fixed)

    def noise(
        self,
        x0: torch.Tensor,
        onehot: torch.Tensor,
        batch: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None = None,
        align: bool = False,
        raw_noise: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> NoisedBatch:
        """z_t from clean centred positions and unscaled one-hots at per-molecule times t.

        ``raw_noise``: the (N, 3) position and (N, K) type standard normals to use (e.g.
        from :meth:`draw`); without it they are drawn from ``generator`` on its device.
        ``align``: rotate each molecule's position noise onto its positions (Kabsch).
        """
        n, dtype, num_graphs = x0.shape[0], x0.dtype, int(t.shape[0])
        alpha, sigma = self.coefficients(t, batch, dtype)
        if raw_noise is None:
            source = generator.device if generator is not None else x0.device
            raw_noise = (
                torch.randn(n, 3, generator=generator, dtype=dtype, device=source),
                torch.randn(n, onehot.shape[1], generator=generator, dtype=dtype, device=source),
            )
        raw_x, raw_h = raw_noise
        eps_x = remove_mean(raw_x.to(x0.device), batch, num_graphs)
        eps_h = raw_h.to(x0.device)
        x0 = remove_mean(x0, batch, num_graphs)
        if align:
            eps_x = kabsch_align(eps_x, x0, batch, num_graphs)
        zx = alpha * x0 + sigma * eps_x
        zh = alpha * (onehot * self.onehot_scale) + sigma * eps_h
        return NoisedBatch(zx, zh, eps_x, eps_h, t)

    def loss(
        self,
        model: torch.nn.Module,
        x0: torch.Tensor,
        onehot: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        generator: torch.Generator | None = None,
        context: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
        bond_orders: torch.Tensor | None = None,
        bond_mask: torch.Tensor | None = None,
        draws: LossDraws | None = None,
    ) -> torch.Tensor:
        """The denoising loss of one batch, averaged over molecules (``sample_weight`` (B,):
        weighted by molecule, for reward-weighted training); see :meth:`per_molecule_loss`."""
        per_mol = self.per_molecule_loss(
            model,
            x0,
            onehot,
            batch,
            num_graphs,
            generator,
            context,
            edge_index,
            bond_orders,
            bond_mask,
            draws,
        )
        if sample_weight is not None:
            return (per_mol * sample_weight).sum() / sample_weight.sum()
        return per_mol.mean()

    def per_molecule_loss(
        self,
        model: torch.nn.Module,
        x0: torch.Tensor,
        onehot: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        generator: torch.Generator | None = None,
        context: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None,
        bond_orders: torch.Tensor | None = None,
        bond_mask: torch.Tensor | None = None,
        draws: LossDraws | None = None,
        hydrogen_channel: int | None = None,
    ) -> torch.Tensor:
        """The (B,) denoising loss of each molecule of a batch.

        eps networks: EDM's loss, each molecule's squared noise error averaged over
        its 3 + K features per atom. x0 networks: w(t) times the mean over atoms of
        |x0_hat - x0|^2 + type_weight * (type cross-entropy or squared error), with the
        :class:`LossSettings` of this diffusion. ``draws``: the batch's random numbers
        (:meth:`draw`; data-parallel training passes each process its rows of the
        global batch's draw), else drawn from ``generator``. ``bond_orders``/``bond_mask``
        (E,): labels of the fully connected edges of the batch
        (:meth:`molguide.data.bonds.BondTable.edge_labels`), for a network with a bond
        head; required by such a network. ``hydrogen_channel``: the type channel of
        hydrogen, for a network trained to keep atoms (:func:`fixed_atom_mask`).
        """
        ls = self.loss_settings
        with_bonds = network_setting(model, "bond_head", None) is not None
        if with_bonds and (bond_orders is None or bond_mask is None):
            raise ValueError("this score network has a bond head: its loss needs bond_orders and bond_mask")
        self_conditioned = network_setting(model, "self_condition", False)
        keeps_atoms = network_setting(model, "fixed_atoms", False)
        if draws is None:
            draws = self.draw(
                num_graphs,
                x0.shape[0],
                onehot.shape[1],
                generator,
                x0.dtype,
                self_conditioned,
                fixed_atoms=keeps_atoms,
            )
        t = draws.t.to(x0.device)
        raw_x, raw_h, fixed = draws.noise_x.to(x0.device), draws.noise_h.to(x0.device), None
        if keeps_atoms:
            if draws.fixed is None:
                raise ValueError("this score network keeps atoms: its loss draws need `fixed`")
            hydrogen = None if hydrogen_channel is None else onehot[:, hydrogen_channel] > 0.5
            fixed = fixed_atom_mask(draws.fixed, x0, hydrogen, batch, num_graphs, ls.fixed_prob)
            free = (~fixed).to(x0.dtype).unsqueeze(-1)
            raw_x, raw_h = raw_x * free, raw_h * free  # fixed atoms: z = alpha x0, no noise
        noised = self.noise(x0, onehot, batch, t, align=ls.align_noise, raw_noise=(raw_x, raw_h))
        if edge_index is None:
            edge_index = fully_connected_edges(batch)
        self_cond = None
        if self_conditioned:
            use = (draws.self_condition < ls.self_condition_prob).to(x0.device)
            with torch.no_grad():
                first = self.denoise(model, noised.zx, noised.zh, t, batch, edge_index, context, fixed=fixed)
            keep = use[batch].unsqueeze(-1).to(x0.dtype)
            prev_x, prev_p = first.self_condition()
            self_cond = (prev_x * keep, prev_p * keep)
        d = self.denoise(
            model, noised.zx, noised.zh, t, batch, edge_index, context, self_cond, with_bonds, fixed=fixed
        )
        # Only the generated atoms are scored: a fixed atom's clean value is an input.
        scored = None if fixed is None else (~fixed).to(x0.dtype)
        if network_setting(model, "parameterisation", "eps") == "eps":
            sq = ((d.eps_x - noised.eps_x) ** 2).sum(-1) + ((d.eps_h - noised.eps_h) ** 2).sum(-1)
            dims = torch.full_like(sq, 3.0 + onehot.shape[1])
            if scored is not None:
                sq, dims = sq * scored, dims * scored
            per_mol = scatter(sq, batch, dim=0, dim_size=num_graphs, reduce="sum")
            return per_mol / scatter(dims, batch, dim=0, dim_size=num_graphs)
        per_mol = self._x0_error(d, x0, onehot, batch, num_graphs, scored)
        if with_bonds:
            per_mol = per_mol + ls.bond_weight * self._bond_error(
                d.bond_logits, bond_orders, bond_mask, batch[edge_index[0]], num_graphs
            )
        return per_mol * self._weights(t).to(x0.dtype)

    def _x0_error(self, d: Denoised, x0, onehot, batch, num_graphs, scored=None) -> torch.Tensor:
        """Per molecule: mean over atoms of |x0_hat - x0|^2 + type_weight * type error
        (``scored`` (N,): over the atoms weighted 1 only)."""
        ls = self.loss_settings
        pos = ((d.x0_x - remove_mean(x0, batch, num_graphs)) ** 2).sum(-1)
        if ls.type_loss == "ce":
            types = F.cross_entropy(d.logits, onehot.argmax(-1), reduction="none")
        else:
            types = ((d.type_probs - onehot) ** 2).sum(-1)
        if scored is None:
            return scatter(pos + ls.type_weight * types, batch, dim=0, dim_size=num_graphs, reduce="mean")
        total = scatter((pos + ls.type_weight * types) * scored, batch, dim=0, dim_size=num_graphs)
        return total / scatter(scored, batch, dim=0, dim_size=num_graphs)

    @staticmethod
    def _bond_error(logits, orders, mask, edge_mol, num_graphs) -> torch.Tensor:
        """Per molecule: mean bond-order cross-entropy over its labelled pairs (0 without labels)."""
        ce = F.cross_entropy(logits, orders.to(logits.device), reduction="none")
        mask = mask.to(logits.device, logits.dtype)
        total = scatter(ce * mask, edge_mol, dim=0, dim_size=num_graphs, reduce="sum")
        count = scatter(mask, edge_mol, dim=0, dim_size=num_graphs, reduce="sum")
        return total / count.clamp(min=1.0)

    def _weights(self, t: torch.Tensor) -> torch.Tensor:
        """w(t) per molecule: clamp(alpha^2 / sigma^2, snr_min, snr_max), or 1."""
        ls = self.loss_settings
        if ls.weighting == "uniform":
            return torch.ones_like(t)
        alpha2 = self.schedule.alpha(t) ** 2
        return (alpha2 / (1 - alpha2)).clamp(ls.snr_min, ls.snr_max)


def fixed_atom_mask(
    uniforms: torch.Tensor,
    x0: torch.Tensor,
    hydrogen: torch.Tensor | None,
    batch: torch.Tensor,
    num_graphs: int,
    prob: float,
) -> torch.Tensor:
    """The (N,) atoms held fixed in training a network to keep atoms, from (B, 4) uniforms.

    A molecule gets fixed atoms with probability ``prob`` (uniform 0). They are a spatially
    contiguous part, as a kept fragment is: the k atoms nearest a seed atom (uniform 1), k
    uniform in 1..n-1 (uniform 2), so at least one atom is generated; with probability 1/2
    (uniform 3) its hydrogens are left to be generated too, as when a SMARTS pattern of
    heavy atoms is kept (``hydrogen`` (N,): which atoms are; None: no hydrogens to leave).
    """
    u = uniforms.to(x0.device)
    counts = torch.bincount(batch, minlength=num_graphs)
    starts = torch.cumsum(counts, 0) - counts
    n = counts.to(u.dtype)
    seed = (starts + torch.minimum((u[:, 1] * n).long(), counts - 1).clamp(min=0)).clamp(max=len(x0) - 1)
    k = 1 + torch.minimum((u[:, 2] * (n - 1)).long(), counts - 2)
    distance = (x0 - x0[seed][batch]).norm(dim=-1)
    # Rank of each atom by distance to its molecule's seed atom (ties by atom order): sort by
    # distance, then stably by molecule.
    order = torch.argsort(distance, stable=True)
    order = order[torch.argsort(batch[order], stable=True)]
    rank = torch.empty_like(batch)
    rank[order] = torch.arange(len(batch), device=batch.device) - starts[batch[order]]
    chosen = (u[:, 0] < prob) & (counts >= 2)
    mask = chosen[batch] & (rank < k[batch])
    if hydrogen is not None:
        mask &= ~(hydrogen & (u[:, 3] < 0.5)[batch])
    return mask

"""Sampling from given molecules: start part-way (lead optimisation) and keep atoms (inpainting).

A :class:`MoleculeEdit` gives each sample a reference molecule. With ``t_start`` < 1 the
sampler starts at ``t_start`` from the reference noised by the forward process,
z = alpha(t_start) x + sigma(t_start) eps, instead of from pure noise, so the result stays
the closer to the reference the smaller ``t_start`` is (SDEdit, Meng et al. 2022). Atoms
marked in ``keep`` are the reference's throughout (RePaint-style inpainting, Lugmayr et al.
2022): after every step, at its new time s, their coordinates and types are replaced by the
reference noised to s, translated so that the kept atoms' centre stays where the network
put it (the generated atoms do not see the kept ones jump), and the molecule is recentred
as usual. At t = 0 the kept atoms are the reference's exactly, and the whole molecule is
moved so that they sit at the reference's own coordinates. With a network trained to keep
atoms (``fixed_atoms``; ``exact``) the kept atoms are given noise-free, alpha_s x, flagged
as fixed, from the first step on: the conditional model that RePaint only approximates.
docs/edit.md has the methods and their limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.utils import scatter

from molguide.data.geometry import remove_mean
from molguide.diffusion.schedule import NoiseSchedule


@dataclass
class MoleculeEdit:
    """Reference molecules for a sampling call, one per sample.

    ``positions[k]`` (n_k, 3) in Angstrom and ``types[k]`` (n_k,) indices into the network's
    atom types define sample k (its atom count is n_k); ``keep[k]`` (n_k,) marks the atoms
    that stay the reference's (None: none). Atoms neither kept nor started from (t_start = 1)
    may hold any placeholder position and type.
    """

    positions: list[np.ndarray]
    types: list[np.ndarray]
    t_start: float = 1.0
    keep: list[np.ndarray] | None = None
    resample: int = 1  # RePaint's resampling: tries per step (kept atoms and the rest settle together)

    def __post_init__(self) -> None:
        if not isinstance(self.resample, int) or self.resample < 1:
            raise ValueError(f"resample must be a whole number >= 1, got {self.resample!r}")
        if not 0 < self.t_start <= 1:
            raise ValueError(f"t_start must be in (0, 1], got {self.t_start!r}")
        if len(self.positions) != len(self.types):
            raise ValueError(f"{len(self.positions)} reference positions for {len(self.types)} type lists")
        for k, (pos, types) in enumerate(zip(self.positions, self.types)):
            if np.asarray(pos).shape != (len(types), 3):
                shape = np.asarray(pos).shape
                raise ValueError(f"reference {k}: positions of shape {shape} for {len(types)} atoms")
        if self.keep is not None:
            if len(self.keep) != len(self.positions):
                raise ValueError(f"{len(self.keep)} keep masks for {len(self.positions)} references")
            for k, (mask, types) in enumerate(zip(self.keep, self.types)):
                if len(mask) != len(types):
                    raise ValueError(f"reference {k}: a keep mask of {len(mask)} for {len(types)} atoms")

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def counts(self) -> list[int]:
        """Atom count of every sample."""
        return [len(t) for t in self.types]

    def for_samples(self, start: int, end: int) -> MoleculeEdit:
        """The references of samples [start, end)."""
        keep = None if self.keep is None else self.keep[start:end]
        return MoleculeEdit(
            self.positions[start:end], self.types[start:end], self.t_start, keep, self.resample
        )


class EditProjection:
    """:class:`MoleculeEdit` applied to one batch: the noised start and the per-step projection."""

    def __init__(
        self,
        edit: MoleculeEdit,
        batch: torch.Tensor,
        num_graphs: int,
        num_types: int,
        onehot_scale: float,
        dtype: torch.dtype,
        device: torch.device | str,
        exact: bool = False,
    ) -> None:
        self.batch, self.num_graphs = batch, num_graphs
        self.exact = exact  # kept atoms without noise (a network trained with fixed atoms)
        x = torch.as_tensor(np.concatenate(edit.positions), dtype=torch.float64).to(device)
        types = torch.as_tensor(np.concatenate(edit.types), dtype=torch.long).to(device)
        self.types = types
        keep = np.concatenate(edit.keep) if edit.keep is not None else np.zeros(len(types), dtype=bool)
        self.keep = torch.as_tensor(keep, dtype=torch.bool).to(device)
        # The anchor of each molecule: its kept atoms' centre, else its reference's centre.
        has_kept = scatter(self.keep.double(), batch, dim=0, dim_size=num_graphs, reduce="sum") > 0
        self.anchor_weight = torch.where(has_kept[batch], self.keep.double(), torch.ones_like(x[:, 0]))
        self.anchor = self._anchor(x)
        self.x = (x - self.anchor[batch]).to(dtype)  # relative to the anchor
        self.h = (torch.nn.functional.one_hot(types, num_types) * onehot_scale).to(dtype)
        self.dtype = dtype
        self.eps: tuple[torch.Tensor, torch.Tensor] | None = None

    def start(
        self,
        schedule: NoiseSchedule,
        t_start: float,
        zx: torch.Tensor,
        zh: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The states at ``t_start`` from the noise ``zx, zh`` (pure noise when t_start is 1);
        the kept atoms take their own noise draw, the one every later step uses (``exact``:
        none, they are alpha x from the start)."""
        if t_start >= 1:
            if not self.exact:
                return zx, zh
            t1 = torch.ones(1, dtype=torch.float64)
            zx, zh = self.project(zx, zh, float(schedule.alpha(t1)), float(schedule.sigma(t1)), generator)
            return remove_mean(zx, self.batch, self.num_graphs), zh
        t = torch.tensor([t_start], dtype=torch.float64)
        alpha, sigma = float(schedule.alpha(t)), float(schedule.sigma(t))
        x = self.x - scatter(self.x, self.batch, dim=0, dim_size=self.num_graphs, reduce="mean")[self.batch]
        zx, zh = alpha * x + sigma * zx, alpha * self.h + sigma * zh
        zx, zh = self.project(zx, zh, alpha, sigma, generator)
        return remove_mean(zx, self.batch, self.num_graphs), zh

    def project(
        self,
        zx: torch.Tensor,
        zh: torch.Tensor,
        alpha: float,
        sigma: float,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace the kept atoms by the reference noised to (alpha, sigma), keeping their centre
        (``exact``: alpha times the reference, no noise)."""
        if not bool(self.keep.any()):
            return zx, zh
        keep, batch = self.keep, self.batch[self.keep]
        if self.exact:  # noise-free: what a network trained with fixed atoms was given
            noise_x, noise_h = 0.0, 0.0
        else:
            if self.eps is None:  # one draw for the whole path: the kept atoms move smoothly
                n = int(keep.sum())
                eps_x = torch.randn(n, 3, generator=generator, dtype=self.dtype).to(zx.device)
                eps_h = torch.randn(n, zh.shape[1], generator=generator, dtype=self.dtype).to(zh.device)
                self.eps = eps_x, eps_h
            noise_x, noise_h = sigma * self.eps[0], sigma * self.eps[1]
        target = alpha * self.x[keep] + noise_x
        shift = self._kept_mean(zx[keep], batch) - self._kept_mean(target, batch)
        zx, zh = zx.clone(), zh.clone()
        zx[keep] = target + shift[batch]
        zh[keep] = alpha * self.h[keep] + noise_h
        return zx, zh

    def finish(self, x: torch.Tensor, types: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final coordinates and type indices: the kept atoms exactly the reference's, and every
        molecule moved so that its anchor (kept atoms, else reference centre) is the reference's."""
        x, types = x.clone(), types.clone()
        keep = self.keep
        if bool(keep.any()):
            batch = self.batch[keep]
            x[keep] = (self.x[keep] + self._kept_mean(x[keep], batch)[batch]).to(x.dtype)
            types[keep] = self.types[keep].to(types.device)
        here = self._anchor(x.double())  # the anchor in the sample's frame
        return (x.double() + (self.anchor - here)[self.batch]).to(x.dtype), types

    def _anchor(self, x: torch.Tensor) -> torch.Tensor:
        """Each molecule's anchor in ``x`` (float64): its kept atoms' centre, else its centre."""
        w = self.anchor_weight
        total = scatter(w, self.batch, dim=0, dim_size=self.num_graphs, reduce="sum")
        return (
            scatter(x * w[:, None], self.batch, dim=0, dim_size=self.num_graphs, reduce="sum")
            / total[:, None]
        )

    def _kept_mean(self, values: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return scatter(values, batch, dim=0, dim_size=self.num_graphs, reduce="mean")

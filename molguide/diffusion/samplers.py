"""Samplers of the reverse VP process as objects, registered by name.

A sampler walks a time grid t_S = 1 > ... > t_0 = 0 (:meth:`Sampler.set_timesteps`)
and turns the current state and its (guided) score into the state one step nearer
the data (:meth:`Sampler.step`). It knows nothing about molecules: the state is a
tuple of tensors (positions and atom types for molecules, one vector for the toy
problem), and stochastic samplers draw their noise through a callable the caller
gives, so the caller decides how noise is shaped (centred positions) and seeded.

Samplers that keep state between steps (multistep solvers) reset it in
``set_timesteps``. To add one, subclass :class:`Sampler` and decorate it with
:func:`register_sampler`; configs and ``Designer.generate`` accept its name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from molguide.diffusion.schedule import NoiseSchedule
from molguide.diffusion.steps import StepCoefficients, ancestral_mean_std, ddim_step, time_grid

Tensors = tuple[torch.Tensor, ...]
NoiseFn = Callable[[], Tensors]  # draws one standard-normal tensor per state tensor

SAMPLERS: dict[str, type[Sampler]] = {}


def register_sampler(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: make a sampler available by its ``name``."""
    if cls.name in SAMPLERS:
        raise ValueError(f"a sampler named {cls.name!r} is registered already")
    SAMPLERS[cls.name] = cls
    return cls


def build_sampler(name: str, schedule: NoiseSchedule) -> Sampler:
    """The registered sampler called ``name`` for ``schedule``; unknown names list the known ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")
    return SAMPLERS[name](schedule)


class Sampler:
    """A reverse-time discretisation: :meth:`set_timesteps`, then :meth:`step` once per interval."""

    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule
        self.timesteps = torch.zeros(0, dtype=torch.float64)
        self.grid_power = 1.0

    def set_timesteps(self, steps: int, grid_power: float = 1.0) -> torch.Tensor:
        """Lay out ``steps`` intervals (``grid_power``: see :func:`~molguide.diffusion.steps.time_grid`)
        and forget any state of an earlier run; returns the S + 1 times."""
        self.timesteps = time_grid(steps, self.schedule.steps, grid_power)
        self.grid_power = grid_power
        return self.timesteps

    @property
    def num_steps(self) -> int:
        return max(len(self.timesteps) - 1, 0)

    def coefficients(self, k: int) -> StepCoefficients:
        """alpha and sigma at both ends of interval ``k`` (from t_k to t_{k+1})."""
        return StepCoefficients.between(self.schedule, float(self.timesteps[k]), float(self.timesteps[k + 1]))

    def step(self, k: int, states: Tensors, scores: Tensors, noise: NoiseFn) -> Tensors:
        """The states at t_{k+1} from the states at t_k and their scores (guidance included)."""
        raise NotImplementedError

    def run(
        self,
        states: Tensors,
        score: Callable[[int, float, Tensors], Tensors],
        noise: NoiseFn,
        after_step: Callable[[int, Tensors], Tensors] | None = None,
        progress: bool = False,
        desc: str = "sample",
    ) -> Tensors:
        """The reverse-time loop, molguide's only one: from the states at t_S = 1 to t_0 = 0.

        ``score(k, t_k, states)`` gives the (guided) scores at step k; ``after_step(k,
        states)`` may project or freeze the new states (molecules: recentre, drop the
        ones that diverged). Call :meth:`set_timesteps` first.
        """
        from tqdm.auto import tqdm

        if self.num_steps == 0:
            raise ValueError("set_timesteps first: the sampler has no time grid")
        for k in tqdm(range(self.num_steps), desc=f"{desc} ({self.name})", unit="step", disable=not progress):
            states = self.step(k, states, score(k, float(self.timesteps[k]), states), noise)
            if after_step is not None:
                states = after_step(k, states)
        return states


@register_sampler
class AncestralSampler(Sampler):
    """EDM's sampler: draws z_s ~ p(z_s | z_t) under the score; the last step takes the mean."""

    name = "ancestral"
    stochastic = True

    def step(self, k: int, states: Tensors, scores: Tensors, noise: NoiseFn) -> Tensors:
        coef = self.coefficients(k)
        means = [ancestral_mean_std(z, s, coef) for z, s in zip(states, scores)]
        if k == self.num_steps - 1:  # the last step lands on t = 0
            return tuple(mean for mean, _ in means)
        return tuple(mean + std * eps for (mean, std), eps in zip(means, noise()))


@register_sampler
class DDIMSampler(Sampler):
    """Deterministic DDIM / probability-flow discretisation (good at 50-100 steps)."""

    name = "ddim"

    def step(self, k: int, states: Tensors, scores: Tensors, noise: NoiseFn) -> Tensors:
        coef = self.coefficients(k)
        return tuple(ddim_step(z, s, coef) for z, s in zip(states, scores))

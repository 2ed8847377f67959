"""What a user asks of each property: its goal, the goal's weight and its time window.

``generate(target={...})`` and ``molguide generate --target`` take one entry per
property (docs/generate.md)::

    {"gap_eV": "high",                         # the top bin of the trained binning
     "mu_D": "low",                            # the bottom bin
     "alpha_bohr3": 75.0,                      # a value: a number is always a value, never a bin
     "homo_eV": {"value": -6.5, "tolerance": 0.2, "weight": 2.0, "t_max": 0.8},
     "lumo_eV": {"bin": 3}}                    # a bin of the trained binning, by index

A goal becomes, for a binned guidance network, the set of classes it accepts: its bin,
or for a value every bin that meets [value - tolerance, value + tolerance] (the value's
own bin without a tolerance). Classifier guidance then follows
grad log sum_{k in set} p_t(k | z_t), the log-probability that the property meets the
goal. A goal's ``weight`` multiplies every guidance kind's weight for that property.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from molguide.generation.limits import short
from molguide.guidance.targets import PropertyTarget

if TYPE_CHECKING:
    import torch

GOAL_FORMS = "'high', 'low', a value (a number), {'value': v, 'tolerance': t} or {'bin': k}"
GOAL_KEYS = ("goal", "value", "tolerance", "bin", "weight", "t_min", "t_max")


@dataclass(frozen=True)
class Goal:
    """One property's goal.

    Attributes:
        property: the property's name with its unit (``gap_eV``).
        kind: "high", "low", "bin" or "value".
        bin: the bin index of a "bin" goal.
        value, tolerance: the value of a "value" goal, in the property's unit, and how
            far from it a molecule still hits it (None: the value's own bin).
        weight: multiplies every guidance kind's weight for this property.
        t_min, t_max: this property's time window (None: the call's).
    """

    property: str
    kind: Literal["high", "low", "bin", "value"]
    bin: int | None = None
    value: float | None = None
    tolerance: float | None = None
    weight: float = 1.0
    t_min: float | None = None
    t_max: float | None = None

    @property
    def direction(self) -> float:
        """+1 when higher values meet the goal, -1 when lower do, 0 for a bin or a value."""
        return {"high": 1.0, "low": -1.0}.get(self.kind, 0.0)

    def classes(self, binning: PropertyTarget) -> list[int]:
        """The bins of ``binning`` that meet this goal, ascending."""
        top = binning.n_bins - 1
        if self.kind == "high":
            return [top]
        if self.kind == "low":
            return [0]
        if self.kind == "bin":
            if not 0 <= int(self.bin) <= top:
                raise ValueError(f"target[{self.property!r}]: bin {self.bin} is outside 0..{top}")
            return [int(self.bin)]
        tolerance = self.tolerance or 0.0
        low, high = binning.labels(np.array([self.value - tolerance, self.value + tolerance]))
        return list(range(int(low), int(high) + 1))

    def judged_without_bins(self) -> bool:
        """Whether hits need no binning (a value goal with a tolerance)."""
        return self.kind == "value" and self.tolerance is not None

    def hits(self, values: np.ndarray, binning: PropertyTarget | None) -> np.ndarray:
        """Whether each value meets the goal (NaN values do not). A value goal with a
        tolerance is judged by distance; every other goal by the bins of ``binning`` (a
        ValueError without one: check :meth:`judged_without_bins` first)."""
        values = np.asarray(values, dtype=float)
        if self.kind == "value" and self.tolerance is not None:
            return np.abs(values - self.value) <= self.tolerance
        if binning is None:
            raise ValueError(f"{self.property}: a {self.kind} goal needs the property's binning")
        labels = binning.labels(np.nan_to_num(values, nan=np.inf))
        return np.isin(labels, self.classes(binning)) & np.isfinite(values)

    def describe(self, binning: PropertyTarget | None = None) -> str:
        """The goal in the property's unit, e.g. ``gap_eV >= 7.505`` or ``mu_D = 2.5 +- 0.3``."""
        if self.kind == "value":
            spread = f" +- {self.tolerance:g}" if self.tolerance is not None else ""
            text = f"{self.property} = {self.value:g}{spread}"
        elif binning is None or not binning.fitted:
            text = f"{self.property} {self.kind}" + (f" {self.bin}" if self.kind == "bin" else "")
        else:
            lo, hi = _bin_range(binning, self.classes(binning))
            if hi is None:
                text = f"{self.property} >= {lo:.4g}"
            elif lo is None:
                text = f"{self.property} < {hi:.4g}"
            else:
                text = f"{self.property} in [{lo:.4g}, {hi:.4g})"
        return text if self.weight == 1 else f"{text} (weight {self.weight:g})"


def _bin_range(binning: PropertyTarget, classes: list[int]) -> tuple[float | None, float | None]:
    """The bounds of consecutive bins (None: unbounded on that side)."""
    edges = binning.edges
    low = edges[classes[0] - 1] if classes[0] > 0 else None
    high = edges[classes[-1]] if classes[-1] < len(edges) else None
    return low, high


def parse_goals(target: Any) -> list[Goal]:
    """``{property: goal}`` -> one :class:`Goal` per property, in the given order; every
    mistake is a ValueError naming the property and the forms a goal may take."""
    if not isinstance(target, Mapping) or not target:
        raise ValueError(f"target: give goals by property, e.g. {{'gap_eV': 'high'}}; got {short(target)}")
    goals = []
    for name, spec in target.items():
        if not isinstance(name, str):
            raise ValueError(f"target: property names are strings, got {short(name)}")
        goals.append(_goal(name, spec))
    return goals


def _goal(name: str, spec: Any) -> Goal:
    where = f"target[{name!r}]"
    options: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        unknown = [k for k in spec if k not in GOAL_KEYS]
        if unknown:
            raise ValueError(f"{where}: unknown key {short(unknown[0])}; allowed: {', '.join(GOAL_KEYS)}")
        options = dict(spec)
        given = [k for k in ("goal", "value", "bin") if k in options]
        if len(given) != 1:
            raise ValueError(f"{where}: give one of 'goal', 'value' or 'bin', got {given or 'none'}")
        spec = options.pop(given[0])
        if given[0] == "bin":
            spec = {"bin": spec}
        elif given[0] == "value" and not _is_number(spec):
            raise ValueError(f"{where}: the value must be a finite number, got {short(spec)}")
    if "tolerance" in options and not (_is_number(spec)):
        raise ValueError(f"{where}: a tolerance belongs to a value goal")
    fields: dict[str, Any] = {k: _number(where, k, options[k]) for k in options}
    if isinstance(spec, str):
        if spec not in ("high", "low"):
            raise ValueError(f"{where}: give {GOAL_FORMS}; got {short(spec)}")
        goal = Goal(name, spec, **fields)
    elif isinstance(spec, Mapping):  # {"bin": k}
        k = spec["bin"]
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise ValueError(f"{where}: a bin is a whole number >= 0, got {short(k)}")
        goal = Goal(name, "bin", bin=int(k), **fields)
    elif _is_number(spec):
        goal = Goal(name, "value", value=float(spec), **fields)
    else:
        raise ValueError(f"{where}: give {GOAL_FORMS}; got {short(spec)}")
    if goal.tolerance is not None and not goal.tolerance > 0:
        raise ValueError(f"{where}: tolerance must be > 0, got {goal.tolerance:g}")
    if goal.weight < 0:
        raise ValueError(f"{where}: weight must be >= 0, got {goal.weight:g}")
    for key in ("t_min", "t_max"):
        value = getattr(goal, key)
        if value is not None and not 0 <= value <= 1:
            raise ValueError(f"{where}: {key} must be from 0 to 1, got {value:g}")
    if goal.t_min is not None and goal.t_max is not None and goal.t_min > goal.t_max:
        raise ValueError(f"{where}: t_min {goal.t_min:g} is above t_max {goal.t_max:g}")
    return goal


def _is_number(value: Any) -> bool:
    """A finite real number that is not a bool (True is not the value 1)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _number(where: str, key: str, value: Any) -> float:
    if not _is_number(value):
        raise ValueError(f"{where}: {key} must be a finite number, got {short(value)}")
    return float(value)


def parse_goal_text(text: str) -> tuple[str, Any]:
    """One ``--target`` of the command line -> (property, goal) for :func:`parse_goals`.

    ``gap_eV=high``, ``mu_D=low``, ``alpha_bohr3=75``, ``homo_eV=-6.5+-0.2`` (a value with
    a tolerance), ``lumo_eV=bin:3``; options after commas: ``mu_D=low,weight=2,t_max=0.8``.
    """
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise ValueError(f"--target {text!r}: give PROPERTY=GOAL, e.g. gap_eV=high or mu_D=2.5+-0.3")
    first, *extras = [part.strip() for part in rest.split(",")]
    spec: dict[str, Any] = {}
    if first in ("high", "low"):
        spec["goal"] = first
    elif first.startswith("bin:"):
        spec["bin"] = _parsed(text, first[4:], int)
    else:
        value, pm, tolerance = first.partition("+-")
        try:
            spec["value"] = float(value)
        except ValueError:
            raise ValueError(
                f"--target {text!r}: give high, low, a value (75, -6.5+-0.2) or bin:K; got {first!r}"
            ) from None
        if pm:
            spec["tolerance"] = _parsed(text, tolerance, float)
    for extra in extras:
        key, eq, value = extra.partition("=")
        if not eq or key.strip() not in ("weight", "t_min", "t_max"):
            raise ValueError(f"--target {text!r}: options are weight=, t_min= and t_max=, got {extra!r}")
        spec[key.strip()] = _parsed(text, value, float)
    return name.strip(), spec


def _parsed(text: str, value: str, cast):
    try:
        return cast(value.strip())
    except ValueError:
        raise ValueError(f"--target {text!r}: {value.strip()!r} is not a {cast.__name__}") from None


def trained_goal(trained: PropertyTarget) -> Goal:
    """The goal a run's stored binning names (its ``target`` or ``target_value``)."""
    if trained.target_value is not None:
        return Goal(trained.name, "value", value=float(trained.target_value))
    if isinstance(trained.target, str):
        return Goal(trained.name, trained.target)
    return Goal(trained.name, "bin", bin=int(trained.target))


def goal_target(goal: Goal, binning: PropertyTarget | None) -> PropertyTarget:
    """The binning with the goal set (what a kind's builder reads: the direction, the bins)."""
    target = binning if binning is not None else PropertyTarget(goal.property)
    if goal.kind == "value":
        return dataclasses.replace(target, target_value=goal.value)
    goal_class = goal.bin if goal.kind == "bin" else goal.kind
    return dataclasses.replace(target, target=goal_class, target_value=None)


def goal_classes(goal: Goal, binning: PropertyTarget | None) -> int | torch.Tensor:
    """The class a binned network steers to, or a mask when the goal accepts several."""
    import torch

    if binning is None:
        return 0  # a kind without bins (reward) reads the direction, not the class
    classes = goal.classes(binning)
    if len(classes) == 1:
        return classes[0]
    mask = torch.zeros(binning.n_bins, dtype=torch.bool)
    mask[classes] = True
    return mask


def goal_request(run, network: str, goal: Goal, weight: float, window):
    """The :class:`~molguide.guidance.kinds.TermRequest` of one goal for a kind whose
    network is ``network`` in ``run`` (a :class:`~molguide.storage.trained_run.TrainedRun`):
    the kind's ``weight`` times the goal's, in the goal's time window where it gives one
    (else ``window``)."""
    from molguide.guidance.kinds import TermRequest
    from molguide.guidance.terms import TimeWindow

    binning = run.binning(goal.property)
    own = TimeWindow(
        window.t_min if goal.t_min is None else goal.t_min, window.t_max if goal.t_max is None else goal.t_max
    )
    return TermRequest(
        run.network(network, goal.property),
        run.record(network, goal.property),
        goal_target(goal, binning),
        goal_classes(goal, binning),
        run.diffusion,
        weight * goal.weight,
        own,
        values=goal.value,
        tolerance=goal.tolerance,
    )

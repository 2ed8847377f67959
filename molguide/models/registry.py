"""Backbones by name, so configs can choose them: one dict, read by the config's validation.

Each entry maps a name to a function returning the backbone class (imported on first
use: the e3nn backbone pulls in e3nn). A backbone is an
:class:`~molguide.models.backbone.EquivariantBackbone` built as
``cls(in_features, out_features, **backbone_kwargs)``. To add one, write its module
and register it with :func:`register_backbone`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from molguide.models.backbone import EquivariantBackbone


def _egnn() -> type[EquivariantBackbone]:
    from molguide.models.egnn import EGNN

    return EGNN


def _e3nn() -> type[EquivariantBackbone]:
    from molguide.models.e3nn_backbone import E3nnBackbone

    return E3nnBackbone


BACKBONES: dict[str, Callable[[], type[EquivariantBackbone]]] = {"egnn": _egnn, "e3nn": _e3nn}


def register_backbone(name: str, backbone_class: Callable[[], type[EquivariantBackbone]]) -> None:
    """Make a backbone available as ``model.backbone: name`` (``backbone_class`` returns the class)."""
    if name in BACKBONES:
        raise ValueError(f"a backbone named {name!r} is registered already")
    BACKBONES[name] = backbone_class


def build_backbone(name: str, in_features: int, out_features: int, **kwargs: Any) -> EquivariantBackbone:
    """Construct the backbone called ``name`` (see :data:`BACKBONES`) with its keyword arguments."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
    return BACKBONES[name]()(in_features, out_features, **kwargs)


def backbone_argument_problem(name: str, kwargs: dict[str, Any]) -> str | None:
    """Why a backbone's keyword arguments cannot build a network, or None.

    Checked from the backbone's signature: a whole-number argument must be an integer of
    at least 1, a real one finite and above 0 (0 is allowed where the class lists the
    argument in ``ZERO_ALLOWED``), a switch true or false. Unknown arguments are left to the constructor's own
    error.
    """
    import inspect
    import math

    cls = BACKBONES[name]()
    params = inspect.signature(cls.__init__).parameters
    zero_allowed = getattr(cls, "ZERO_ALLOWED", ())
    for key, value in kwargs.items():
        if key not in params:
            continue
        annotation = params[key].annotation  # "int" under postponed annotations, else the type
        kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        least = 0 if key in zero_allowed else 1
        if kind == "bool" and not isinstance(value, bool):
            return f"{key} must be true or false, not {value!r}"
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            return f"{key} must be a whole number of at least {least}, not {value!r}"
        if kind == "float":
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or (value <= 0 if least else value < 0):
                bound = "0 or more" if least == 0 else "above 0"
                return f"{key} must be a finite number {bound}, not {value!r}"
    return None

"""Atomic, pickle-free checkpoints: write beside the target and rename; load with weights_only.

Every way a checkpoint can be unusable (missing, empty, truncated, another kind of
file, one holding Python objects besides weights, one written with another config or
another architecture) is one :class:`CheckpointError` naming the file and the way out.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from molguide.storage.files import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be loaded; the message names the file."""


MOVE_AWAY = "move it away (or delete it) to start afresh"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically.

    A crash mid-write leaves the previous checkpoint intact.
    """
    return atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (never unpickles arbitrary objects).

    Raises :class:`CheckpointError` with one line for a missing, empty, truncated or
    foreign file, and for one holding Python objects besides weights (which would have
    to be unpickled, i.e. could run code: molguide never does that).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty; {MOVE_AWAY}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (not a zip archive: truncated, or another kind of file); "
            f"{MOVE_AWAY}"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # Never pass on torch's advice to load with weights_only=False: that runs the file's code.
        raise CheckpointError(
            f"{path}: the checkpoint holds Python objects besides weights, which molguide never loads; "
            f"{MOVE_AWAY}"
        ) from None
    except (EOFError, KeyError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"{path}: the checkpoint is damaged ({type(err).__name__}); {MOVE_AWAY}"
        ) from None
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "PytorchStreamReader" in first or "zip archive" in first:
            raise CheckpointError(f"{path}: the checkpoint is damaged ({first}); {MOVE_AWAY}") from None
        # A sound file this process cannot load (a CUDA checkpoint without CUDA, memory).
        raise CheckpointError(f"{path}: cannot load the checkpoint here ({first[:200]})") from None
    if not isinstance(state, dict):
        what = type(state).__name__
        raise CheckpointError(f"{path}: holds a {what}, not a molguide checkpoint; {MOVE_AWAY}")
    return state


def _same(a: Any, b: Any) -> bool:
    # Numbers computed from the data (means, bin edges) may differ in the last bit between
    # machines or numpy builds: equal within 1e-9 is the same training.
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_differences(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    """``key (saved there, current now)`` for every dotted key whose value differs.

    Keys present on one side only are not compared: a setting added in a later version
    (or removed) says nothing about whether the run is the same one.
    """
    out = []
    for key in sorted(set(saved) & set(current), key=str):
        a, b = saved[key], current[key]
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, f"{name}.")
        elif not _same(a, b):
            out.append(f"{name} ({_short(a)} in the checkpoint, {_short(b)} now)")
    return out


def load_weights(module: torch.nn.Module, weights: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """``module.load_state_dict(weights)``, or one CheckpointError saying how the stored
    network differs (instead of torch's line per tensor)."""
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"{source}: holds no network weights; {MOVE_AWAY}")
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [k for k in own if k in weights and getattr(weights[k], "shape", None) != own[k].shape]
    if missing or unexpected or reshaped:
        parts = []
        if reshaped:
            k = reshaped[0]
            parts.append(
                f"{len(reshaped)} tensors differ in shape (e.g. {k} is {list(weights[k].shape)} there, "
                f"{list(own[k].shape)} here)"
            )
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"{source}: holds a network of another architecture ({'; '.join(parts)}); "
            f"use the config it was trained with, or {MOVE_AWAY}"
        )
    module.load_state_dict(weights)


def ema_weights(ema_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's weights in an EMA state dict (``AveragedModel``'s ``module.`` prefix and
    its counter removed)."""
    return {k.removeprefix("module."): v for k, v in ema_state.items() if k != "n_averaged"}

"""Atomic, pickle-free checkpoints: write beside the target and rename; load with weights_only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from molguide.atomic import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be loaded; the message names the file."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically.

    A crash mid-write leaves the previous checkpoint intact.
    """
    return atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (never unpickles arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(err).__name__}: {err})") from err

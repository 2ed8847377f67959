"""Checks a run makes before it computes anything: where it writes, what it runs on.

A setting the config schema accepts but this machine cannot honour (an ``output_dir``
that cannot be written, ``device=cuda`` without CUDA) is one :class:`PreflightError`
line naming the key, instead of a traceback after minutes of data preparation or
training. The tracking store has its own check (:func:`molguide.runs.tracking.check_tracking`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path


class PreflightError(ValueError):
    """A setting this machine cannot honour; the message names the key."""


def check_output_dir(output_dir: str | Path, key: str = "output_dir") -> Path:
    """Create ``output_dir`` if needed and prove a file can be written in it; errors name
    the setting ``key`` it came from."""
    folder = Path(output_dir)
    hint = f"choose another with --set {key}=FOLDER" if key == "output_dir" else "choose another"
    if folder.exists() and not folder.is_dir():
        raise PreflightError(f"{key}={output_dir}: is a file, not a folder; {hint}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".molguide-write-test-"):
            pass
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise PreflightError(f"{key}={output_dir}: cannot write there ({why}); {hint}") from None
    return folder


def check_device(device: str) -> None:
    """``device`` names a device torch knows and this machine has."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise PreflightError(f"device={device}: not a device name (use cpu, cuda or cuda:N)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise PreflightError(f"device={device}: CUDA is not available ({why}); use device=cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise PreflightError(f"device={device}: only {torch.cuda.device_count()} GPU(s) are visible")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise PreflightError(f"device={device}: MPS is not available on this machine; use device=cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise PreflightError(f"device={device}: molguide runs on cpu, cuda or mps")

"""Atomic file writes: write a temporary file beside the target, then rename over it (JSON too)."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(binary_file)`` on a temporary file and move it to ``path``.

    Readers see either the old file or the complete new one, never a half-written
    file; the result gets the usual permissions (0666 minus the umask). Ctrl-C and
    SIGTERM wait until the file is in place (an interrupt inside ``torch.save`` left its
    zip writer broken and the run failing instead of stopping cleanly).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with _signals_deferred():
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM received inside are delivered on leaving (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    kinds = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda sig, frame: received.append(sig)) for sig in kinds}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(received):
            signal.raise_signal(sig)


def write_json(path: str | Path, value: object) -> Path:
    """``value`` as indented JSON at ``path``, atomically (values JSON lacks become strings)."""
    text = json.dumps(value, indent=2, default=str).encode()
    return atomic_write(path, lambda fh: fh.write(text))


def read_json(path: str | Path) -> dict | None:
    """The JSON object at ``path``, or None when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def _plain(value: object) -> object:
    # Arrays and tensors as their values (not their abbreviated repr); anything else as text.
    return value.tolist() if hasattr(value, "tolist") else str(value)


def as_json(value: dict) -> dict:
    """A dict as it reads back from JSON (tuples and arrays become lists), so signatures
    compare equal."""
    return json.loads(json.dumps(value, default=_plain))

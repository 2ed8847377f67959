"""Atomic file writes: write a temporary file beside the target, then rename over it (JSON too)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class StorageError(RuntimeError):
    """A file could not be written (no space, quota, size limit); names the file and the cause."""


# Errors a full disk, a quota or a file-size limit give; torch's zip writer hides them behind
# "unexpected pos" (the OSError is its __context__), so the chain is searched.
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
_FULL[errno.EFBIG] = "file size limit exceeded"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(binary_file)`` on a temporary file and move it to ``path``.

    Readers see either the old file or the complete new one, never a half-written
    file. A file that exists keeps its permissions (a 0600 file stays private); a new
    one gets the usual ones (0666 minus the umask). A symbolic link is written through,
    as the shell's ``>`` does: its target gets the new content and the link stays.
    Ctrl-C and SIGTERM wait until the file is in place (an interrupt inside
    ``torch.save`` left its zip writer broken and the run failing instead of stopping
    cleanly). A full disk, a quota or a size limit is a :class:`StorageError` naming the
    file; the previous version is kept.
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with _signals_deferred():
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, _mode_for(path))
            os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        reason = _storage_failure(err, path.parent)
        if reason:
            message = f"{path}: could not be written ({reason}); any previous version is kept"
            raise StorageError(message) from err
        raise
    return path


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _storage_failure(err: BaseException, folder: Path) -> str | None:
    """What about the disk made ``err`` happen (None when it was something else)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return _FULL[seen.errno]
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, Exception):  # an error that hides its cause: look at the disk itself
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return None
        if free < 1 << 20:
            return f"no space left on device ({free} bytes free)"
    return None


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

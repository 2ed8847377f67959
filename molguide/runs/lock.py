"""One run per output folder: a lock file that names its holder.

Two pipelines writing one ``output_dir`` would overwrite each other's checkpoints and
samples (the later writer wins, silently). A pipeline therefore holds an exclusive
``flock`` on ``output_dir/.molguide.lock`` while it runs, and writes into the file who
holds it (host, pid, command, start time) so the second run's refusal can say so. The
kernel drops the lock when the holder's process ends in any way (kill -9 included), so
a lock file whose lock is free is stale: the next run takes it over and reports whose
it was. On a network file system the lock is shared when the file system shares locks
(NFS does); a folder on local disks of two machines that happen to share a path string
is two folders, not one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".molguide.lock"
log = logging.getLogger("molguide")


class FolderInUseError(RuntimeError):
    """Another live process holds the output folder; the message names it."""


@dataclass(frozen=True)
class Holder:
    """Who held (or holds) a folder's lock, as written in the lock file."""

    host: str
    pid: int
    command: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.since}: {self.command}"


def _read_holder(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        info = json.loads(raw.decode())
        return Holder(str(info["host"]), int(info["pid"]), str(info["command"]), str(info["since"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None  # empty (released cleanly) or not ours: nothing to report


def _write_holder(fd: int, holder: Holder | None) -> None:
    data = b"" if holder is None else json.dumps(holder.__dict__).encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)


def _try_write_holder(fd: int, holder: Holder | None) -> None:
    """Record the holder where the file allows: the lock itself is the flock, the text only
    names it, so a read-only lock file or a full disk must not stop (or hide) the run."""
    try:
        _write_holder(fd, holder)
    except OSError as err:
        log.warning("cannot record the holder in the lock file (%s)", err.strerror)


@contextmanager
def hold_output_dir(output_dir: str | Path, command: str | None = None) -> Iterator[Holder | None]:
    """Hold ``output_dir``'s lock while the block runs; yields the stale holder taken over
    (None when the folder was free). Raises :class:`FolderInUseError` when a live process
    holds it."""
    path = Path(output_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # a teammate's lock file in a shared folder: flock works read-only too
        fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            holder = _read_holder(fd)
            who = holder.describe() if holder else "another process"
            raise FolderInUseError(
                f"output_dir={output_dir} is in use by {who}; wait for it to finish, "
                "or choose another with --set output_dir=FOLDER"
            ) from None
        except OSError as err:  # a file system without locks (some FUSE mounts): run unguarded
            log.warning("cannot lock %s (%s): a second run here would go unnoticed", path, err.strerror)
            locked = False
        if not locked:
            yield None
            return
        stale = _read_holder(fd)
        me = Holder(
            socket.gethostname(),
            os.getpid(),
            command or " ".join(["molguide", *sys.argv[1:]]),
            time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        )
        _try_write_holder(fd, me)
        try:
            yield stale
        finally:
            _try_write_holder(fd, None)  # a clean end leaves no holder to report as stale
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

"""RDKit calls that can kill the process, run in a helper process that may die instead.

RDKit's extended-Hueckel bond perception (YAeHMOP, behind ``DetermineBonds(useHueckel=True)``)
ends the whole process on some inputs instead of raising: a segmentation fault on two atoms
in one place, an abort or ``exit()`` on elements it has no parameters for (uranium,
rutherfordium, oganesson). One such molecule would lose every other record of an
evaluation. So that call runs in one helper process, started on first need (about 0.3 s:
Python and RDKit) and kept for the next calls; a helper that dies or hangs costs the
molecule it was working on (an error naming the signal or the time) and is started again
for the next one.

The helper is this file run as a script: it imports only the standard library and RDKit,
not molguide, reads JSON requests from stdin and writes JSON replies to stdout (the
molecule as RDKit's own binary form, base64), each behind a mark and its length; nothing
is unpickled. Its stderr goes to /dev/null: the Hueckel code writes warnings
from C straight to file descriptor 2, where RDKit's logger cannot catch them.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence

# A request the helper has not answered in this time is given up (the helper is killed).
# DetermineBondOrders is bounded by its iteration limit; this only guards against a hang.
TIMEOUT_S = 120.0

# Each message: a 4-byte mark, then its length, then the JSON; a reply without the mark
# (something in the helper wrote to its stdout) ends the helper rather than the protocol.
_MARK = b"MGH1"
_HEADER = struct.Struct("<4sQ")


def determine_bonds(
    atomic_numbers: Sequence[int],
    positions: Sequence[Sequence[float]],
    use_hueckel: bool,
    max_iterations: int,
):
    """An RDKit Mol of the atoms with bonds and bond orders perceived from the coordinates
    (total charge 0); raises when they cannot be, or when the result does not sanitise.

    Imports only RDKit, so that the helper process can run it without molguide.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds
    from rdkit.Geometry import Point3D

    rw = Chem.RWMol()
    for z in atomic_numbers:
        atom = Chem.Atom(int(z))
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    conf = Chem.Conformer(len(atomic_numbers))
    conf.Set3D(True)
    for i, (x, y, z) in enumerate(positions):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
    mol = rw.GetMol()
    mol.AddConformer(conf, assignId=True)
    rdDetermineBonds.DetermineBonds(
        mol, useHueckel=use_hueckel, charge=0, embedChiral=False, maxIterations=max_iterations
    )
    # Connectivity that breaks valence rules (e.g. an over-long C-C taken as a bond,
    # giving pentavalent carbon) is a failure too: sanitise a copy to find out.
    Chem.SanitizeMol(Chem.Mol(mol))
    return mol


class HelperFailed(RuntimeError):
    """The helper process died or hung on a request; the message says how."""


def _died(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return f"crashed ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class _Helper:
    """One helper process per parent process, shared by threads (one request at a time)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._owner = 0  # pid that started it: a forked child must start its own
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self._owner = os.getpid()
        return self._proc

    def stop(self) -> None:
        """End the helper (it also ends by itself when this process's end of the pipe closes)."""
        proc, self._proc = self._proc, None
        if proc is None or self._owner != os.getpid():
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def call(self, request: tuple, timeout: float = TIMEOUT_S) -> object:
        """The helper's reply to ``request``; HelperFailed when it died or timed out."""
        with self._lock:
            proc = self._proc
            if proc is None or self._owner != os.getpid() or proc.poll() is not None:
                if self._owner == os.getpid():
                    self.stop()
                proc = self._start()
            data = json.dumps(request).encode()
            try:
                proc.stdin.write(_HEADER.pack(_MARK, len(data)) + data)
                proc.stdin.flush()
                mark, size = _HEADER.unpack(_read(proc.stdout.fileno(), _HEADER.size, timeout))
                if mark != _MARK:
                    raise EOFError("the helper wrote something else than a reply")
                return json.loads(_read(proc.stdout.fileno(), size, timeout))
            except (OSError, EOFError, TimeoutError, ValueError) as err:
                timed_out = isinstance(err, TimeoutError)
                self.stop()
                how = f"took longer than {timeout:g} s" if timed_out else _died(proc.returncode)
                raise HelperFailed(how) from None


def _read(fd: int, size: int, timeout: float) -> bytes:
    """Exactly ``size`` bytes from ``fd``: EOFError when it closes, TimeoutError when
    ``timeout`` seconds pass without data."""
    parts, left = [], size
    while left:
        poller = select.poll()  # not select(): it fails on descriptors numbered 1024 and up
        poller.register(fd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            raise TimeoutError
        part = os.read(fd, min(left, 1 << 20))
        if not part:
            raise EOFError
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


_HELPER = _Helper()
atexit.register(_HELPER.stop)


def determine_bonds_isolated(
    atomic_numbers: Sequence[int],
    positions: Sequence[Sequence[float]],
    use_hueckel: bool,
    max_iterations: int,
):
    """:func:`determine_bonds` in the helper process: the Mol, or ValueError with the
    reason RDKit gave; HelperFailed when RDKit took the helper down."""
    from rdkit import Chem

    request = ([int(z) for z in atomic_numbers], [list(map(float, p)) for p in positions],
               bool(use_hueckel), int(max_iterations))  # fmt: skip
    status, value = _HELPER.call(request)
    if status == "error":
        raise ValueError(value)
    return Chem.Mol(base64.b64decode(value))


def _serve() -> None:
    """The helper's loop: one reply per request until stdin closes."""
    stdin = sys.stdin.buffer
    # Replies go to a private copy of stdout; what C code prints to file descriptor 1
    # goes to /dev/null, so it cannot mix into a reply.
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        mark, size = _HEADER.unpack(header)
        if mark != _MARK:
            return
        atomic_numbers, positions, use_hueckel, max_iterations = json.loads(stdin.read(size))
        try:
            mol = determine_bonds(atomic_numbers, positions, use_hueckel, max_iterations)
            reply = ("ok", base64.b64encode(mol.ToBinary()).decode())
        except Exception as err:  # RDKit raises several types; the parent reports the text
            text = str(err).strip()
            reply = ("error", text.splitlines()[0] if text else type(err).__name__)
        data = json.dumps(reply).encode()
        stdout.write(_HEADER.pack(_MARK, len(data)) + data)
        stdout.flush()


if __name__ == "__main__":
    del sys.path[0]  # this file's folder: its modules must not shadow RDKit's imports
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")  # the parent reports the exception's text instead
    _serve()

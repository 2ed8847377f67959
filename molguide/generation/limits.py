"""How many molecules one call may ask for, the checks of a call's whole-number arguments,
and how error messages show a bad value (bounded, whatever its size).

Imports nothing heavy: the run configuration checks ``sample.n_samples`` and
``guide.n_samples`` against the same bound and estimate as ``Designer.generate``.

``generate(n)`` keeps every molecule it returns in memory (coordinates, types, the RDKit
molecule with its properties), so a call for 10**7 molecules would run for days and then
fail for want of memory. A call above :data:`MAX_SAMPLES` is refused unless the caller
raises the bound (``max_samples=`` in Python, ``<section>.max_samples`` in configs), and
any call whose estimated memory exceeds what this machine has free is refused outright.
"""

from __future__ import annotations

import numbers
import os
import reprlib

MAX_SAMPLES = 100_000  # molecules per call unless max_samples says otherwise
MAX_STEPS = 100_000  # sampler steps (the diffusion's own grid has at most this many)
# Memory a returned molecule holds: its tensors, the RDKit molecule with conformer and
# about 40 properties; measured at 3.8 kB of Python objects per molecule at peak, the
# C++ side (RDKit, torch) several times that: 20 kB keeps the estimate on the safe side.
BYTES_PER_MOLECULE = 20_000


def short(value: object, limit: int = 80) -> str:
    """``repr(value)`` built bounded (a huge or deeply nested value costs no more than a
    small one) and cut to ``limit`` characters: what error messages show of bad input."""
    shown = reprlib.Repr()  # keyword arguments only from Python 3.12
    shown.maxlevel, shown.maxlist, shown.maxdict, shown.maxstring, shown.maxother = 3, 6, 4, 60, 60
    text = shown.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def whole_number(name: str, value: object, least: int = 0, most: int | None = None) -> int:
    """``value`` as an int when it is a whole number (``numpy`` integers too, never a bool,
    a float or a string) in ``[least, most]``; else a ValueError naming ``name``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < least or (most is not None and value > most):
        bound = f"from {least} to {most:,}" if most is not None else f">= {least}"
        raise ValueError(f"{name} must be a whole number {bound}, got {short(value)}")
    return int(value)


def available_bytes() -> int | None:
    """Memory this machine has free now (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.3g} GB"


def check_sample_count(n: int, max_samples: int | None = MAX_SAMPLES, name: str = "n") -> None:
    """Refuse ``n`` molecules in one call: above ``max_samples`` (None: no bound) with the
    way to raise it, and whenever their estimated memory exceeds what is free here."""
    estimate = n * BYTES_PER_MOLECULE
    if max_samples is not None and n > max_samples:
        raise ValueError(
            f"{name}={n:,} molecules is more than max_samples={max_samples:,} in one call "
            f"(about {_gb(estimate)} of memory for the results); raise max_samples to go ahead, "
            "or generate in several calls"
        )
    free = available_bytes()
    if free is not None and estimate > free:
        raise ValueError(
            f"{name}={n:,} molecules need about {_gb(estimate)} of memory for the results, "
            f"this machine has {_gb(free)} free; generate in several calls"
        )

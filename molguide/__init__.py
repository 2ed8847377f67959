"""molguide: property-targeted 3D molecule generation with measured guidance.

Public API (``molguide.load``, ``molguide.evaluate``, ``molguide.write_sdf``,
``molguide.read``) loads lazily so that ``import molguide`` and the command line start fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Designer", "__version__", "evaluate", "load", "read", "relax", "write_sdf"]


def __getattr__(name: str):
    if name in ("evaluate", "read", "relax", "write_sdf"):
        from molguide import api

        return getattr(api, name)
    if name in ("load", "Designer"):
        from molguide.generation import designer

        return getattr(designer, name)
    raise AttributeError(f"module 'molguide' has no attribute {name!r}")

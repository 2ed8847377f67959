"""GFN2-xTB as a second judge of the protocol's rows (docs/protocol.md).

A learned evaluator can be fooled: guidance that pushes a molecule into a region where
the evaluator errs lowers the evaluator's MAE without moving the property. GFN2-xTB
computes gap, HOMO, LUMO and dipole from the coordinates by semi-empirical quantum
chemistry, so a row whose evaluator MAE falls while its xTB MAE does not is suspect.

xTB's values are shifted onto QM9's DFT values by the mean difference on real
generator-half molecules (:func:`molguide.chem.xtb.calibrate_to_dft`'s convention);
the "lower bound" of this judge is its MAE on the pairs' real molecules. Each set of
molecules is computed once and cached as JSON beside the samples.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from molguide.chem.xtb import XTB_PROPERTIES, xtb_properties
from molguide.data.molecules import Molecule
from molguide.storage.files import as_json, read_json, write_json

log = logging.getLogger(__name__)


def xtb_values(
    molecules: Sequence[Molecule | None], cache: Path, signature: dict, workers: int = 1
) -> list[dict[str, float] | None]:
    """xTB's properties of each molecule (None where it was lost or xTB failed), read from
    ``cache`` when it holds the same ``signature``, else computed and written there."""
    key = as_json({**signature, "n": len(molecules)})
    cached = read_json(cache)
    if cached is not None and cached.get("signature") == key:
        return [v if isinstance(v, dict) else None for v in cached["values"]]
    present = [k for k, m in enumerate(molecules) if m is not None]
    computed = xtb_properties([molecules[k] for k in present], workers=workers, progress=False)
    values: list[dict | str | None] = [None] * len(molecules)
    for k, v in zip(present, computed):
        values[k] = v
    failed = sum(isinstance(v, str) for v in values)
    if failed:
        log.info("xTB: %d of %d molecules of %s failed", failed, len(molecules), cache.stem)
    write_json(cache, {"signature": key, "values": values})
    return [v if isinstance(v, dict) else None for v in values]


def calibration_offset(values: Sequence[dict | None], dft: np.ndarray, prop: str) -> float:
    """The shift that maps xTB's ``prop`` onto DFT's: mean(DFT - xTB) over the molecules
    xTB succeeded on."""
    pairs = [(v[prop], y) for v, y in zip(values, dft) if v is not None]
    if not pairs:
        raise RuntimeError(f"xTB calibration for {prop}: GFN2-xTB failed on every molecule")
    x, y = np.array(pairs).T
    return float(np.mean(y - x))


def xtb_mae(
    values: Sequence[dict | None], targets: np.ndarray, prop: str, offset: float
) -> tuple[float, int]:
    """MAE of calibrated xTB against the targets over the molecules xTB judged, and how many."""
    if prop not in XTB_PROPERTIES:
        raise ValueError(f"xTB does not compute {prop}; it judges {', '.join(XTB_PROPERTIES)}")
    errors = [abs(v[prop] + offset - c) for v, c in zip(values, targets) if v is not None]
    return (float(np.mean(errors)) if errors else float("nan")), len(errors)

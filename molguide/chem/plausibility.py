"""PoseBusters' molecule checks (its ``mol`` config) on raw 3D molecules.

These are the plausibility checks that 3D-generation papers report beside EDM's metrics:
sanitisation, InChI conversion, one connected molecule, no radicals, bond lengths and
angles within bounds of distance geometry, no internal clashes, flat aromatic rings and
double bonds, non-flat saturated rings, and an internal energy not far above that of
conformers RDKit generates for the same molecule (Buttenschoen et al. 2024, PoseBusters).

Bonds are perceived from the coordinates (:func:`molguide.chem.reconstruct.rebuild_molecule`:
DetermineBonds with total charge 0, then the Hueckel fallback); a molecule whose bonds
cannot be perceived fails every check. The geometries are checked as they are: nothing
is relaxed here, so these are the raw samples' numbers.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from molguide.chem.reconstruct import rebuild_molecule
from molguide.data.molecules import Molecule

log = logging.getLogger(__name__)

# PoseBusters' columns for the "mol" config (posebusters 0.6), in its order.
CHECKS = (
    "mol_pred_loaded",
    "sanitization",
    "inchi_convertible",
    "all_atoms_connected",
    "no_radicals",
    "bond_lengths",
    "bond_angles",
    "internal_steric_clash",
    "aromatic_ring_flatness",
    "non-aromatic_ring_non-flatness",
    "double_bond_flatness",
    "internal_energy",
)
CHUNK = 100  # molecules per PoseBusters call


@dataclass
class PlausibilityReport:
    """Pass rates of PoseBusters' checks over every molecule given (failed perception and
    failed checks count as failures); ``passed[i][check]`` per molecule."""

    n: int
    pass_rates: dict[str, float]
    all_checks: float
    passed: list[dict[str, bool]] = field(repr=False, default_factory=list)

    def metrics(self, prefix: str = "pb_") -> dict[str, float]:
        """Flat metrics: ``pb_all`` and one ``pb_<check>`` per check."""
        out = {f"{prefix}all": self.all_checks}
        out.update({f"{prefix}{name.replace('-', '_')}": rate for name, rate in self.pass_rates.items()})
        return out


def _bust(mols: list) -> list[dict[str, bool]]:
    """PoseBusters' verdicts for RDKit molecules with bonds; a molecule it cannot judge fails."""
    import rdkit
    from posebusters import PoseBusters

    # PoseBusters points RDKit's log handler back at whatever sys.stderr was when it last
    # ran; if that stream has been closed since (a swapped stderr, pytest's capture), its
    # InChI check fails every molecule with "I/O operation on closed file". Assigned, not
    # setStream, which would flush the closed stream first.
    if getattr(rdkit, "log_handler", None) is not None:
        rdkit.log_handler.stream = sys.stderr
    buster = PoseBusters(config="mol")
    try:
        table = buster.bust(mols, None, None, full_report=False)
        rows = table.to_dict("records")
        if len(rows) == len(mols):
            return [{c: bool(row.get(c, False)) for c in CHECKS} for row in rows]
    except Exception as err:  # noqa: BLE001 - PoseBusters' own failure: judge one by one
        log.debug("PoseBusters failed on a chunk (%s); checking one by one", err)
    out = []
    for mol in mols:
        try:
            row = buster.bust([mol], None, None, full_report=False).to_dict("records")[0]
            out.append({c: bool(row.get(c, False)) for c in CHECKS})
        except Exception:  # noqa: BLE001 - a molecule PoseBusters cannot judge fails every check
            out.append(dict.fromkeys(CHECKS, False))
    return out


def posebusters_checks(molecules: Sequence[Molecule], progress: bool = False) -> PlausibilityReport:
    """PoseBusters' ``mol`` checks of raw ``molecules`` (see the module docstring)."""
    from tqdm.auto import tqdm

    from molguide.data.io import rdkit_messages

    passed: list[dict[str, bool] | None] = [None] * len(molecules)
    perceived: list[tuple[int, object]] = []
    for k, molecule in enumerate(molecules):
        rebuilt = rebuild_molecule(molecule)
        if rebuilt.mol is None:
            passed[k] = dict.fromkeys(CHECKS, False)
        else:
            perceived.append((k, rebuilt.mol))
    chunks = range(0, len(perceived), CHUNK)
    # PoseBusters logs a warning for every molecule whose reference conformers it cannot
    # embed (the energy check then fails that molecule): counted here, not printed.
    pb_logger = logging.getLogger("posebusters")
    level = pb_logger.level
    pb_logger.setLevel(logging.ERROR)
    try:
        for start in tqdm(chunks, desc="PoseBusters", unit="chunk", disable=not progress):
            part = perceived[start : start + CHUNK]
            with rdkit_messages():
                verdicts = _bust([mol for _, mol in part])
            for (k, _), verdict in zip(part, verdicts):
                passed[k] = verdict
    finally:
        pb_logger.setLevel(level)
    n = len(molecules)
    rates = {c: sum(p[c] for p in passed) / n for c in CHECKS} if n else dict.fromkeys(CHECKS, 0.0)
    all_checks = sum(all(p.values()) for p in passed) / n if n else 0.0
    return PlausibilityReport(n, rates, all_checks, passed)

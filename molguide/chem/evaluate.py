"""Chemistry metrics of a set of 3D molecules (EDM's protocol) plus property oracles.

Fractions are in [0, 1]:
- ``validity``: EDM's validity (validity.py): the molecule built from EDM's
  distance-table bonds, without charges, sanitises; over the molecules evaluated;
- ``validity_strict``: the molecule perceived from the coordinates (DetermineBonds,
  total charge 0) is one fragment, sanitises, has no charged atom, no radical and
  no missing hydrogen; over the molecules evaluated;
- ``atom_stability`` / ``mol_stability``: EDM's distance rule (stability.py), over
  all atoms / molecules evaluated that contain only H, C, N, O, F;
- ``uniqueness``: distinct EDM SMILES (largest fragment, hydrogens as generated)
  among the EDM-valid molecules, over valid (EDM's definition);
- ``novelty``: distinct valid molecules absent from the QM9 training split (built
  from the training geometries by the same EDM validity), over distinct; compared as
  heavy-atom canonical SMILES so that a user's own reference SMILES compare too
  (EDM compares its explicit-hydrogen strings);
- ``validity_strict_predicted_bonds`` (only for molecules that carry bond orders
  predicted by a generator's bond-order head): the same strict test on the molecule
  built from those bonds, without charges; over the molecules that carry them.
"""

from __future__ import annotations

import logging
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from molguide.chem.bond_orders import mol_from_orders
from molguide.chem.descriptors import rdkit_descriptors, structural_alerts
from molguide.chem.reconstruct import rebuild_molecule
from molguide.chem.smiles import canonical_smiles, canonicalise
from molguide.chem.stability import atom_stability, bond_orders, elements_without_bond_table
from molguide.chem.validity import StrictCheck, edm_validity, strict_check
from molguide.data.io import RecordError, add_bond_orders, closest_pair, coincident_atoms, rdkit_messages
from molguide.data.molecules import Molecule

log = logging.getLogger(__name__)

METRIC_NAMES = ("validity", "validity_strict", "atom_stability", "mol_stability", "uniqueness", "novelty")
PREDICTED_BONDS_METRIC = "validity_strict_predicted_bonds"


@dataclass
class MoleculeResult:
    """Per-molecule outcome: what the metrics were computed from."""

    name: str
    valid: bool  # EDM validity
    smiles: str | None  # canonical SMILES of the perceived molecule (None if it does not sanitise)
    bond_method: str | None
    n_atoms: int
    n_stable_atoms: int | None  # None when stability is undefined (unsupported element)
    mol_stable: bool | None
    properties: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    mol: object | None = None  # RDKit Mol with bonds and conformer, when bonds were assigned
    edm_smiles: str | None = None  # EDM's largest-fragment SMILES, when EDM-valid
    valid_strict: bool = False
    strict: StrictCheck | None = None
    predicted_mol: object | None = None  # built from a bond-order head's bonds, when given
    predicted_strict: StrictCheck | None = None
    predicted_smiles: str | None = None
    table_bonds: bool = False  # EDM's distance table covers its atoms (bonds to write without perception)
    alerts: list[str] = field(default_factory=list)  # PAINS and Brenk alerts matched (chem.descriptors)


@dataclass
class Evaluation:
    """Aggregate metrics, per-molecule results and per-record errors of one evaluation."""

    metrics: dict[str, float | None]
    molecules: list[MoleculeResult]
    errors: list[dict]
    n_input: int
    property_summary: dict[str, dict[str, float]]

    def to_dict(self) -> dict:
        """The JSON shape of ``molguide evaluate --json`` (metric names of docs/protocol.md)."""
        return {
            **self.metrics,
            "n_input": self.n_input,
            "n_evaluated": len(self.molecules),
            "errors": self.errors,
            "properties": self.property_summary,
        }


def _largest_fragment(mol):
    from rdkit import Chem

    fragments = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    return max(fragments, key=lambda f: f.GetNumAtoms())


def evaluate_molecule(molecule: Molecule, descriptors: bool = True) -> MoleculeResult:
    """EDM validity and stability, strict validity, SMILES and RDKit descriptors of one molecule."""
    from rdkit import Chem

    result = MoleculeResult(
        name=molecule.name,
        valid=False,
        smiles=None,
        bond_method=None,
        n_atoms=molecule.num_atoms,
        n_stable_atoms=None,
        mol_stable=None,
    )
    missing = elements_without_bond_table(molecule.atomic_numbers.tolist())
    # Two atoms in one place: EDM's distance rule would bond them (a hydrogen on its oxygen
    # counts as stable and valid), which no chemist would; here they are neither.
    pair = closest_pair(molecule.positions) if np.isfinite(molecule.positions).all() else None
    if not missing:
        stable = atom_stability(molecule.atomic_numbers, molecule.positions)
        if pair is not None:
            stable[list(pair[:2])] = False
        result.table_bonds = pair is None and bool(np.isfinite(molecule.positions).all())
        result.n_stable_atoms = int(stable.sum())
        result.mol_stable = bool(stable.all())
        if pair is None:
            edm = edm_validity(molecule.atomic_numbers, molecule.positions)
            result.valid, result.edm_smiles = edm.valid, edm.smiles
            if edm.reason:
                result.notes.append(f"EDM-invalid: {edm.reason}")
        else:
            result.notes.append(
                "EDM-invalid: " + (coincident_atoms(molecule.atomic_numbers, molecule.positions) or "")
            )
    else:
        missing = ", ".join(missing)
        result.notes.append(f"stability and EDM validity undefined: no EDM bond table for {missing}")
    if molecule.bond_orders is not None:
        _judge_predicted_bonds(molecule, result)
    rebuilt = rebuild_molecule(molecule)
    result.bond_method = rebuilt.method
    if rebuilt.mol is None:
        result.notes.append(rebuilt.reason or "bond perception failed")
        result.strict = strict_check(None)
        return result
    result.mol = rebuilt.mol
    result.strict = strict_check(rebuilt.mol)
    result.valid_strict = result.strict.valid
    if result.strict.reason:
        result.notes.append(f"not strictly valid: {result.strict.reason}")
    sanitised = Chem.Mol(rebuilt.mol)
    with rdkit_messages():
        try:
            Chem.SanitizeMol(sanitised)
        except (ValueError, RuntimeError):
            return result
    result.smiles = canonical_smiles(sanitised)
    if descriptors:
        fragment = _largest_fragment(sanitised)
        try:
            Chem.SanitizeMol(fragment)
            result.properties.update(rdkit_descriptors(fragment))
            counts, result.alerts = structural_alerts(Chem.RemoveHs(fragment))  # SMARTS assume implicit H
            result.properties.update(counts)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            result.notes.append(f"descriptors failed: {err}")
    return result


def _judge_predicted_bonds(molecule: Molecule, result: MoleculeResult) -> None:
    """Strict validity (and SMILES) of the molecule built from its predicted bond orders."""
    from rdkit import Chem

    result.predicted_mol = mol_from_orders(molecule, molecule.bond_orders)
    result.predicted_strict = strict_check(result.predicted_mol)
    if result.predicted_strict.reason:
        result.notes.append(f"predicted bonds not strictly valid: {result.predicted_strict.reason}")
    if result.predicted_strict.valid:
        sanitised = Chem.Mol(result.predicted_mol)
        with rdkit_messages():
            Chem.SanitizeMol(sanitised)
        result.predicted_smiles = canonical_smiles(sanitised)


def _summary(values: Iterable[float]) -> dict[str, float]:
    vals = [v for v in values if v == v]  # drop NaN
    if not vals:
        return {"n": 0}
    return {
        "n": len(vals),
        "mean": statistics.fmean(vals),
        "median": statistics.median(vals),
        "std": statistics.pstdev(vals),
        "min": min(vals),
        "max": max(vals),
    }


def evaluate(
    molecules: Sequence[Molecule],
    reference_smiles: Iterable[str] | None = None,
    descriptors: bool = True,
    xtb: bool = False,
    xtb_workers: int | None = None,
    xtb_timeout_s: float = 60.0,
    read_errors: Sequence[RecordError] = (),
    progress: bool | None = None,
) -> Evaluation:
    """Evaluate molecules: validity, EDM stability, uniqueness, novelty, property oracles.

    ``reference_smiles`` are canonical SMILES for novelty (default: the QM9 training
    split; pass an empty list to skip novelty). ``read_errors`` from a file reader are
    counted in ``n_input`` and listed in ``errors`` so no input disappears unreported.
    """
    from tqdm.auto import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    results = [
        evaluate_molecule(m, descriptors)
        for m in tqdm(molecules, desc="evaluate", unit="mol", disable=not progress)
    ]
    errors = [e.as_dict() for e in read_errors]
    for k, r in enumerate(results, start=1):
        if r.n_stable_atoms is None:
            errors.append({"record": k, "name": r.name, "reason": "; ".join(r.notes)})

    if xtb:
        from molguide.chem.xtb import xtb_properties

        chosen = [k for k, r in enumerate(results) if r.valid]
        outputs = xtb_properties([molecules[k] for k in chosen], xtb_workers, xtb_timeout_s, progress)
        for k, out in zip(chosen, outputs):
            if isinstance(out, str):
                results[k].notes.append(out)
                errors.append({"record": k + 1, "name": results[k].name, "reason": out})
            else:
                results[k].properties.update({f"xtb_{key}": v for key, v in out.items()})

    n = len(results)
    judged = [r for r in results if r.n_stable_atoms is not None]  # H, C, N, O, F only
    valid = [r for r in judged if r.valid]
    unique = {r.edm_smiles for r in valid}
    metrics: dict[str, float | None] = {
        "validity": len(valid) / len(judged) if judged else None,
        "validity_strict": sum(r.valid_strict for r in results) / n if n else None,
        "atom_stability": (
            sum(r.n_stable_atoms for r in judged) / sum(r.n_atoms for r in judged) if judged else None
        ),
        "mol_stability": sum(r.mol_stable for r in judged) / len(judged) if judged else None,
        "uniqueness": len(unique) / len(valid) if valid else None,
        "novelty": None,
    }
    predicted = [r.predicted_strict.valid for r in results if r.predicted_strict is not None]
    if predicted:
        metrics[PREDICTED_BONDS_METRIC] = sum(predicted) / len(predicted)
    if reference_smiles is None:
        from molguide.chem.smiles import qm9_training_smiles

        reference_smiles = qm9_training_smiles()
    reference = reference_smiles if isinstance(reference_smiles, (set, frozenset)) else set(reference_smiles)
    if reference and unique:
        distinct = {canonicalise(smiles) for smiles in unique}
        metrics["novelty"] = len(distinct - reference) / len(distinct)
    keys = sorted({k for r in results for k in r.properties})
    summary = {k: _summary(r.properties.get(k, float("nan")) for r in results) for k in keys}
    return Evaluation(metrics, results, errors, n + len(read_errors), summary)


def missing_hydrogens_warning(evaluation: Evaluation, molecules: Sequence[Molecule]) -> str | None:
    """One line when evaluated molecules hold no hydrogen atom and are not strictly valid
    (a file written without hydrogens: EDM's validity fills them in, strict validity does
    not, so the two disagree), naming how many; None when there are none."""
    lacking = sum(
        1
        for molecule, result in zip(molecules, evaluation.molecules)
        if not (molecule.atomic_numbers == 1).any() and not result.valid_strict
    )
    if not lacking:
        return None
    return (
        f"warning: {lacking} of {len(evaluation.molecules)} records evaluated have no hydrogen atoms: "
        "EDM's validity fills in missing hydrogens, strict validity counts them as missing, so "
        "validity and validity_strict disagree; evaluate molecules with explicit hydrogens "
        "(e.g. RDKit's Chem.AddHs(mol, addCoords=True))"
    )


def over_requested(
    metrics: Mapping[str, float | None],
    present: Sequence[Molecule],
    n_requested: int,
    requested_atoms: int | None = None,
) -> dict[str, float | None]:
    """Metrics of the ``present`` samples turned into fractions of all ``n_requested``:
    a lost sample (diverged while sampling) counts as invalid and unstable.

    Validities and molecule stability are scaled by present / requested, atom stability
    by present atoms / ``requested_atoms`` (the atoms of every requested sample; None:
    not known, left as measured). Uniqueness and novelty stay fractions of the valid
    molecules, as EDM counts them; ``valid_unique`` is validity x uniqueness and
    ``sample_failures`` the number lost.
    """
    out = dict(metrics)
    if n_requested < len(present):
        raise ValueError(f"{len(present)} samples present but only {n_requested} requested")
    scale = len(present) / n_requested if n_requested else 0.0
    for key in ("validity", "validity_strict", "mol_stability", PREDICTED_BONDS_METRIC):
        if key in out:
            out[key] = (out[key] or 0.0) * scale
    if requested_atoms:
        atoms = sum(m.num_atoms for m in present)
        out["atom_stability"] = (out.get("atom_stability") or 0.0) * (atoms / requested_atoms)
    out["valid_unique"] = out["validity"] * (out.get("uniqueness") or 0.0)
    out["sample_failures"] = float(n_requested - len(present))
    return out


def annotated_mols(evaluation: Evaluation, molecules: Sequence[Molecule]) -> list:
    """RDKit Mols (3D conformer; perceived bonds where bonds were assigned) carrying the
    molecule's properties and the per-molecule results as properties (SD tags when
    written): ``valid`` (EDM), ``valid_strict``, ``charged_atoms``,
    ``radical_electrons``, ``fragments``, ``missing_h`` (what strict validity looked
    at; a charged or radical molecule says so here), ``mol_stable``,
    ``atom_stable_fraction``, ``smiles`` (perceived molecule), ``edm_smiles``, oracle
    values and ``notes``.

    A molecule that carries bond orders from a generator's bond-order head is returned
    with those bonds (``bonds`` = "predicted"; ``valid_strict_predicted_bonds`` and
    ``smiles_predicted_bonds`` judge them); otherwise with the perceived ones
    (``bonds`` = "perceived"); where perception with total charge 0 failed, with the
    bonds of EDM's distance table, the ones EDM validity judged (``bonds`` = "edm_table");
    "none" only where that table does not cover the atoms or two atoms coincide."""
    out = []
    for molecule, result in zip(molecules, evaluation.molecules):
        mol = _mol_with_bonds(molecule, result)
        if molecule.name:
            mol.SetProp("_Name", molecule.name)
        for key, value in molecule.tags.items():
            mol.SetProp(key, value)
        for key, value in molecule.properties.items():
            mol.SetProp(key, repr(float(value)))
        for key, value in result_tags(result).items():
            mol.SetProp(key, value)
        out.append(mol)
    return out


def _mol_with_bonds(molecule: Molecule, result: MoleculeResult):
    """A fresh RDKit Mol of the molecule: predicted bonds, else perceived ones, else none."""
    from rdkit import Chem

    from molguide.data.io import molecule_to_rdkit

    if result.predicted_mol is not None:
        return Chem.Mol(result.predicted_mol)
    if result.mol is not None:
        return Chem.Mol(result.mol)
    mol = molecule_to_rdkit(Molecule(molecule.atomic_numbers, molecule.positions))
    if not result.table_bonds:
        return mol
    table = Chem.RWMol(mol)
    add_bond_orders(table, bond_orders(molecule.atomic_numbers, molecule.positions))
    return table.GetMol()


def _bond_source(result: MoleculeResult) -> str:
    """Where a written molecule's bonds come from (the ``bonds`` tag)."""
    if result.predicted_mol is not None:
        return "predicted"
    if result.mol is not None:
        return "perceived"
    return "edm_table" if result.table_bonds else "none"


def result_tags(result: MoleculeResult) -> dict[str, str]:
    """One molecule's results as SD tag values, named as :func:`annotated_mols` lists."""
    tags = {"bonds": _bond_source(result)}
    if result.predicted_strict is not None:
        tags["valid_strict_predicted_bonds"] = str(int(result.predicted_strict.valid))
    if result.predicted_smiles:
        tags["smiles_predicted_bonds"] = result.predicted_smiles
    tags["valid"] = str(int(result.valid))
    tags["valid_strict"] = str(int(result.valid_strict))
    if result.strict is not None and result.mol is not None:
        tags["charged_atoms"] = str(result.strict.n_charged_atoms)
        tags["radical_electrons"] = str(result.strict.n_radical_electrons)
        tags["fragments"] = str(result.strict.n_fragments)
        tags["missing_h"] = str(result.strict.n_implicit_h)
    if result.mol_stable is not None:
        tags["mol_stable"] = str(int(result.mol_stable))
        tags["atom_stable_fraction"] = repr(result.n_stable_atoms / result.n_atoms)
    if result.smiles:
        tags["smiles"] = result.smiles
    if result.edm_smiles:
        tags["edm_smiles"] = result.edm_smiles
    for key, value in result.properties.items():
        tags[key] = repr(float(value))
    if result.alerts:
        tags["structural_alerts"] = "; ".join(result.alerts)
    if result.notes:
        tags["notes"] = "; ".join(result.notes)
    return tags


RESULT_TAG_PREFIX = "molguide_"


def evaluated_records(
    evaluation: Evaluation, molecules: Sequence[Molecule], unread: Sequence[RecordError] = ()
) -> list[str]:
    """The SDF record texts of a user's file with the results added, in the file's order.

    A molecule read from an SDF keeps its record exactly (atoms, bond table, every SD
    tag); any other gets its bonds as :func:`annotated_mols` chooses and its own
    properties. The results are added as ``molguide_<name>`` tags (the names of
    :func:`result_tags`), so they never overwrite a tag of the input; the
    ``molguide_`` tags of an earlier evaluation are replaced. A record that could not
    be read (``unread``, the reader's errors) is kept as it was too, with
    ``molguide_error`` saying why, so nothing of the input is lost.
    """
    from molguide.data.io import mol_block, with_data_items

    numbered = []
    for k, (molecule, result) in enumerate(zip(molecules, evaluation.molecules), start=1):
        if molecule.source is None:
            mol = _mol_with_bonds(molecule, result)
            mol.SetProp("_Name", molecule.name)
            own = {**molecule.tags, **{key: repr(float(v)) for key, v in molecule.properties.items()}}
            number, text = k, with_data_items(mol_block(mol), own)
        else:
            number, text = molecule.source.record, molecule.source.text
        tags = {RESULT_TAG_PREFIX + key: v for key, v in result_tags(result).items()}
        numbered.append((number, with_data_items(text, tags, replace_prefix=RESULT_TAG_PREFIX)))
    for error in unread:
        if error.text is not None:
            tags = {f"{RESULT_TAG_PREFIX}error": error.reason}
            numbered.append(
                (error.record, with_data_items(error.text, tags, replace_prefix=RESULT_TAG_PREFIX))
            )
    return [text for _, text in sorted(numbered, key=lambda item: item[0])]


def write_evaluated_sdf(
    evaluation: Evaluation,
    molecules: Sequence[Molecule],
    path,
    source=None,
    unread: Sequence[RecordError] = (),
) -> int:
    """Write :func:`evaluated_records` to ``path`` atomically, and beside it the results
    as CSV (``<stem>.csv``: one row per molecule with the tags of :func:`annotated_mols`,
    then a row per unread record with its ``error``); returns the count.

    ``source``: the file the molecules were read from, which is never written over.
    """
    from rdkit import Chem

    from molguide.data.io import csv_beside, write_csv, write_sdf_records

    check_evaluated_sdf_path(path, source)
    count = write_sdf_records(evaluated_records(evaluation, molecules, unread), path)
    rows = annotated_mols(evaluation, molecules)
    for error in unread:
        row = Chem.Mol()
        row.SetProp("_Name", f"record {error.record}")
        row.SetProp("error", error.reason)
        rows.append(row)
    write_csv(rows, csv_beside(path))
    return count


def check_evaluated_sdf_path(path, source=None) -> None:
    """A MoleculeFileError when ``path`` cannot take :func:`write_evaluated_sdf`'s output:
    it or the CSV beside it is the input file ``source`` (also through a link), it is a
    folder, or it names a CSV (which the table beside it would write over)."""
    from pathlib import Path

    from molguide.data.io import MoleculeFileError, csv_beside, same_file

    for target in (path, csv_beside(path)):
        if source is not None and same_file(target, source):
            raise MoleculeFileError(f"{target}: is the input file; write the results to another file")
    if Path(path).is_dir():
        raise MoleculeFileError(f"{path}: is a folder; name the SDF file to write")
    if Path(path).suffix.lower() == ".csv":
        raise MoleculeFileError(f"{path}: name the SDF file to write (its CSV table goes beside it)")


def write_annotated_sdf(evaluation: Evaluation, molecules: Sequence[Molecule], path) -> int:
    """SDF of evaluated molecules with the properties of :func:`annotated_mols` as SD tags,
    and the same table as CSV beside it (``<stem>.csv``); returns the count."""
    from molguide.data.io import csv_beside, write_csv, write_sdf

    mols = annotated_mols(evaluation, molecules)
    count = write_sdf(mols, path)
    write_csv(mols, csv_beside(path))
    return count

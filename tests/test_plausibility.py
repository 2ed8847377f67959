"""PoseBusters' molecule checks on raw geometries: real molecules pass, broken ones fail."""

import numpy as np

from molguide.chem.plausibility import CHECKS, posebusters_checks
from molguide.data.molecules import Molecule


def test_real_molecules_pass_and_broken_geometries_fail_by_name(qm9):
    real = [qm9[k] for k in (1000, 2000)]  # two QM9 molecules with rings and heteroatoms
    clash = Molecule(real[0].atomic_numbers, real[0].positions.copy())
    clash.positions[1] = clash.positions[0] + np.array([0.35, 0.0, 0.0])  # two atoms 0.35 A apart
    far = Molecule(real[1].atomic_numbers, real[1].positions.copy())
    far.positions[0] += np.array([25.0, 0.0, 0.0])  # one atom far from the rest
    report = posebusters_checks([*real, clash, far])
    assert report.n == 4
    assert all(report.passed[k][c] for k in (0, 1) for c in CHECKS), report.passed[:2]
    assert not all(report.passed[2].values()) and not all(report.passed[3].values())
    assert not report.passed[3]["all_atoms_connected"] or not report.passed[3]["mol_pred_loaded"]
    assert report.all_checks == 0.5
    assert report.metrics()["pb_all"] == 0.5
    assert set(report.metrics()) == {"pb_all", *(f"pb_{c.replace('-', '_')}" for c in CHECKS)}


def test_a_molecule_without_perceivable_bonds_fails_every_check():
    lone = Molecule(np.array([6, 6]), np.array([[0.0, 0.0, 0.0], [30.0, 0.0, 0.0]]))
    report = posebusters_checks([lone])
    assert report.all_checks == 0.0 and not any(report.passed[0].values())

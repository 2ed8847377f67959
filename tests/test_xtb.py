import numpy as np

from molguide.chem.xtb import xtb_properties
from molguide.data import Molecule


def test_xtb_gap_tracks_dft_on_qm9(qm9):
    idx = np.random.default_rng(7).choice(len(qm9), 100, replace=False)
    sub = qm9.subset(idx)
    out = xtb_properties(list(sub), workers=2)
    assert all(isinstance(o, dict) for o in out), [o for o in out if isinstance(o, str)]
    gap = np.array([o["gap_eV"] for o in out])
    r = np.corrcoef(gap, sub.properties["gap_eV"])[0, 1]
    assert r >= 0.85
    assert -2.5 < np.mean(gap - sub.properties["gap_eV"]) < -1.0  # xTB ~1.9 eV lower
    mu = np.array([o["mu_D"] for o in out])
    assert np.corrcoef(mu, sub.properties["mu_D"])[0, 1] >= 0.95
    for o in out:
        assert o["gap_eV"] == np.float64(o["lumo_eV"] - o["homo_eV"])


def test_a_failing_molecule_is_reported_and_the_rest_go_on(qm9):
    overlapping = Molecule(np.array([6, 6, 1]), np.zeros((3, 3)), name="overlap")
    out = xtb_properties([qm9[10], overlapping, qm9[11]], workers=2)
    assert isinstance(out[0], dict) and isinstance(out[2], dict)
    assert isinstance(out[1], str) and "xTB" in out[1]


def test_time_limit_kills_a_slow_molecule_and_the_rest_go_on(qm9):
    methane = qm9[0]
    grid = np.array([[i, j, k] for i in range(5) for j in range(5) for k in range(5)]) * 4.0
    cluster = Molecule(  # 625 atoms: about 18 s of xTB here, far past the limit
        np.tile(methane.atomic_numbers, len(grid)),
        (methane.positions[None] + grid[:, None]).reshape(-1, 3),
        name="cluster",
    )
    out = xtb_properties([cluster, qm9[1]], workers=1, timeout_s=1.0)
    assert isinstance(out[0], str) and "time limit of 1 s" in out[0]
    assert isinstance(out[1], dict) and out[1]["gap_eV"] > 0


def test_the_xtb_workers_import_no_torch():
    """Each worker process imports molguide.chem.xtb; torch would add about a second to every
    (re)start, which a killed worker's replacement spends inside the next molecule's time limit."""
    import subprocess
    import sys

    code = "import sys, molguide.chem.xtb; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

import json
import logging
import os
import time

import numpy as np
import pytest

from molguide.data import PROPERTY_UNITS, edm_splits, load_qm9
from molguide.data.elements import HARTREE_TO_EV
from molguide.data.qm9 import CACHE_FILE, CACHE_FORMAT, NUM_MOLECULES


def test_all_molecules_with_named_units(qm9):
    assert len(qm9) == NUM_MOLECULES == 130_831
    assert set(np.unique(qm9.atomic_numbers)) == {1, 6, 7, 8, 9}
    assert qm9.num_atoms.max() == 29 and qm9.num_atoms.min() == 3
    assert abs(qm9.num_atoms.mean() - 18.0) < 0.1
    for name in ("gap_eV", "homo_eV", "lumo_eV", "mu_D", "alpha_bohr3", "cv_calmolK"):
        assert name in qm9.properties and name in PROPERTY_UNITS
        assert np.isfinite(qm9.properties[name]).all()
    # Methane (GDB 1) from the qm9pack CSV: gap 0.5048 Ha, HOMO -0.3877 Ha.
    assert qm9.names[0] == "gdb_1" and qm9.smiles[0] == "C"
    assert qm9.properties["gap_eV"][0] == pytest.approx(0.5048 * HARTREE_TO_EV, rel=1e-12)
    assert qm9.properties["homo_eV"][0] == pytest.approx(-0.3877 * HARTREE_TO_EV, rel=1e-12)
    assert qm9.properties["alpha_bohr3"][0] == pytest.approx(13.21)
    gap = qm9.properties["lumo_eV"] - qm9.properties["homo_eV"]
    np.testing.assert_allclose(gap, qm9.properties["gap_eV"], atol=1.5e-4 * HARTREE_TO_EV)  # 4-decimal Ha


def test_cache_is_reused(qm9, molguide_cache):
    path = molguide_cache / CACHE_FILE.format(fmt=CACHE_FORMAT)
    mtime = path.stat().st_mtime_ns
    again = load_qm9()
    assert path.stat().st_mtime_ns == mtime  # not rebuilt
    np.testing.assert_array_equal(again.positions, qm9.positions)
    np.testing.assert_array_equal(again.offsets, qm9.offsets)


def _corrupt_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_flip_bytes(path):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    path.write_bytes(bytes(data))


def _make_stale(path):
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    fp = json.loads(str(arrays["fingerprint"]))
    fp["qm9pack"] = "0.0.1"
    arrays["fingerprint"] = np.array(json.dumps(fp, sort_keys=True))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.mark.parametrize("damage", [_corrupt_truncate, _corrupt_flip_bytes, _make_stale])
def test_bad_cache_is_detected_and_rebuilt(qm9, molguide_cache, tmp_path, caplog, damage):
    path = molguide_cache / CACHE_FILE.format(fmt=CACHE_FORMAT)
    own = tmp_path / path.name
    own.write_bytes(path.read_bytes())
    damage(own)
    with caplog.at_level(logging.WARNING, logger="molguide.data.qm9"):
        rebuilt = load_qm9(tmp_path)
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert len(rebuilt) == len(qm9)
    np.testing.assert_array_equal(rebuilt.atomic_numbers, qm9.atomic_numbers)
    # The rebuilt cache is good again: loads without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="molguide.data.qm9"):
        load_qm9(tmp_path)
    assert not caplog.records
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temp files left


def test_edm_splits_sizes_and_halves():
    splits = edm_splits()
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 100_000,
        "valid": 17_748,
        "test": 13_083,
        "evaluator_half": 50_000,
        "generator_half": 50_000,
    }
    allidx = np.concatenate([splits["train"], splits["valid"], splits["test"]])
    assert np.array_equal(np.sort(allidx), np.arange(130_831))
    halves = np.concatenate([splits["evaluator_half"], splits["generator_half"]])
    assert np.array_equal(halves, splits["train"])
    assert not set(splits["evaluator_half"]) & set(splits["generator_half"])
    # Fixed seed: the same permutation every time, and EDM's (legacy seed-0 RandomState).
    again = edm_splits()
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    assert np.array_equal(splits["train"][:5], np.random.RandomState(0).permutation(130_831)[:5])


def test_remove_hydrogens_keeps_heavy_atoms(qm9):
    sub = qm9.subset(np.arange(100))
    heavy = sub.without_hydrogens()
    assert len(heavy) == 100
    assert (heavy.atomic_numbers != 1).all()
    for i in (0, 17, 99):
        keep = sub[i].atomic_numbers != 1
        np.testing.assert_array_equal(heavy[i].atomic_numbers, sub[i].atomic_numbers[keep])
        np.testing.assert_allclose(heavy[i].positions, sub[i].positions[keep])
    assert heavy.properties["gap_eV"][5] == sub.properties["gap_eV"][5]


def test_subset_gathers_the_right_molecules(qm9):
    idx = np.array([130_830, 0, 5, 5, 77_777])
    sub = qm9.subset(idx)
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(sub[k].atomic_numbers, qm9[int(i)].atomic_numbers)
        np.testing.assert_array_equal(sub[k].positions, qm9[int(i)].positions)
        assert sub[k].properties == qm9[int(i)].properties
        assert sub.names[k] == qm9.names[i]


def test_cache_load_is_fast_enough_to_be_usable(qm9):
    # A sanity bound, not the speed target (that is benchmarks/data.py): a broken
    # cache path that reparses the CSVs would take ~7 s.
    t0 = time.perf_counter()
    load_qm9()
    assert time.perf_counter() - t0 < 5.0

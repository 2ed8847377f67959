"""Shared fixtures: a session-wide QM9 cache built from the real qm9pack wheel."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch_geometric")


@pytest.fixture(scope="session", autouse=True)
def molguide_cache(tmp_path_factory):
    """Point MOLGUIDE_CACHE at a fresh folder so every test session builds the cache itself."""
    cache = tmp_path_factory.mktemp("molguide_cache")
    old = os.environ.get("MOLGUIDE_CACHE")
    os.environ["MOLGUIDE_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("MOLGUIDE_CACHE", None)
    else:
        os.environ["MOLGUIDE_CACHE"] = old


@pytest.fixture(scope="session")
def qm9(molguide_cache):
    from molguide.data import load_qm9

    return load_qm9()


@pytest.fixture(scope="session")
def reference_smiles(qm9):
    from molguide.chem.smiles import qm9_training_smiles

    return qm9_training_smiles()


@pytest.fixture(scope="session")
def random_qm9_indices(qm9):
    """2,000 random QM9 molecules (seed 0), the sample EDM's data row is quoted on."""
    return np.random.default_rng(0).choice(len(qm9), 2000, replace=False)

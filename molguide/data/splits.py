"""EDM's QM9 split protocol, so that numbers compare with the published ones.

Molecules in GDB-index order are permuted with ``numpy.random.seed(0)``-style
legacy seeding (``RandomState(0).permutation``); the first 100,000 are train,
the next 17,748 validation, the last 13,083 test (10% of 130,831, rounded down).
The training split is then cut in two halves of 50,000 in permutation order:
the first half trains the property evaluator (EDM's ``qm9_first_half``), the
second half the generator and the guidance classifiers (``qm9_second_half``).
"""

from __future__ import annotations

import numpy as np

EDM_SPLIT_SEED = 0
EDM_TRAIN_SIZE = 100_000


def edm_splits(num_molecules: int = 130_831, seed: int = EDM_SPLIT_SEED) -> dict[str, np.ndarray]:
    """Index arrays for train/valid/test and the two training halves (EDM protocol)."""
    if num_molecules <= EDM_TRAIN_SIZE:
        raise ValueError(f"EDM's split needs more than {EDM_TRAIN_SIZE} molecules")
    perm = np.random.RandomState(seed).permutation(num_molecules)
    n_test = int(0.1 * num_molecules)
    n_valid = num_molecules - EDM_TRAIN_SIZE - n_test
    train = perm[:EDM_TRAIN_SIZE]
    half = EDM_TRAIN_SIZE // 2
    return {
        "train": train,
        "valid": perm[EDM_TRAIN_SIZE : EDM_TRAIN_SIZE + n_valid],
        "test": perm[EDM_TRAIN_SIZE + n_valid :],
        "evaluator_half": train[:half],
        "generator_half": train[half:],
    }

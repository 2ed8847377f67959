"""Data splits: EDM's QM9 protocol, so that numbers compare with the published ones, and
grouped splits (random by record, or by scaffold) for a user's own molecules.

In EDM's protocol, molecules in GDB-index order are permuted with ``numpy.random.seed(0)``-style
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


def _split_groups(
    order: np.ndarray, sizes: np.ndarray, fractions: tuple[float, float, float]
) -> dict[str, np.ndarray]:
    """Assign whole groups, in ``order``, to train until it holds its share of the
    molecules, then to valid, then to test; each split lists its groups' ids."""
    total = float(sizes.sum())
    train_quota, valid_quota = fractions[0] * total, (fractions[0] + fractions[1]) * total
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    filled = 0.0
    for group in order:
        # A group goes where the running total stands *before* it: the splits stay near their
        # shares without a large group being pushed into a small split.
        name = "train" if filled < train_quota else "valid" if filled < valid_quota else "test"
        parts[name].append(int(group))
        filled += sizes[group]
    return {name: np.asarray(ids, dtype=np.int64) for name, ids in parts.items()}


def group_splits(
    groups: np.ndarray,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    large_first: bool = False,
    molecules: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Molecule indices per split when molecules come in groups that must stay together.

    ``groups[i]`` is molecule i's group: its molecule (conformers of one molecule stay
    together) for a random split, its Bemis-Murcko scaffold for a scaffold split. Groups are
    shuffled with ``seed`` and fill train, valid and test to their ``fractions`` of the
    molecules; with ``large_first`` (scaffold splits, as chemprop's balanced split) the groups
    larger than half the validation share go first, so they land in train and valid/test hold
    many small scaffolds. ``train`` is then cut in two halves, ``evaluator_half`` and
    ``generator_half`` (EDM's protocol, see :func:`edm_splits`), keeping each of
    ``molecules`` (default: ``groups``) together: both halves train, so a scaffold may be in
    both. Raises ValueError when a split would be empty.
    """
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    _, group_of, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(sizes))
    if large_first:
        big = sizes[order] > fractions[1] * len(groups) / 2
        order = np.concatenate([order[big], order[~big]])
    by_group = _split_groups(order, sizes, fractions)
    out = {name: np.flatnonzero(np.isin(group_of, ids)) for name, ids in by_group.items()}
    train = out["train"]
    own = np.asarray(groups if molecules is None else molecules)[train]
    _, own_of, own_sizes = np.unique(own, return_inverse=True, return_counts=True)
    halves = _split_groups(rng.permutation(len(own_sizes)), own_sizes, (0.5, 0.5, 0.0))
    out["evaluator_half"] = train[np.isin(own_of, halves["train"])]
    out["generator_half"] = train[np.isin(own_of, halves["valid"])]
    for name, idx in out.items():
        if len(idx) == 0:
            raise ValueError(
                f"{len(groups)} molecules in {len(sizes)} groups are too few for split fractions "
                f"{list(fractions)}: split {name!r} would be empty"
            )
    return out

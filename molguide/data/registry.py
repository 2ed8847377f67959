"""The data sets molguide trains on, by name: how each is loaded, split and which properties it has.

A data set is one :class:`Dataset` entry in :data:`DATASETS`; ``data.dataset`` in a
config names it, ``target.property`` and ``protocol.properties`` must be among its
``targets``. To add one: write its loader (a function returning a
:class:`~molguide.data.molecules.MoleculeSet` with per-molecule properties) and
register it with :func:`register_dataset`; its splits must include ``train``,
``valid``, ``generator_half`` and ``evaluator_half``. Elements beyond EDM's QM9 table
(H, C, N, O, F) bring their bond lengths and valences in the same entry, so EDM's
stability and validity are defined for its molecules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from molguide.chem.smiles import qm9_training_smiles
from molguide.chem.stability import register_bond_table
from molguide.data.elements import QM9_ATOMIC_NUMBERS
from molguide.data.molecules import MoleculeSet
from molguide.data.qm9 import PROPERTIES as QM9_PROPERTIES
from molguide.data.qm9 import PropertySpec, load_qm9
from molguide.data.splits import edm_splits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """One data set: its loader, its split protocol and its properties.

    ``targets`` are the properties guidance and EDM's protocol can aim at (QM9: the six
    of EDM's conditional table); ``atom_types`` the atomic numbers of the networks'
    atom-type channels, in order; ``training_smiles`` the canonical SMILES that novelty
    is measured against (the generator's training molecules). ``bond_lengths_pm`` and
    ``valences`` extend EDM's stability tables to elements QM9 lacks (see
    :func:`molguide.chem.stability.register_bond_table`; e.g. ``{("C", "Cl"): (177,)}``
    and ``{"Cl": 1, "P": (3, 5)}``).
    """

    name: str
    load: Callable[[], MoleculeSet]
    splits: Callable[[int], dict[str, np.ndarray]]
    properties: tuple[PropertySpec, ...]
    targets: tuple[str, ...]
    atom_types: tuple[int, ...]
    training_smiles: Callable[[], frozenset[str]]
    bond_lengths_pm: Mapping[tuple[str, str], Sequence[float]] = field(default_factory=dict)
    valences: Mapping[str, int | Sequence[int]] = field(default_factory=dict)


DATASETS: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> Dataset:
    """Make ``dataset`` available by its name (configs validate ``data.dataset`` against these)."""
    if dataset.name in DATASETS:
        raise ValueError(f"a data set named {dataset.name!r} is registered already")
    unknown = set(dataset.targets) - {p.name for p in dataset.properties}
    if unknown:
        raise ValueError(f"data set {dataset.name!r}: targets {sorted(unknown)} are not among its properties")
    try:
        register_bond_table(dataset.bond_lengths_pm, dataset.valences)
    except ValueError as error:
        raise ValueError(f"data set {dataset.name!r}: {error}") from None
    DATASETS[dataset.name] = dataset
    return dataset


register_dataset(
    Dataset(
        "qm9",
        load_qm9,
        edm_splits,
        QM9_PROPERTIES,
        ("gap_eV", "homo_eV", "lumo_eV", "mu_D", "alpha_bohr3", "cv_calmolK"),
        QM9_ATOMIC_NUMBERS,
        qm9_training_smiles,
    )
)


def target_properties() -> tuple[str, ...]:
    """Every registered data set's target properties, in registration order, each once."""
    return tuple(dict.fromkeys(p for d in DATASETS.values() for p in d.targets))


def get_dataset(name: str) -> Dataset:
    """The registered data set ``name``; unknown names list the known ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {list(DATASETS)}")
    return DATASETS[name]


def dataset_of(data) -> Dataset:
    """The data set a config's ``data`` section names: a user's file (``data.path``, see
    :mod:`molguide.data.user_files`) or a registered one (``data.dataset``)."""
    if getattr(data, "path", None):
        from molguide.data.user_files import FileDataSpec, file_dataset

        return file_dataset(FileDataSpec.from_config(data))
    return get_dataset(data.dataset)


def dataset_label(data) -> str:
    """How runs name a config's data set: the registered name, or the user file's name."""
    path = getattr(data, "path", None)
    return Path(path).name if path else data.dataset


def split_molecules(
    data, split: str | None = None, limit: int | None = None, labelled: str | None = None
) -> MoleculeSet:
    """Molecules of one split of a config's data set (``data``: the config's ``data`` section).

    ``split`` defaults to ``data.split``, ``limit`` (the first N of the split) to
    ``data.max_molecules``; hydrogens are removed with ``data.remove_hydrogens``. With
    ``labelled`` (a property), only molecules that have a value of it are taken (a user's
    file may lack it for some; how many is logged), before the limit.
    """
    dataset = dataset_of(data)
    molecules = dataset.load()
    splits = dataset.splits(len(molecules))
    name = split or data.split
    if name not in splits:
        raise ValueError(f"data set {dataset.name!r} has no split {name!r}; it has {list(splits)}")
    idx = splits[name]
    if labelled is not None:
        if labelled not in molecules.properties:
            have = ", ".join(molecules.properties) or "none"
            raise ValueError(f"data set {dataset.name!r} has no property {labelled!r} (it has: {have})")
        has_value = np.isfinite(molecules.properties[labelled][idx])
        if not has_value.all():
            log.info(
                "%s: %d of %d molecules of split %s have a value of %s; the %d others are left out",
                dataset.name,
                int(has_value.sum()),
                len(idx),
                name,
                labelled,
                int((~has_value).sum()),
            )
        idx = idx[has_value]
        if len(idx) == 0:
            raise ValueError(f"data set {dataset.name!r}: no molecule of split {name!r} has {labelled}")
    limit = limit if limit is not None else data.max_molecules
    if limit:
        idx = idx[:limit]
    mols = molecules.subset(idx)
    return mols.without_hydrogens() if data.remove_hydrogens else mols


def describe_split(data, split: str | None = None, limit: int | None = None) -> str:
    """Where :func:`split_molecules` takes its molecules from, in words (a data set's
    ``source`` in MLflow): ``qm9:generator_half[:20000]``, ``-H`` without hydrogens."""
    name = split or data.split
    limit = limit if limit is not None else data.max_molecules
    text = f"{dataset_label(data)}:{name}" + (f"[:{limit}]" if limit else "")
    return text + ("-H" if data.remove_hydrogens else "")

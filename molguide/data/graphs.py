"""PyTorch Geometric views of molecules: featurisation, batching, fully connected edges.

Edges are built in plain torch per molecule (``pyg-lib``'s ``radius_graph`` is not
available for this torch), from the batch vector alone, so models can build them
on the fly for any batch of mixed sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from molguide.data.bonds import BondTable
from molguide.data.elements import QM9_ATOMIC_NUMBERS
from molguide.data.molecules import MoleculeSet

# Inverse lookup: atomic number -> one-hot column (-1 = not a known type).
_MAX_Z = 128


def type_index_table(atom_types: Sequence[int] = QM9_ATOMIC_NUMBERS) -> torch.Tensor:
    """Lookup tensor mapping atomic number to its column in the atom-type one-hot."""
    table = torch.full((_MAX_Z,), -1, dtype=torch.long)
    table[torch.as_tensor(list(atom_types))] = torch.arange(len(atom_types))
    return table


def fully_connected_edges(batch: torch.Tensor, self_loops: bool = False) -> torch.Tensor:
    """All ordered pairs (i, j), i != j, within each molecule of a batch vector.

    ``batch`` maps nodes to molecules and must be sorted (as PyG batches are).
    Returns ``edge_index`` of shape (2, sum n_m (n_m - 1)), source row first.
    """
    if batch.numel() == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=batch.device)
    counts = torch.bincount(batch)
    starts = torch.cumsum(counts, 0) - counts
    # Every node i pairs with all n_m nodes of its molecule; then drop i == j.
    node_counts = counts[batch]
    src = torch.repeat_interleave(torch.arange(batch.numel(), device=batch.device), node_counts)
    local = torch.arange(src.numel(), device=batch.device) - torch.repeat_interleave(
        torch.cumsum(node_counts, 0) - node_counts, node_counts
    )
    dst = starts[batch[src]] + local
    if not self_loops:
        keep = src != dst
        src, dst = src[keep], dst[keep]
    return torch.stack([src, dst])


def molecule_to_data(
    atomic_numbers: np.ndarray,
    positions: np.ndarray,
    properties: dict[str, float] | None = None,
    atom_types: Sequence[int] = QM9_ATOMIC_NUMBERS,
    property_names: Sequence[str] | None = None,
) -> Data:
    """One molecule as a PyG ``Data``: ``pos``, ``z``, one-hot ``x``, ``charges``, ``y``.

    ``y`` has shape (1, P) with the properties in ``property_names`` order (NaN when absent).
    """
    z = torch.as_tensor(np.asarray(atomic_numbers), dtype=torch.long)
    table = type_index_table(atom_types)
    cols = table[z.clamp(0, _MAX_Z - 1)]
    if (cols < 0).any() or (z >= _MAX_Z).any():
        unknown = sorted(set(z[cols < 0].tolist()))
        raise ValueError(f"atomic numbers {unknown} are not among the model's types {list(atom_types)}")
    x = torch.nn.functional.one_hot(cols, len(atom_types)).float()
    names = list(property_names if property_names is not None else (properties or {}).keys())
    y = torch.tensor([[float((properties or {}).get(k, float("nan"))) for k in names]])
    return Data(
        pos=torch.as_tensor(np.asarray(positions), dtype=torch.float32),
        z=z,
        x=x,
        charges=z.float().unsqueeze(-1),
        y=y,
        num_nodes=len(z),
    )


class MoleculeGraphDataset(torch.utils.data.Dataset):
    """A MoleculeSet served as PyG ``Data`` objects; batch with ``torch_geometric.loader.DataLoader``."""

    def __init__(
        self,
        molecules: MoleculeSet,
        property_names: Sequence[str] | None = None,
        atom_types: Sequence[int] = QM9_ATOMIC_NUMBERS,
    ) -> None:
        self.molecules = molecules
        self.property_names = list(property_names if property_names is not None else molecules.properties)
        self.atom_types = tuple(atom_types)
        unknown = set(np.unique(molecules.atomic_numbers).tolist()) - set(self.atom_types)
        if unknown:
            raise ValueError(
                f"molecules contain atomic numbers {sorted(unknown)} outside the types "
                f"{list(self.atom_types)}"
            )
        missing = [k for k in self.property_names if k not in molecules.properties]
        if missing:
            raise KeyError(f"properties {missing} not in the data (have {list(molecules.properties)})")

    def __len__(self) -> int:
        return len(self.molecules)

    def __getitem__(self, i: int) -> Data:
        a, b = self.molecules.offsets[i], self.molecules.offsets[i + 1]
        props = {k: self.molecules.properties[k][i] for k in self.property_names}
        data = molecule_to_data(
            self.molecules.atomic_numbers[a:b],
            self.molecules.positions[a:b],
            props,
            self.atom_types,
            self.property_names,
        )
        data.idx = torch.tensor([i])
        return data


def collate_molecules(
    molecules: MoleculeSet,
    indices: np.ndarray,
    atom_types: Sequence[int] = QM9_ATOMIC_NUMBERS,
    property_names: Sequence[str] = (),
) -> dict[str, torch.Tensor]:
    """A training batch straight from CSR arrays (no per-molecule Data objects).

    Returns ``pos`` (N, 3) float32, ``onehot`` (N, K), ``batch`` (N,), ``num_graphs``
    (0-d), ``y`` (B, P) and ``idx`` (B,). Equivalent to PyG batching of
    :class:`MoleculeGraphDataset` items, several times faster for small molecules.
    """
    sub = molecules.subset(indices)
    table = type_index_table(atom_types)
    cols = table[torch.as_tensor(sub.atomic_numbers.astype(np.int64))]
    if (cols < 0).any():
        raise ValueError(f"atomic numbers outside the types {list(atom_types)} in this batch")
    counts = torch.as_tensor(sub.num_atoms)
    y = (
        np.stack([sub.properties[k] for k in property_names], 1)
        if property_names
        else np.zeros((len(sub), 0))
    )
    return {
        "pos": torch.as_tensor(sub.positions),
        "onehot": torch.nn.functional.one_hot(cols, len(atom_types)).float(),
        "batch": torch.repeat_interleave(torch.arange(len(sub)), counts),
        "num_graphs": torch.tensor(len(sub)),
        "y": torch.as_tensor(y, dtype=torch.float32),
        "idx": torch.as_tensor(np.asarray(indices, dtype=np.int64)),
    }


class MoleculeBatches:
    """A training batch source over a :class:`MoleculeSet` (for :class:`molguide.training.trainer.Trainer`).

    ``extras`` are per-molecule arrays (labels, sample weights, conditions) that are
    indexed with the molecules and returned under their own keys. ``bonds`` (one row
    per molecule) adds ``bond_orders`` and ``bond_mask`` over the batch's fully
    connected edges (training a bond-order head).
    """

    def __init__(
        self,
        molecules: MoleculeSet,
        property_names: Sequence[str] = (),
        atom_types: Sequence[int] = QM9_ATOMIC_NUMBERS,
        bonds: BondTable | None = None,
        **extras: np.ndarray | torch.Tensor,
    ) -> None:
        for key, values in extras.items():
            if len(values) != len(molecules):
                raise ValueError(f"extra {key!r} has {len(values)} entries for {len(molecules)} molecules")
        if bonds is not None and len(bonds) != len(molecules):
            raise ValueError(f"bond table has {len(bonds)} rows for {len(molecules)} molecules")
        self.molecules = molecules
        self.bonds = bonds
        self.property_names = tuple(property_names)
        self.atom_types = tuple(atom_types)
        self.extras = {k: torch.as_tensor(v) for k, v in extras.items()}

    def __len__(self) -> int:
        return len(self.molecules)

    def __call__(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        batch = collate_molecules(self.molecules, indices, self.atom_types, self.property_names)
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        batch.update({k: v[idx] for k, v in self.extras.items()})
        if self.bonds is not None:
            batch["bond_orders"], batch["bond_mask"] = self.bonds.edge_labels(indices)
        return batch

    def num_nodes(self, indices: np.ndarray) -> np.ndarray:
        """Atom count of each molecule in ``indices`` (how data-parallel runs split the atoms)."""
        return np.asarray(self.molecules.num_atoms)[np.asarray(indices, dtype=np.int64)]

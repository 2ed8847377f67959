"""Bond orders of many molecules, packed for training a bond-order head.

Every molecule i with n_i atoms owns an n_i x n_i block of bond orders (0 none,
1 single, 2 double, 3 triple; Kekule form), stored flat; ``labelled[i]`` is False
where no trustworthy orders exist (perception failed or needed charges), and such
a molecule contributes no bond loss. The blocks are read out in the edge order of
:func:`molguide.data.graphs.fully_connected_edges` (source major, every other atom
of the molecule as target), so a batch's labels line up with the network's edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where labels are served: evaluation must stay light
    import torch

BOND_CLASSES = 4  # none, single, double, triple


@dataclass
class BondTable:
    """Per-molecule bond-order blocks (CSR over squares) and which molecules have labels."""

    orders: np.ndarray  # (sum n_i^2,) int8
    offsets: np.ndarray  # (M + 1,) int64, offsets[i + 1] - offsets[i] = n_i^2
    labelled: np.ndarray  # (M,) bool

    def __post_init__(self) -> None:
        self.orders = np.asarray(self.orders, dtype=np.int8)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.labelled = np.asarray(self.labelled, dtype=bool)
        if len(self.offsets) != len(self.labelled) + 1 or self.offsets[-1] != len(self.orders):
            raise ValueError(
                f"bond table: {len(self.labelled)} molecules, {len(self.offsets)} offsets ending at "
                f"{self.offsets[-1] if len(self.offsets) else None}, {len(self.orders)} orders"
            )
        if self.orders.size and (self.orders.min() < 0 or self.orders.max() >= BOND_CLASSES):
            raise ValueError(f"bond orders must lie in 0..{BOND_CLASSES - 1}")

    def __len__(self) -> int:
        return len(self.labelled)

    @classmethod
    def from_blocks(cls, blocks: Sequence[np.ndarray | None], num_atoms: Sequence[int]) -> BondTable:
        """Pack n x n order matrices; None marks a molecule without labels (stored as zeros)."""
        sizes = np.asarray(num_atoms, dtype=np.int64)
        if len(blocks) != len(sizes):
            raise ValueError(f"{len(blocks)} bond blocks for {len(sizes)} molecules")
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes * sizes, out=offsets[1:])
        orders = np.zeros(offsets[-1], dtype=np.int8)
        labelled = np.zeros(len(sizes), dtype=bool)
        for i, (block, n) in enumerate(zip(blocks, sizes.tolist())):
            if block is None:
                continue
            block = np.asarray(block)
            if block.shape != (n, n) or not np.array_equal(block, block.T):
                raise ValueError(f"molecule {i}: bond orders must be a symmetric {n}x{n} matrix")
            orders[offsets[i] : offsets[i + 1]] = block.reshape(-1)
            labelled[i] = True
        return cls(orders, offsets, labelled)

    def block(self, i: int) -> np.ndarray:
        """The n x n bond-order matrix of molecule i."""
        flat = self.orders[self.offsets[i] : self.offsets[i + 1]]
        n = int(round(np.sqrt(len(flat))))
        return flat.reshape(n, n)

    def edge_labels(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(orders, mask) for every ordered pair i != j of the molecules at ``indices``, in the
        edge order of ``fully_connected_edges`` on their batch; mask is False for unlabelled molecules."""
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        sizes = np.rint(np.sqrt(np.diff(self.offsets)[idx])).astype(np.int64)
        # One gather over the flat blocks (no loop over molecules: this runs every training
        # step): row-major positions of each block with its diagonal (every (n+1)-th) left out.
        counts = sizes * (sizes - 1)
        mol = np.repeat(np.arange(len(idx)), counts)
        local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        n = sizes[mol]
        row, col = local // (n - 1), local % (n - 1)
        col = col + (col >= row)  # skip the diagonal entry of each row
        flat = self.offsets[idx][mol] + row * n + col
        orders = self.orders[flat].astype(np.int64)
        return torch.as_tensor(orders), torch.as_tensor(self.labelled[idx][mol])

    def save(self, path) -> None:
        """Write as npz (atomically: a crash never leaves half a file)."""
        from molguide.storage.files import atomic_write

        atomic_write(
            path,
            lambda fh: np.savez_compressed(
                fh, orders=self.orders, offsets=self.offsets, labelled=self.labelled
            ),
        )

    @classmethod
    def load(cls, path) -> BondTable:
        with np.load(path) as data:
            return cls(data["orders"], data["offsets"], data["labelled"])

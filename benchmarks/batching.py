"""Batching speed: PyTorch Geometric's ``Batch.from_data_list`` against molguide's
``MoleculeBatches``, side by side; prints one JSON object (and writes it with --out).

    python benchmarks/batching.py [--batch-size 64] [--rounds 5] [--out benchmarks/results/batching.json]

Both build the same training batch (positions, one-hot atom types, the batch vector)
of ``--batch-size`` random generator-half QM9 molecules: PyG from per-molecule ``Data``
objects (:class:`molguide.data.graphs.MoleculeGraphDataset`), molguide by slicing the
packed arrays of the whole split. The rounds interleave the two so that machine load
hits both alike; the ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=50, help="batches per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from torch_geometric.data import Batch

    from molguide.data import edm_splits, load_qm9
    from molguide.data.graphs import MoleculeBatches, MoleculeGraphDataset

    qm9 = load_qm9()
    mols = qm9.subset(edm_splits(len(qm9))["generator_half"])
    dataset, batches = MoleculeGraphDataset(mols), MoleculeBatches(mols)
    rng = np.random.default_rng(0)
    picks = [rng.choice(len(mols), args.batch_size, replace=False) for _ in range(args.batches)]
    # Both give the same batch (checked once): same positions, types and batch vector.
    ours, pyg = batches(picks[0]), Batch.from_data_list([dataset[int(i)] for i in picks[0]])
    assert torch.equal(ours["batch"], pyg.batch) and torch.allclose(ours["pos"], pyg.pos)

    def pyg_round() -> float:
        t0 = time.perf_counter()
        for idx in picks:
            Batch.from_data_list([dataset[int(i)] for i in idx])
        return (time.perf_counter() - t0) / len(picks)

    def ours_round() -> float:
        t0 = time.perf_counter()
        for idx in picks:
            batches(idx)
        return (time.perf_counter() - t0) / len(picks)

    rounds = [(pyg_round(), ours_round()) for _ in range(args.rounds)]
    result = {
        "machine": machine(torch.device("cpu")),
        "batch_size": args.batch_size,
        "pyg_batch_ms": round(1000 * statistics.median(p for p, _ in rounds), 3),
        "molguide_batch_ms": round(1000 * statistics.median(o for _, o in rounds), 3),
        "pyg_over_molguide_median_ratio": round(statistics.median(p / o for p, o in rounds), 1),
        "rounds": args.rounds,
    }
    write_report(result, args.out)


if __name__ == "__main__":
    main()

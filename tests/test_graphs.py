import numpy as np
import torch
from torch_geometric.loader import DataLoader

from molguide.data.graphs import MoleculeGraphDataset, fully_connected_edges, molecule_to_data


def test_fully_connected_edges_stay_inside_each_molecule():
    counts = torch.tensor([3, 1, 5, 2])
    batch = torch.repeat_interleave(torch.arange(4), counts)
    edges = fully_connected_edges(batch)
    assert edges.shape == (2, int((counts * (counts - 1)).sum()))
    assert (batch[edges[0]] == batch[edges[1]]).all()
    assert (edges[0] != edges[1]).all()
    pairs = {tuple(e) for e in edges.T.tolist()}
    assert len(pairs) == edges.shape[1]  # no duplicates
    # Every ordered pair within molecule 2 (nodes 4..8) is present.
    assert all((i, j) in pairs for i in range(4, 9) for j in range(4, 9) if i != j)
    with_loops = fully_connected_edges(batch, self_loops=True)
    assert with_loops.shape[1] == int((counts**2).sum())


def test_pyg_batching_of_qm9(qm9):
    sub = qm9.subset(np.arange(10, 74))
    ds = MoleculeGraphDataset(sub, property_names=["gap_eV", "mu_D"])
    batch = next(iter(DataLoader(ds, batch_size=64, shuffle=False)))
    assert batch.num_graphs == 64
    assert batch.pos.shape == (int(sub.num_atoms.sum()), 3)
    assert batch.x.shape[1] == 5 and torch.all(batch.x.sum(1) == 1)
    assert batch.y.shape == (64, 2)
    assert torch.allclose(batch.y[:, 0].double(), torch.tensor(sub.properties["gap_eV"]), atol=1e-5)
    # One-hot column order is H, C, N, O, F.
    z_from_onehot = torch.tensor([1, 6, 7, 8, 9])[batch.x.argmax(1)]
    assert torch.equal(z_from_onehot, batch.z)
    assert torch.equal(batch.charges.squeeze(-1).long(), batch.z)
    edges = fully_connected_edges(batch.batch)
    assert edges.shape[1] == int((sub.num_atoms * (sub.num_atoms - 1)).sum())


def test_unknown_atom_type_is_a_clear_error():
    try:
        molecule_to_data(np.array([6, 16]), np.zeros((2, 3)))
    except ValueError as err:
        assert "16" in str(err)
    else:
        raise AssertionError("sulfur is not a QM9 type and must be rejected")

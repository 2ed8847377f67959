"""The bond-order head: labels from perceived DFT geometries, their packing in the
network's edge order, the head's invariance, its training, and the molecules built
from its predictions."""

import numpy as np
import pytest
import torch

from molguide.chem.bond_orders import (
    bond_table,
    cached_bond_table,
    mol_from_orders,
    orders_of_mol,
    perceived_orders,
)
from molguide.chem.evaluate import PREDICTED_BONDS_METRIC, annotated_mols, evaluate
from molguide.chem.validity import strict_check
from molguide.data.bonds import BOND_CLASSES, BondTable
from molguide.data.geometry import remove_mean
from molguide.data.graphs import MoleculeBatches, collate_molecules, fully_connected_edges
from molguide.diffusion.objective import DiffusionTrainer, TrainConfig
from molguide.diffusion.process import VPDiffusion
from molguide.diffusion.sampling import sample
from molguide.models import ScoreNetwork
from molguide.models.build import build_score_model
from tests.equivariance import random_orthogonal

VALENCE = {1: 1, 6: 4, 7: 3, 8: 2, 9: 1}
BOND_MODEL = {
    "backbone": "egnn",
    "backbone_kwargs": {"hidden": 32, "num_layers": 2, "coords_range": 3.75},
    "parameterisation": "x0",
    "bond_head": True,
}
DIFFUSION = {"schedule": "polynomial_2", "steps": 1000, "precision": 1e-5, "loss": {"time_power": 2.0}}


@pytest.fixture(scope="module")
def labelled(qm9):
    mols = qm9.subset(np.arange(1000, 1064))
    table, reasons = bond_table(mols)
    return mols, table, reasons


def test_labels_are_kekule_orders_that_fill_every_valence(labelled):
    mols, table, reasons = labelled
    assert table.labelled.sum() + sum(reasons.values()) == len(mols)
    assert table.labelled.mean() > 0.95
    for i in np.flatnonzero(table.labelled):
        block = table.block(int(i))
        assert np.array_equal(block, block.T) and not np.diag(block).any()
        z = mols[int(i)].atomic_numbers
        assert block.sum(1).tolist() == [VALENCE[int(a)] for a in z]


def test_a_molecule_rebuilt_from_its_labels_is_the_perceived_molecule(labelled):
    from rdkit import Chem

    mols, table, _ = labelled
    for i in np.flatnonzero(table.labelled)[:10]:
        molecule = mols[int(i)]
        rebuilt = mol_from_orders(molecule, table.block(int(i)))
        assert strict_check(rebuilt).valid
        orders, _ = perceived_orders(molecule)
        assert np.array_equal(orders_of_mol(Chem.Mol(rebuilt)), orders)


def test_benzene_gets_alternating_single_and_double_bonds():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("c1ccccc1"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    orders = orders_of_mol(mol)
    ring = orders[:6, :6]
    assert sorted(ring[np.triu_indices(6, 1)][ring[np.triu_indices(6, 1)] > 0].tolist()) == [1, 1, 1, 2, 2, 2]


def test_edge_labels_follow_the_fully_connected_edge_order(labelled):
    mols, table, _ = labelled
    idx = np.array([5, 0, 17])
    orders, mask = table.edge_labels(idx)
    batch = collate_molecules(mols, idx)
    edges = fully_connected_edges(batch["batch"])
    assert orders.shape == mask.shape == (edges.shape[1],)
    starts = np.concatenate([[0], np.cumsum(mols.num_atoms[idx])[:-1]])
    mol_of = batch["batch"][edges[0]].numpy()
    for k in range(edges.shape[1]):
        m = mol_of[k]
        i, j = int(edges[0, k]) - starts[m], int(edges[1, k]) - starts[m]
        assert orders[k] == table.block(int(idx[m]))[i, j]
    # An unlabelled molecule's pairs are masked out, the others kept.
    table.labelled[0] = False
    _, mask = table.edge_labels(idx)
    table.labelled[0] = True
    assert not mask[torch.as_tensor(mol_of == 1)].any() and mask[torch.as_tensor(mol_of != 1)].all()


def test_bond_table_round_trips_and_rejects_bad_blocks(tmp_path, labelled):
    mols, table, _ = labelled
    table.save(tmp_path / "b.npz")
    back = BondTable.load(tmp_path / "b.npz")
    assert np.array_equal(back.orders, table.orders) and np.array_equal(back.labelled, table.labelled)
    with pytest.raises(ValueError, match="symmetric 2x2"):
        BondTable.from_blocks([np.array([[0, 1], [0, 0]])], [2])


def test_the_label_cache_is_keyed_by_the_molecules(tmp_path, qm9):
    a, b = qm9.subset(np.arange(20)), qm9.subset(np.arange(20, 40))
    first = cached_bond_table(a, tmp_path)
    assert len(list(tmp_path.glob("bond_labels_*.npz"))) == 1
    again = cached_bond_table(a, tmp_path)
    assert np.array_equal(first.orders, again.orders)
    other = cached_bond_table(b, tmp_path)  # other molecules: their own file
    assert len(list(tmp_path.glob("bond_labels_*.npz"))) == 2
    assert np.array_equal(other.orders, bond_table(b)[0].orders)


@pytest.mark.parametrize("det_sign", [1.0, -1.0])
def test_bond_logits_are_invariant_and_symmetric(det_sign):
    torch.manual_seed(0)
    net = ScoreNetwork(parameterisation="x0", bond_head=True, self_condition=True, hidden=16, num_layers=2)
    net = net.double()
    g = torch.Generator().manual_seed(2)
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([5, 4]))
    x = remove_mean(torch.randn(9, 3, generator=g, dtype=torch.float64), batch)
    h = torch.randn(9, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.6], dtype=torch.float64)
    prev_x = remove_mean(torch.randn(9, 3, generator=g, dtype=torch.float64), batch)
    prev = (prev_x, torch.rand(9, 5, generator=g, dtype=torch.float64))
    edges = fully_connected_edges(batch)
    _, _, logits = net(x, h, t, batch, edges, self_cond=prev, with_bonds=True)
    assert logits.shape == (edges.shape[1], BOND_CLASSES)
    q = random_orthogonal(det_sign, g)
    _, _, turned = net(x @ q.T, h, t, batch, edges, self_cond=(prev[0] @ q.T, prev[1]), with_bonds=True)
    torch.testing.assert_close(turned, logits, rtol=1e-9, atol=1e-9)
    pair = {(int(i), int(j)): k for k, (i, j) in enumerate(edges.t().tolist())}
    for (i, j), k in pair.items():
        torch.testing.assert_close(logits[k], logits[pair[(j, i)]], rtol=1e-12, atol=1e-12)


def test_a_bond_head_needs_x0_and_egnn_and_its_loss_needs_labels(labelled):
    with pytest.raises(ValueError, match="bond_head needs"):
        ScoreNetwork(parameterisation="eps", bond_head=True)
    mols, _, _ = labelled
    model = build_score_model(BOND_MODEL)
    diffusion = VPDiffusion.from_config(DIFFUSION)
    trainer = DiffusionTrainer(model, diffusion, mols, TrainConfig(steps=1, batch_size=8))
    with pytest.raises(ValueError, match="needs bond_orders"):
        trainer.train(until_step=1)


def test_the_head_learns_bonds_and_samples_carry_them(labelled):
    """A small network trained 300 steps on 64 molecules predicts their bonds at t = 0 far
    better than 'no bond everywhere'; its samples come with symmetric bond matrices,
    evaluation judges them and the returned RDKit molecules carry them.

    At 200 steps one seed in three still sat on the 'no bond' plateau after a change of
    rounding in the edge kernels; at 300 steps seeds 0-3 all reach 0.78-0.84."""
    mols, table, _ = labelled
    torch.manual_seed(0)
    model = build_score_model(BOND_MODEL)
    diffusion = VPDiffusion.from_config(DIFFUSION)
    config = TrainConfig(steps=300, batch_size=32, lr=2e-3, log_every=20)
    trainer = DiffusionTrainer(model, diffusion, mols, config, bonds=table)
    trainer.train(until_step=300)
    model.eval()
    idx = np.arange(len(mols))
    batch = MoleculeBatches(mols, bonds=table)(idx)
    edges = fully_connected_edges(batch["batch"])
    with torch.no_grad():
        d = diffusion.denoise(
            model,
            remove_mean(batch["pos"], batch["batch"]),
            0.25 * batch["onehot"],
            torch.zeros(len(idx), dtype=torch.float64),
            batch["batch"],
            edges,
            with_bonds=True,
        )
    pred, orders = d.bond_logits.argmax(-1), batch["bond_orders"]
    bonded = orders > 0
    assert (pred[bonded] == orders[bonded]).float().mean() > 0.6
    assert (pred == orders).float().mean() > (orders == 0).float().mean() + 0.05

    result = sample(model, diffusion, [9, 14], steps=10, generator=torch.Generator().manual_seed(0))
    for m in result.molecules:
        assert m.bond_orders.shape == (m.num_atoms, m.num_atoms)
        assert np.array_equal(m.bond_orders, m.bond_orders.T) and not np.diag(m.bond_orders).any()
    ev = evaluate(result.molecules, reference_smiles=[], descriptors=False)
    judged = [r.predicted_strict.valid for r in ev.molecules]
    assert ev.metrics[PREDICTED_BONDS_METRIC] == sum(judged) / len(judged)
    for mol, m in zip(annotated_mols(ev, result.molecules), result.molecules):
        assert mol.GetProp("bonds") == "predicted"
        assert mol.GetNumBonds() == int((np.triu(m.bond_orders, 1) > 0).sum())
        assert mol.GetProp("valid_strict_predicted_bonds") in ("0", "1")


def test_molecules_without_predicted_bonds_keep_perceived_ones(qm9):
    ev = evaluate([qm9[3]], reference_smiles=[], descriptors=False)
    assert PREDICTED_BONDS_METRIC not in ev.metrics
    (mol,) = annotated_mols(ev, [qm9[3]])
    assert mol.GetProp("bonds") == "perceived"

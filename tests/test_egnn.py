"""EGNN and score network: E(3) equivariance in float64, centring, no leakage across molecules."""

import pytest
import torch
from equivariance import random_orthogonal, relative_error

from molguide.data.graphs import fully_connected_edges
from molguide.models import ScoreNetwork
from molguide.models.egnn import EGNN


@pytest.fixture
def graph():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([4, 7, 5])
    batch = torch.repeat_interleave(torch.arange(3), counts)
    pos = torch.randn(int(counts.sum()), 3, generator=g, dtype=torch.float64) * 1.5
    feats = torch.randn(int(counts.sum()), 6, generator=g, dtype=torch.float64)
    return pos, feats, batch, fully_connected_edges(batch), g


@pytest.mark.parametrize("edge_input", ["projected", "concat"])
@pytest.mark.parametrize("det_sign", [1.0, -1.0])
def test_egnn_is_e3_equivariant(graph, edge_input, det_sign):
    pos, feats, batch, edges, g = graph
    torch.manual_seed(1)
    net = EGNN(6, 5, hidden=32, num_layers=3, edge_input=edge_input).double()
    # Larger coordinate weights than the near-zero init, so the test sees real updates.
    for layer in net.layers:
        torch.nn.init.normal_(layer.coord_out[-1].weight, std=0.3)
    vec, sca = net(pos, feats, batch, edges)
    assert vec.abs().max() > 1e-2  # a non-trivial map
    rot = random_orthogonal(det_sign, g)
    shift = torch.randn(1, 3, generator=g, dtype=torch.float64) * 5
    vec2, sca2 = net(pos @ rot.T + shift, feats, batch, edges)
    assert relative_error(vec2, vec @ rot.T) < 1e-6
    assert relative_error(sca2, sca) < 1e-6


def test_egnn_is_permutation_equivariant(graph):
    pos, feats, batch, edges, g = graph
    net = EGNN(6, 5, hidden=32, num_layers=2).double()
    vec, sca = net(pos, feats, batch, edges)
    # Permute nodes within each molecule so the batch vector stays sorted.
    perm = torch.cat([torch.randperm(n, generator=g) + s for s, n in [(0, 4), (4, 7), (11, 5)]])
    vec2, sca2 = net(pos[perm], feats[perm], batch, edges)
    assert relative_error(vec2, vec[perm]) < 1e-6 and relative_error(sca2, sca[perm]) < 1e-6


def test_projected_and_concat_edge_inputs_are_the_same_maths(graph):
    pos, feats, batch, edges, _ = graph
    fast = EGNN(6, 5, hidden=16, num_layers=2, edge_input="projected").double()
    naive = EGNN(6, 5, hidden=16, num_layers=2, edge_input="concat").double()
    naive.load_state_dict(fast.state_dict(), strict=False)  # shared layers
    with torch.no_grad():
        for lf, ln in zip(fast.layers, naive.layers):
            for f, n in ((lf.edge_in, ln.edge_in), (lf.coord_in, ln.coord_in)):
                n.linear.weight.copy_(torch.cat([f.src.weight, f.dst.weight, f.edge.weight], dim=1))
                n.linear.bias.copy_(f.src.bias)
    a, b = fast(pos, feats, batch, edges), naive(pos, feats, batch, edges)
    assert relative_error(a[0], b[0]) < 1e-10 and relative_error(a[1], b[1]) < 1e-10


def test_score_network_outputs_are_centred_and_molecules_independent(graph):
    pos, feats, batch, edges, g = graph
    net = ScoreNetwork(num_atom_types=5, backbone="egnn", hidden=16, num_layers=2).double()
    h = feats[:, :5]
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    eps_x, eps_h = net(pos, h, t, batch, edges)
    assert eps_x.shape == pos.shape and eps_h.shape == h.shape
    for m in range(3):
        assert eps_x[batch == m].mean(0).abs().max() < 1e-12
    # The middle molecule alone gives the same outputs as inside the batch.
    sel = batch == 1
    alone_batch = torch.zeros(int(sel.sum()), dtype=torch.long)
    ex1, eh1 = net(pos[sel], h[sel], t[1:2], alone_batch)
    assert relative_error(ex1, eps_x[sel]) < 1e-10 and relative_error(eh1, eps_h[sel]) < 1e-10

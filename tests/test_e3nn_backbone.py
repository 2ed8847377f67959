"""e3nn backbone: E(3) and permutation equivariance in float64, shapes, gradients, no leakage."""

import pytest
import torch
from equivariance import random_orthogonal, relative_error

from molguide.data.graphs import fully_connected_edges
from molguide.models.backbone import EquivariantBackbone
from molguide.models.e3nn_backbone import E3nnBackbone

COUNTS = (4, 7, 5)
IN_FEATURES, OUT_FEATURES = 6, 5


@pytest.fixture(scope="module")
def net() -> E3nnBackbone:
    torch.manual_seed(0)
    # Small sizes keep the tests fast; lmax=2 also exercises the higher-l paths.
    return E3nnBackbone(IN_FEATURES, OUT_FEATURES, hidden_scalars=16, hidden_vectors=4, num_layers=3, lmax=2)


@pytest.fixture
def graph():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor(COUNTS)
    batch = torch.repeat_interleave(torch.arange(len(COUNTS)), counts)
    n = int(counts.sum())
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.5
    feats = torch.randn(n, IN_FEATURES, generator=g, dtype=torch.float64)
    return pos, feats, batch, fully_connected_edges(batch), g


def test_shapes_finite_and_nontrivial(net, graph):
    pos, feats, batch, edges, _ = graph
    model = net.double()
    assert isinstance(model, EquivariantBackbone)
    assert (model.in_features, model.out_features) == (IN_FEATURES, OUT_FEATURES)
    vec, sca = model(pos, feats, batch, edges)
    assert vec.shape == (pos.shape[0], 3) and sca.shape == (pos.shape[0], OUT_FEATURES)
    assert vec.dtype == sca.dtype == torch.float64
    assert torch.isfinite(vec).all() and torch.isfinite(sca).all()
    # A non-trivial map, so the equivariance tests below are not vacuous.
    assert vec.abs().max() > 1e-3 and sca.std() > 1e-3


def test_default_sizes_float32(graph):
    pos, feats, batch, edges, _ = graph
    model = E3nnBackbone(IN_FEATURES, OUT_FEATURES)
    vec, sca = model(pos.float(), feats.float(), batch, edges)
    assert vec.shape == (pos.shape[0], 3) and sca.shape == (pos.shape[0], OUT_FEATURES)
    assert torch.isfinite(vec).all() and torch.isfinite(sca).all()


@pytest.mark.parametrize("det_sign", [1.0, -1.0], ids=["rotation", "reflection"])
def test_e3_equivariance(net, graph, det_sign):
    pos, feats, batch, edges, g = graph
    model = net.double()
    vec, sca = model(pos, feats, batch, edges)
    rot = random_orthogonal(det_sign, g)
    assert torch.det(rot) * det_sign > 0
    vec2, sca2 = model(pos @ rot.T, feats, batch, edges)
    # Positions are polar vectors (1o): vectors follow R, reflections included.
    assert relative_error(vec2, vec @ rot.T) < 1e-6
    assert relative_error(sca2, sca) < 1e-6


def test_translation_invariance(net, graph):
    pos, feats, batch, edges, g = graph
    model = net.double()
    vec, sca = model(pos, feats, batch, edges)
    shift = torch.randn(1, 3, generator=g, dtype=torch.float64) * 5
    vec2, sca2 = model(pos + shift, feats, batch, edges)
    assert relative_error(vec2, vec) < 1e-6 and relative_error(sca2, sca) < 1e-6


def test_permutation_equivariance(net, graph):
    pos, feats, batch, edges, g = graph
    model = net.double()
    # Permute nodes within each molecule so the batch vector (and hence the fully connected
    # edge list) stays the same while every node gets a new index.
    starts = torch.cumsum(torch.tensor((0,) + COUNTS[:-1]), 0)
    perm = torch.cat([torch.randperm(n, generator=g) + s for s, n in zip(starts.tolist(), COUNTS)])
    assert not torch.equal(perm, torch.arange(len(perm)))
    vec, sca = model(pos, feats, batch, edges)
    vec2, sca2 = model(pos[perm], feats[perm], batch, fully_connected_edges(batch[perm]))
    assert relative_error(vec2, vec[perm]) < 1e-6 and relative_error(sca2, sca[perm]) < 1e-6


def test_gradients_reach_every_parameter(net, graph):
    pos, feats, batch, edges, _ = graph
    model = net.double()
    vec, sca = model(pos, feats, batch, edges)
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert params
    # autograd.grad leaves the shared module's .grad fields untouched.
    grads = torch.autograd.grad(
        vec.square().sum() + sca.square().sum(), [p for _, p in params], allow_unused=True
    )
    for (name, _), grad in zip(params, grads):
        assert grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(grad).all() and grad.abs().max() > 0, name


def test_no_leakage_across_molecules(net, graph):
    pos, feats, batch, edges, _ = graph
    model = net.double()
    vec, sca = model(pos, feats, batch, edges)
    start, n = COUNTS[0], COUNTS[1]  # the middle molecule
    one = torch.zeros(n, dtype=torch.long)
    vec1, sca1 = model(pos[start : start + n], feats[start : start + n], one, fully_connected_edges(one))
    assert relative_error(vec1, vec[start : start + n]) < 1e-10
    assert relative_error(sca1, sca[start : start + n]) < 1e-10


def test_distant_atom_still_receives_messages(net, graph):
    pos, feats, batch, edges, _ = graph
    model = net.double()
    far = pos.clone()
    far[0] += torch.tensor([40.0, 0.0, 0.0], dtype=torch.float64)  # far beyond the Gaussian basis
    vec, _ = model(far, feats, batch, edges)
    assert vec[0].norm() > 1e-3

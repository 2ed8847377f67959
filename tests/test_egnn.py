"""EGNN and score network: E(3) equivariance in float64, centring, no leakage across molecules."""

import pytest
import torch
from equivariance import random_orthogonal, relative_error
from torch.autograd import gradcheck, gradgradcheck

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


def _fast_and_naive(attention: bool):
    torch.manual_seed(3)
    fast = EGNN(6, 5, hidden=16, num_layers=2, attention=attention, edge_input="projected").double()
    naive = EGNN(6, 5, hidden=16, num_layers=2, attention=attention, edge_input="concat").double()
    naive.load_state_dict(fast.state_dict(), strict=False)
    with torch.no_grad():
        for lf, ln in zip(fast.layers, naive.layers):
            torch.nn.init.normal_(lf.coord_out[-1].weight, std=0.3)  # real coordinate updates
            ln.coord_out[-1].weight.copy_(lf.coord_out[-1].weight)
            for f, n in ((lf.edge_in, ln.edge_in), (lf.coord_in, ln.coord_in)):
                n.linear.weight.copy_(torch.cat([f.src.weight, f.dst.weight, f.edge.weight], dim=1))
                n.linear.bias.copy_(f.src.bias)
    return fast, naive


def _edge_weights(net):
    """Parameters in a form both edge-input variants share (the first edge layers concatenated)."""
    out = {}
    for k, layer in enumerate(net.layers):
        for name in ("edge_in", "coord_in"):
            part = getattr(layer, name)
            if hasattr(part, "linear"):
                out[f"{k}.{name}"] = part.linear.weight.grad
            else:
                out[f"{k}.{name}"] = torch.cat(
                    [part.src.weight.grad, part.dst.weight.grad, part.edge.weight.grad], 1
                )
    return out


@pytest.mark.parametrize("attention", [True, False])
def test_fast_backward_gives_the_gradients_of_the_plain_form(graph, attention):
    """The hand-written backward of the fast edge functions against autograd through EDM's form."""
    pos, feats, batch, edges, g = graph
    fast, naive = _fast_and_naive(attention)
    w_vec = torch.randn(pos.shape, generator=g, dtype=torch.float64)
    w_sca = torch.randn(len(pos), 5, generator=g, dtype=torch.float64)
    grads = []
    for net in (fast, naive):
        x, h = pos.clone().requires_grad_(True), feats.clone().requires_grad_(True)
        vec, sca = net(x, h, batch, edges)
        ((vec * w_vec).sum() + (sca * w_sca).sum()).backward()
        shared = {n: p.grad for n, p in net.named_parameters() if "edge_in" not in n and "coord_in" not in n}
        grads.append((x.grad, h.grad, shared, _edge_weights(net)))
    (xa, ha, sa, ea), (xb, hb, sb, eb) = grads
    assert relative_error(xa, xb) < 1e-10 and relative_error(ha, hb) < 1e-10
    assert sa.keys() == sb.keys() and all(relative_error(sa[k], sb[k]) < 1e-10 for k in sa)
    assert all(relative_error(ea[k], eb[k]) < 1e-10 for k in ea)


def test_second_derivatives_through_the_fast_form_match(graph):
    """A gradient penalty differentiates a gradient (create_graph=True): the fast form must support it."""
    pos, feats, batch, edges, g = graph
    fast, naive = _fast_and_naive(True)
    penalties = []
    for net in (fast, naive):
        x = pos.clone().requires_grad_(True)
        vec, sca = net(x, feats, batch, edges)
        (gx,) = torch.autograd.grad(sca.sum() + vec.pow(2).sum(), x, create_graph=True)
        penalty = gx.pow(2).sum()
        penalty.backward()
        penalties.append((float(penalty), net.layers[0].node_mlp[0].weight.grad.clone()))
    assert penalties[0][0] == pytest.approx(penalties[1][0], rel=1e-10)
    assert relative_error(penalties[0][1], penalties[1][1]) < 1e-9


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


def _tiny_net_and_graph(attention=True):
    torch.manual_seed(0)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([3, 4, 1]))
    net = EGNN(6, 5, hidden=8, num_layers=2, attention=attention).double()
    for layer in net.layers:
        torch.nn.init.normal_(layer.coord_out[-1].weight, std=0.3)
    pos = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    feats = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    return net, pos, feats, batch, fully_connected_edges(batch)


@pytest.mark.slow  # 60 s; the float64 comparisons with the plain form above run in CI
@pytest.mark.parametrize("attention", [True, False])
def test_fast_egnn_gradients_match_finite_differences(attention):
    """gradcheck / gradgradcheck of the hand-written backward (float64, every parameter)."""
    net, pos, feats, batch, edges = _tiny_net_and_graph(attention)
    names = [n for n, _ in net.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in net.parameters()]

    def f(pos, feats, *ps):
        return torch.func.functional_call(net, dict(zip(names, ps)), (pos, feats, batch, edges))

    assert gradcheck(f, (pos, feats, *params), eps=1e-6, atol=1e-5)
    assert gradgradcheck(f, (pos, feats, *params), eps=1e-6, atol=1e-4)


def test_scalars_alone_skip_the_last_position_update_and_give_the_same_numbers_and_gradients(graph):
    """Predictors read only the scalars: EGNN.scalars skips the last layer's coordinate MLP,
    with forward's scalars and input gradients to rounding (float64)."""
    pos, feats, batch, edges, g = graph
    torch.manual_seed(2)
    net = EGNN(6, 5, hidden=16, num_layers=3).double()
    grads = []
    for full in (True, False):
        x, h = pos.clone().requires_grad_(True), feats.clone().requires_grad_(True)
        sca = net(x, h, batch, edges)[1] if full else net.scalars(x, h, batch, edges)
        grads.append((sca.detach(), *torch.autograd.grad(sca.pow(2).sum(), (x, h))))
    for a, b in zip(*grads):
        assert relative_error(a, b) < 1e-12
    calls = []  # coord_in.src runs in the fused (node_terms) and the plain path alike
    handle = net.layers[-1].coord_in.src.register_forward_hook(lambda *a: calls.append(1))
    try:
        for fused in (True, False):
            net.fused = fused
            net(pos, feats, batch, edges)
            assert len(calls) == 1, "forward runs the last coordinate update"
            calls.clear()
            net.scalars(pos, feats, batch, edges)
            assert not calls
    finally:
        handle.remove()


def test_without_coordinate_updates_the_fast_form_matches_the_plain_one_and_positions_stay(graph):
    """coordinate_updates=False (invariant predictors): the fused path's scalars and input
    gradients equal plain autograd's (float64), positions never move, and score networks
    refuse it."""
    pos, feats, batch, edges, g = graph
    torch.manual_seed(3)
    net = EGNN(6, 5, hidden=16, num_layers=3, coordinate_updates=False).double()
    assert not any("coord" in name for name, _ in net.named_parameters())
    results = []
    for fused in (True, False):
        net.fused = fused
        x, h = pos.clone().requires_grad_(True), feats.clone().requires_grad_(True)
        vec, sca = net(x, h, batch, edges)
        assert torch.equal(vec, torch.zeros_like(vec))
        results.append((sca.detach(), *torch.autograd.grad(sca.pow(2).sum(), (x, h))))
    for a, b in zip(*results):
        assert relative_error(a, b) < 1e-10
    assert results[0][1].abs().sum() > 0  # the scalars do depend on the positions (distances)
    with pytest.raises(ValueError, match="coordinate_updates"):
        ScoreNetwork(backbone="egnn", hidden=16, num_layers=2, coordinate_updates=False)

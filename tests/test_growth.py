"""Function-preserving growth of EGNN score networks (warm starts of wider, deeper networks)."""

import pytest
import torch

from molguide.data.geometry import remove_mean
from molguide.data.graphs import fully_connected_edges
from molguide.models import ScoreNetwork
from molguide.models.growth import grow_state, growth_problem


def _inputs(counts=(4, 6, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor(counts)
    batch = torch.repeat_interleave(torch.arange(len(counts)), counts)
    n = int(counts.sum())
    x = remove_mean(torch.randn(n, 3, generator=g, dtype=torch.float64), batch)
    h = torch.randn(n, 5, generator=g, dtype=torch.float64)
    t = torch.rand(len(counts), generator=g, dtype=torch.float64)
    prev = (
        remove_mean(torch.randn(n, 3, generator=g, dtype=torch.float64), batch),
        torch.rand(n, 5, generator=g),
    )
    return x, h, t, batch, prev


def _trained_like(net: ScoreNetwork, seed: int) -> ScoreNetwork:
    """Weights far from their initialisation (the coordinate heads start near zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return net


@pytest.mark.parametrize("self_condition", [False, True])
@pytest.mark.parametrize("sizes", [(24, 2), (16, 4), (32, 5)])
def test_grown_network_computes_the_same_outputs_in_float64(self_condition, sizes):
    kw = {"parameterisation": "x0", "self_condition": self_condition, "coords_range": 5.0}
    torch.manual_seed(0)
    small = _trained_like(ScoreNetwork(hidden=16, num_layers=2, **kw).double(), 1).eval()
    torch.manual_seed(1)
    big = ScoreNetwork(hidden=sizes[0], num_layers=sizes[1], **kw).double().eval()
    big.load_state_dict(grow_state(small.state_dict(), small.config, big))
    x, h, t, batch, prev = _inputs()
    edges = fully_connected_edges(batch)
    cond = {"self_cond": (prev[0], prev[1].double())} if self_condition else {}
    with torch.no_grad():
        want = small(x, h, t, batch, edges, **cond)
        got = big(x, h, t, batch, edges, **cond)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # The new channels are live: their weights are not all zero, and they receive gradients.
    big.train()
    out = big(x, h, t, batch, edges, **cond)
    (out[0].square().sum() + out[1].square().sum()).backward()
    new_cols = big.backbone.layers[0].node_mlp[0].weight.grad[:16, 16 : sizes[0]]
    if sizes[0] > 16:
        assert new_cols.abs().sum() > 0


def test_growth_refuses_what_would_change_the_function():
    small = ScoreNetwork(hidden=16, num_layers=2, parameterisation="x0", coords_range=5.0)
    assert growth_problem(small.config, small.config) is None
    other_range = ScoreNetwork(hidden=32, num_layers=2, parameterisation="x0", coords_range=2.5)
    assert "coords_range" in growth_problem(small.config, other_range.config)
    eps = ScoreNetwork(hidden=32, num_layers=2, parameterisation="eps", coords_range=5.0)
    assert "parameterisation" in growth_problem(small.config, eps.config)
    narrower = ScoreNetwork(hidden=8, num_layers=2, parameterisation="x0", coords_range=5.0)
    assert "shrink" in growth_problem(small.config, narrower.config)
    with pytest.raises(ValueError, match="cannot grow the network: parameterisation differs"):
        grow_state(small.state_dict(), small.config, eps)


@pytest.mark.parametrize("self_condition", [False, True])
def test_conditional_copy_computes_the_unconditional_outputs_for_any_context_in_float64(self_condition):
    """add_context: a CFG network warm-started from an unconditional one gives the source's
    outputs whatever the context (zero context columns), then learns only the difference."""
    from molguide.models.growth import add_context

    kw = {"parameterisation": "x0", "self_condition": self_condition, "coords_range": 5.0}
    torch.manual_seed(0)
    source = _trained_like(ScoreNetwork(5, "egnn", hidden=16, num_layers=3, **kw), seed=1).double()
    conditional = ScoreNetwork(5, "egnn", hidden=16, num_layers=3, context_dim=4, **kw).double()
    conditional.load_state_dict(add_context(source.state_dict(), source.config, conditional))
    x, h, t, batch, prev = _inputs()
    cond = {"self_cond": prev} if self_condition else {}
    expected = source(x, h, t, batch, **cond)
    for context in (torch.zeros(3, 4), torch.eye(4)[[0, 3, 1]], torch.randn(3, 4) * 3):
        got = conditional(x, h, t, batch, context=context.double(), **cond)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # The context columns are zero, so their gradient is what fine-tuning moves first.
    weight = conditional.backbone.embed.weight
    assert torch.count_nonzero(weight[:, 6:10]) == 0 and torch.count_nonzero(weight[:, :6]) > 0


def test_conditional_copy_refuses_another_architecture():
    from molguide.models.growth import add_context

    source = ScoreNetwork(5, "egnn", hidden=16, num_layers=3)
    wider = ScoreNetwork(5, "egnn", hidden=32, num_layers=3, context_dim=3)
    with pytest.raises(ValueError, match="backbone_kwargs differs"):
        add_context(source.state_dict(), source.config, wider)
    with pytest.raises(ValueError, match="must be unconditional"):
        add_context(source.state_dict(), source.config, ScoreNetwork(5, "egnn", hidden=16, num_layers=3))


@pytest.mark.parametrize("parameterisation", ["eps", "x0"])
@pytest.mark.parametrize("self_condition", [False, True])
@pytest.mark.parametrize("fixed_atoms", [False, True])
def test_added_atom_types_leave_the_old_elements_outputs_unchanged_in_float64(
    parameterisation, self_condition, fixed_atoms
):
    """add_atom_types: the shipped QM9 generator fine-tuned on a file with S and Cl starts from
    a network that computes the source's outputs for the old elements, whatever the new
    channels hold, and predicts nothing (eps) or a -10 logit (x0) for the new ones."""
    from molguide.models.growth import NEW_TYPE_LOGIT, add_atom_types

    kw = {"parameterisation": parameterisation, "self_condition": self_condition, "coords_range": 5.0}
    kw["fixed_atoms"] = fixed_atoms  # the flag, the embedding's last column, keeps its weights
    torch.manual_seed(0)
    source = _trained_like(ScoreNetwork(5, "egnn", hidden=16, num_layers=2, **kw).double(), 3).eval()
    grown = ScoreNetwork(7, "egnn", hidden=16, num_layers=2, **kw).double().eval()
    grown.load_state_dict(add_atom_types(source.state_dict(), source.config, grown))
    x, h, t, batch, prev = _inputs()
    extra = torch.randn(len(h), 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    edges = fully_connected_edges(batch)
    cond_small = {"self_cond": (prev[0], prev[1].double())} if self_condition else {}
    cond_big = {"self_cond": (prev[0], torch.cat([prev[1].double(), extra], 1))} if self_condition else {}
    if fixed_atoms:
        flags = {"fixed": torch.arange(len(h)) % 2 == 0}
        cond_small, cond_big = {**cond_small, **flags}, {**cond_big, **flags}
    with torch.no_grad():
        want = source(x, h, t, batch, edges, **cond_small)
        got = grown(x, torch.cat([h, extra], 1), t, batch, edges, **cond_big)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1][:, :5], want[1], rtol=1e-12, atol=1e-12)
    new = NEW_TYPE_LOGIT if parameterisation == "x0" else 0.0
    torch.testing.assert_close(got[1][:, 5:], torch.full_like(got[1][:, 5:], new))
    with pytest.raises(ValueError, match="cannot add atom types: 7 there, 5 here"):
        add_atom_types(grown.state_dict(), grown.config, source)

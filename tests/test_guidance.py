"""Guidance on molecules: targets, the three terms, the predictor's invariance, statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from equivariance import random_orthogonal, relative_error

from molguide.data.geometry import max_abs_mean, remove_mean
from molguide.data.graphs import fully_connected_edges
from molguide.diagnostics.noise_levels import expected_calibration_error
from molguide.diagnostics.statistics import bootstrap_mean, inverse_probability_summary, paired_improvement
from molguide.diffusion.process import VPDiffusion
from molguide.diffusion.sampling import GuidanceState, sample
from molguide.diffusion.schedule import NoiseSchedule
from molguide.guidance.targets import PropertyTarget, effective_sample_size, reward_weights
from molguide.guidance.terms import ClassifierFreeGuidance, ClassifierGuidance, RewardGuidance, TimeWindow
from molguide.models.predictor import MoleculePredictor

# ----------------------------------------------------------------------------- targets


def test_quantile_bins_labels_and_target_class():
    values = np.arange(300, dtype=float)
    t = PropertyTarget("gap_eV", n_bins=3, target="high").fit(values)
    assert np.allclose(t.edges, np.quantile(values, [1 / 3, 2 / 3]))
    labels = t.labels(values)
    assert np.bincount(labels).tolist() == [100, 100, 100]
    assert t.target_class == 2 and t.direction == 1.0
    assert t.hits(np.array([0.0, 250.0])).tolist() == [False, True]
    low = PropertyTarget("gap_eV", thresholds=[5.0, 7.0], target="low").fit(values)
    assert low.n_bins == 3 and low.target_class == 0 and low.direction == -1.0
    assert PropertyTarget.from_dict(t.to_dict()).edges == t.edges


@pytest.mark.parametrize(
    "kwargs, message",
    [({"n_bins": 1}, "n_bins"), ({"thresholds": [3.0, 1.0]}, "increasing"), ({"target": 7}, "outside")],
)
def test_bad_targets_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PropertyTarget("gap_eV", **kwargs)


def test_reward_weights_and_their_effective_sample_size():
    values = np.random.default_rng(0).normal(5, 2, 10000)
    w, ess = reward_weights(values, beta=1.0)
    assert math.isclose(w.mean(), 1.0) and np.corrcoef(w, values)[0, 1] > 0.5
    # For z ~ N(0, 1) and w = exp(beta z): ESS / n = exp(-beta^2).
    assert abs(ess - math.exp(-1.0)) < 0.05
    assert effective_sample_size(np.ones(10)) == 10
    assert reward_weights(values, beta=0.0)[1] == pytest.approx(1.0)


def test_clipping_z_bounds_the_weights_of_a_long_tail():
    # A long upper tail like QM9's gap: a few molecules many standard deviations up.
    values = np.concatenate([np.random.default_rng(1).normal(0, 1, 5000), [12.0, 15.0]])
    w_raw, ess_raw = reward_weights(values, beta=1.0)
    w, ess = reward_weights(values, beta=1.0, clip_z=3.0)
    assert ess_raw < 0.05 and ess > 0.3  # two molecules carried the unclipped training
    z = (values - values.mean()) / values.std()
    assert w.max() / w.min() == pytest.approx(math.exp(min(z.max(), 3) - max(z.min(), -3)))
    inside = np.abs(z) < 3  # unclipped molecules keep exp(z) ratios
    assert np.allclose(np.log(w[inside]) - z[inside], (np.log(w[inside]) - z[inside])[0])


# ----------------------------------------------------------------------------- predictor


def _random_batch(gen, counts=(5, 7, 4), k=5, dtype=torch.float64):
    counts = torch.tensor(counts)
    batch = torch.repeat_interleave(torch.arange(len(counts)), counts)
    x = torch.randn(int(counts.sum()), 3, generator=gen, dtype=dtype)
    h = torch.randn(int(counts.sum()), k, generator=gen, dtype=dtype)
    return x, h, batch


@pytest.mark.parametrize("backbone", ["egnn", "egnn_invariant", "e3nn"])
def test_predictor_is_invariant_under_e3_and_permutation(backbone):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    kwargs = {
        "egnn": {"hidden": 16, "num_layers": 2},
        "egnn_invariant": {"hidden": 16, "num_layers": 2, "coordinate_updates": False},
        "e3nn": {"hidden_scalars": 8, "hidden_vectors": 4, "num_layers": 2},
    }[backbone]
    backbone = backbone.removesuffix("_invariant")
    model = MoleculePredictor(5, 3, time_input=True, time_heads=2, backbone=backbone, **kwargs).double()
    x, h, batch = _random_batch(gen)
    t = torch.tensor([0.1, 0.6, 0.9], dtype=torch.float64)
    out = model(x, h, t, batch, 3)
    for det in (1.0, -1.0):
        q = random_orthogonal(det, gen)
        moved = model(x @ q.T + torch.randn(3, generator=gen, dtype=torch.float64), h, t, batch, 3)
        assert relative_error(moved, out) < 1e-6
    perm = torch.cat(
        [
            torch.randperm(5, generator=gen),
            5 + torch.randperm(7, generator=gen),
            12 + torch.randperm(4, generator=gen),
        ]
    )
    assert relative_error(model(x[perm], h[perm], t, batch, 3), out) < 1e-6
    # One head per bucket of t: moving t across 0.5 changes the head, not just the input.
    assert out.shape == (3, 3)


def test_predictor_without_time_refuses_time_heads():
    with pytest.raises(ValueError, match="time_heads"):
        MoleculePredictor(5, 1, time_input=False, time_heads=3, hidden=8, num_layers=1)


# ----------------------------------------------------------------------------- terms


def _state(gen, counts=(6, 9)):
    x, h, batch = _random_batch(gen, counts, dtype=torch.float32)
    x = remove_mean(x, batch)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    return GuidanceState(
        x, h, t, batch, len(counts), fully_connected_edges(batch), torch.zeros_like(x), torch.zeros_like(h)
    )


def test_classifier_guidance_is_the_weighted_centred_gradient_and_respects_its_window():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    clf = MoleculePredictor(5, 3, time_input=True, hidden=16, num_layers=2)
    state = _state(gen)
    gx, gh = ClassifierGuidance(clf, 2, weight=3.0)(state)
    zx, zh = state.zx.clone().requires_grad_(True), state.zh.clone().requires_grad_(True)
    logp = torch.log_softmax(clf(zx, zh, state.t, state.batch, 2), -1)[:, 2].sum()
    ax, ah = torch.autograd.grad(logp, (zx, zh))
    assert torch.allclose(gx, 3.0 * remove_mean(ax, state.batch), atol=1e-6)
    assert torch.allclose(gh, 3.0 * ah, atol=1e-6)
    assert max_abs_mean(gx, state.batch) < 1e-6
    # Off for the molecule at t = 0.7 when the window is [0, 0.5].
    wx, _ = ClassifierGuidance(clf, 2, 3.0, TimeWindow(0.0, 0.5))(state)
    second = state.batch == 1
    assert torch.all(wx[second] == 0) and torch.allclose(wx[~second], gx[~second])


def test_classifier_guidance_with_one_class_per_molecule_equals_the_per_molecule_int_gradients():
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    clf = MoleculePredictor(5, 4, time_input=True, hidden=16, num_layers=2)
    state = _state(gen)
    classes = torch.tensor([3, 1])
    gx, gh = ClassifierGuidance(clf, classes, weight=2.0)(state)
    for mol, c in enumerate(classes.tolist()):
        # Molecule m's rows of the int-class term (every molecule towards class c).
        ix, ih = ClassifierGuidance(clf, c, weight=2.0)(state)
        rows = state.batch == mol
        assert torch.allclose(gx[rows], ix[rows], atol=1e-6) and torch.allclose(gh[rows], ih[rows], atol=1e-6)
    assert max_abs_mean(gx, state.batch) < 1e-6
    # A 0-d tensor is the int form; a wrong number of classes is named.
    same = ClassifierGuidance(clf, torch.tensor(1), weight=2.0)
    assert same.target_class == 1 and isinstance(same.target_class, int)
    with pytest.raises(ValueError, match="3 target classes for a batch of 2"):
        ClassifierGuidance(clf, torch.tensor([0, 1, 2]))(state)


class GaussianEps(torch.nn.Module):
    """Exact noise predictor for clean data N(0, v I); an optional context selects v (CFG tests)."""

    def __init__(self, schedule: NoiseSchedule, v: float, v_context: float | None = None) -> None:
        super().__init__()
        self.schedule, self.v, self.v_context = schedule, v, v_context
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def variance(self, context, batch):
        if context is None or self.v_context is None:
            return self.v
        on = context.abs().sum(-1).double()[batch].unsqueeze(-1) > 0
        return torch.where(on, torch.full_like(on, self.v_context, dtype=torch.float64), self.v)

    def forward(self, zx, zh, t, batch, edge_index=None, context=None):
        a2 = self.schedule.alpha(t).double()[batch].unsqueeze(-1) ** 2
        s = self.schedule.sigma(t).double()[batch].unsqueeze(-1)
        factor = s / (a2 * self.variance(context, batch) + s**2)
        return factor * zx, factor * zh


def _variance(result):
    return float(np.concatenate([m.positions for m in result.molecules]).var())


def test_reward_guidance_at_w1_samples_the_reweighted_model():
    """Base N(0, 2I), 'reward model' N(0, 0.5I): s + 1 * (s^r - s) must sample N(0, 0.5 I)."""
    sched = NoiseSchedule("polynomial_2", 1000)
    base, reward = GaussianEps(sched, 2.0), GaussianEps(sched, 0.5)
    term = RewardGuidance(reward, VPDiffusion(sched), weight=1.0)
    counts = torch.full((300,), 8)
    res = sample(
        base, VPDiffusion(sched), counts, 200, "ancestral", [term], generator=torch.Generator().manual_seed(3)
    )
    expected = 0.5 * 7 / 8
    assert abs(_variance(res) - expected) < 0.08 * expected
    # w = 0.5 lands between: the score of 0.5 * (s + s^r) is not a Gaussian's, but its variance is in between.
    half = sample(
        base,
        VPDiffusion(sched),
        counts,
        200,
        "ancestral",
        [RewardGuidance(reward, VPDiffusion(sched), 0.5)],
        generator=torch.Generator().manual_seed(3),
    )
    assert expected < _variance(half) < 2.0 * 7 / 8


def _in_float64(state: GuidanceState, score_x: torch.Tensor, score_h: torch.Tensor) -> GuidanceState:
    """The two-molecule state of ``_state`` in float64 with the given base score."""
    return GuidanceState(
        state.zx.double(), state.zh.double(), state.t, state.batch, 2, state.edge_index, score_x, score_h
    )


def test_cfg_term_gives_conditional_plus_w_times_difference():
    """CFG term on exact Gaussian scores: base + term equals s(z|c) + w (s(z|c) - s(z))."""
    gen = torch.Generator().manual_seed(4)
    sched = NoiseSchedule("polynomial_2", 1000)
    model = GaussianEps(sched, v=2.0, v_context=0.5)
    state = _state(gen)
    state = _in_float64(
        state,
        *[
            -e / sched.sigma(state.t)[state.batch].unsqueeze(-1)
            for e in model(state.zx.double(), state.zh.double(), state.t, state.batch)
        ],
    )
    term = ClassifierFreeGuidance(model, torch.ones(1), VPDiffusion(sched), weight=2.0)
    gx, _ = term(state)
    a2 = sched.alpha(state.t)[state.batch].unsqueeze(-1) ** 2
    s2 = sched.sigma(state.t)[state.batch].unsqueeze(-1) ** 2
    s_c, s_u = -state.zx / (a2 * 0.5 + s2), -state.zx / (a2 * 2.0 + s2)
    guided = s_c + 2.0 * (s_c - s_u)
    assert torch.allclose(state.score_x + gx, guided, atol=1e-10)


def test_cfg_term_takes_one_label_per_molecule():
    """A (B, K) context gives each molecule the term its own label would give it alone."""
    gen = torch.Generator().manual_seed(5)
    sched = NoiseSchedule("polynomial_2", 1000)
    model = GaussianEps(sched, v=2.0, v_context=0.5)
    state = _state(gen)
    state = _in_float64(state, torch.zeros_like(state.zx.double()), torch.zeros_like(state.zh.double()))
    labels = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # molecule 0: null label, molecule 1: class 1
    gx, gh = ClassifierFreeGuidance(model, labels, VPDiffusion(sched), weight=1.5)(state)
    for mol in range(2):
        ix, ih = ClassifierFreeGuidance(model, labels[mol], VPDiffusion(sched), weight=1.5)(state)
        rows = state.batch == mol
        assert torch.allclose(gx[rows], ix[rows]) and torch.allclose(gh[rows], ih[rows])
    with pytest.raises(ValueError, match="3 CFG labels for a batch of 2"):
        ClassifierFreeGuidance(model, torch.zeros(3, 2), VPDiffusion(sched))(state)


# ----------------------------------------------------------------------------- statistics


def test_bootstrap_interval_covers_the_truth_and_pairs_reduce_noise():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 5, 400)  # shared per-seed variation
    guided, unguided = base + 0.3 + rng.normal(0, 0.1, 400), base + rng.normal(0, 0.1, 400)
    imp, frac = paired_improvement(guided, unguided)
    assert imp.ci_low < 0.3 < imp.ci_high and imp.excludes_zero() and frac > 0.9
    assert imp.ci_high - imp.ci_low < 0.1  # pairing removed the spread of 5
    down, _ = paired_improvement(guided, unguided, direction=-1.0)
    assert down.value == pytest.approx(-imp.value)
    gaps = np.array([1.0, np.nan, 3.0])
    assert bootstrap_mean(gaps).n == 2
    with pytest.raises(ValueError, match="equal lengths"):
        paired_improvement(np.ones(3), np.ones(4))


def test_calibration_error_and_inverse_probability_summary():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.34, 1.0, 20000)
    labels = np.where(rng.uniform(size=20000) < conf, 0, 1)  # calibrated: P(correct) = confidence
    probs = np.stack([conf, 1 - conf, np.zeros_like(conf)], 1)
    assert expected_calibration_error(probs, labels) < 0.02
    overconfident = np.stack([np.ones_like(conf) * 0.999, 0.001 * np.ones_like(conf), 0 * conf], 1)
    assert expected_calibration_error(overconfident, labels) > 0.2
    s = inverse_probability_summary(np.array([0.5, 0.25, 1.0, 0.1]))
    assert s["inv_prob_mean"] == pytest.approx((2 + 4 + 1 + 10) / 4) and s[
        "inv_prob_median"
    ] == pytest.approx(3.0)


# ----------------------------------------------------------------------------- residual reward networks


def _self_conditioned_x0_network(seed: int):
    from molguide.models import ScoreNetwork

    torch.manual_seed(seed)
    return ScoreNetwork(
        backbone="egnn", hidden=16, num_layers=2, parameterisation="x0", self_condition=True
    ).double()


def test_residual_reward_network_starts_as_its_base_and_its_guidance_skips_the_base_exactly():
    """The correction's outputs start at zero (s^r = s: no guidance before training); with
    trained (here random) correction weights, the reward term computed from the sampler's
    own output equals the term that runs the base again, to rounding in float64, and the
    base does not run; a sampler network with other weights gets the full computation."""
    from molguide.diffusion.sampling import _score
    from molguide.models.build import network_from_config
    from molguide.models.residual import ResidualScoreNetwork

    base = _self_conditioned_x0_network(0)
    residual = ResidualScoreNetwork(base, {"hidden": 8, "num_layers": 2}).double()
    sched = NoiseSchedule("polynomial_2", 1000)
    diffusion = VPDiffusion(sched)
    gen = torch.Generator().manual_seed(1)
    counts = torch.tensor([5, 7])
    batch = torch.repeat_interleave(torch.arange(2), counts)
    edges = fully_connected_edges(batch)
    zx = remove_mean(torch.randn(12, 3, generator=gen, dtype=torch.float64), batch, 2)
    zh = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    prev = (
        remove_mean(torch.randn(12, 3, generator=gen, dtype=torch.float64), batch, 2),
        torch.softmax(torch.randn(12, 5, generator=gen, dtype=torch.float64), -1),
    )
    with torch.no_grad():
        plain = base(zx, zh, t, batch, edges, None, self_cond=prev)
        start = residual(zx, zh, t, batch, edges, None, self_cond=prev)
    assert all(torch.equal(a, b) for a, b in zip(plain, start))

    with torch.no_grad():  # a trained correction: random weights everywhere
        for p in residual.correction.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3)
    calls = []
    hook = base.register_forward_hook(lambda *a: calls.append(1))
    try:
        terms = []
        for sampler_net in (base, copy_of(base), _self_conditioned_x0_network(5)):
            term = RewardGuidance(residual, VPDiffusion(sched), weight=1.5)
            calls.clear()
            _, _, denoised = _score(sampler_net, diffusion, zx, zh, t, batch, 2, edges, None, (), prev)
            state = GuidanceState(
                zx, zh, t, batch, 2, edges, denoised.score_x, denoised.score_h, prev, sampler_net, denoised
            )
            calls.clear()
            terms.append((term(state), len(calls)))
            full_state = GuidanceState(zx, zh, t, batch, 2, edges, denoised.score_x, denoised.score_h, prev)
            assert all(relative_error(a, b) < 1e-12 for a, b in zip(terms[-1][0], term(full_state)))
    finally:
        hook.remove()
    (same, same_calls), (copied, copied_calls), (other, other_calls) = terms
    assert same_calls == 0 and copied_calls == 0 and other_calls == 1
    assert same[0].abs().max() > 1e-3  # the correction does change the score

    # A sampler network whose weights change in place after a first call is compared again.
    term, twin = RewardGuidance(residual, VPDiffusion(sched)), copy_of(base)
    _, _, denoised = _score(twin, diffusion, zx, zh, t, batch, 2, edges, None, (), prev)
    state = GuidanceState(
        zx, zh, t, batch, 2, edges, denoised.score_x, denoised.score_h, prev, twin, denoised
    )
    assert term._base_output(state) is not None
    with torch.no_grad():
        twin.backbone.embed.weight.add_(1.0)
    assert term._base_output(state) is None
    with pytest.raises(ValueError, match="needs an EGNN score network without a bond head"):
        from molguide.models import ScoreNetwork

        ResidualScoreNetwork(ScoreNetwork(backbone="e3nn", num_layers=1), {"num_layers": 1})

    # The reward network travels as a config and weights, like any other.
    again = network_from_config(residual.config)
    again.load_state_dict(residual.state_dict())
    again = again.double()  # built in float32: weights rounded
    assert isinstance(again, ResidualScoreNetwork)
    with torch.no_grad():
        pairs = zip(again(zx, zh, t, batch, edges, None, prev), residual(zx, zh, t, batch, edges, None, prev))
        assert all(relative_error(a, b) < 1e-5 for a, b in pairs)


def copy_of(module):
    import copy

    return copy.deepcopy(module)

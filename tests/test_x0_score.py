"""x0-parameterised and self-conditioned score networks: the score they imply, their
equivariance, their training losses, aligned noise and data-biased times."""

import pytest
import torch

from molguide.data.geometry import kabsch_align, max_abs_mean, remove_mean
from molguide.data.graphs import fully_connected_edges
from molguide.diffusion.objective import DiffusionTrainer, TrainConfig
from molguide.diffusion.process import LossSettings, VPDiffusion, denoised_from_output
from molguide.diffusion.sampling import GuidanceState, sample
from molguide.diffusion.schedule import NoiseSchedule
from molguide.guidance.terms import RewardGuidance
from molguide.models import ScoreNetwork
from tests.equivariance import random_orthogonal, relative_error

TINY = {"hidden": 16, "num_layers": 2}


def _batch(counts=(4, 6, 3), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor(counts)
    batch = torch.repeat_interleave(torch.arange(len(counts)), counts)
    n = int(counts.sum())
    x = remove_mean(torch.randn(n, 3, generator=g, dtype=dtype), batch)
    h = torch.randn(n, 5, generator=g, dtype=dtype)
    t = torch.rand(len(counts), generator=g, dtype=torch.float64).clamp(0.05, 0.95)
    return x, h, t, batch


def test_x0_output_gives_the_score_and_eps_of_the_vp_identities():
    """s = (alpha x0 - z) / sigma^2 = -eps / sigma, and z = alpha x0 + sigma eps, in float64."""
    g = torch.Generator().manual_seed(1)
    zx, zh = (
        torch.randn(7, 3, generator=g, dtype=torch.float64),
        torch.randn(7, 5, generator=g, dtype=torch.float64),
    )
    x0, logits = (
        torch.randn(7, 3, generator=g, dtype=torch.float64),
        torch.randn(7, 5, generator=g, dtype=torch.float64),
    )
    sigma = torch.rand(7, 1, generator=g, dtype=torch.float64) * 0.9 + 0.05
    alpha = torch.sqrt(1 - sigma**2)
    d = denoised_from_output("x0", (x0, logits), zx, zh, alpha, sigma)
    x0_h = 0.25 * torch.softmax(logits, -1)
    torch.testing.assert_close(d.score_x, (alpha * x0 - zx) / sigma**2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.score_h, (alpha * x0_h - zh) / sigma**2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alpha * d.x0_x + sigma * d.eps_x, zx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.score_x, -d.eps_x / sigma, rtol=1e-12, atol=1e-12)
    # The eps form inverts to the same x0, so both parameterisations describe one score.
    back = denoised_from_output("eps", (d.eps_x, d.eps_h), zx, zh, alpha, sigma)
    torch.testing.assert_close(back.x0_x, x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(back.score_h, d.score_h, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("self_condition", [False, True])
@pytest.mark.parametrize("det_sign", [1.0, -1.0])
def test_x0_network_is_e3_equivariant(self_condition, det_sign):
    torch.manual_seed(0)
    net = ScoreNetwork(parameterisation="x0", self_condition=self_condition, **TINY).double()
    x, h, t, batch = _batch()
    edges = fully_connected_edges(batch)
    g = torch.Generator().manual_seed(3)
    prev = (remove_mean(torch.randn_like(x), batch), torch.softmax(torch.randn_like(h), -1))
    rot = random_orthogonal(det_sign, g)
    shift = torch.randn(3, dtype=torch.float64, generator=g)
    kwargs = {"self_cond": prev} if self_condition else {}
    x0, logits = net(x, h, t, batch, edges, **kwargs)
    assert max_abs_mean(x0.detach(), batch) < 1e-12
    rot_kwargs = {"self_cond": (prev[0] @ rot.T + shift, prev[1])} if self_condition else {}
    x0_r, logits_r = net(x @ rot.T, h, t, batch, edges, **rot_kwargs)
    assert relative_error(x0_r, x0 @ rot.T) < 1e-10
    assert relative_error(logits_r, logits) < 1e-10
    if self_condition:  # the estimate is an input: a different one changes the output
        other, _ = net(x, h, t, batch, edges, self_cond=(prev[0] * 2, prev[1]))
        assert relative_error(other, x0) > 1e-6


def test_fused_egnn_with_edge_inputs_matches_the_plain_form():
    from molguide.models.egnn import EGNN

    torch.manual_seed(0)
    x, h, _, batch = _batch()
    edges = fully_connected_edges(batch)
    attr = torch.rand(edges.shape[1], 1, dtype=torch.float64, requires_grad=True)
    net = EGNN(5, 5, hidden=16, num_layers=2, extra_edge_features=1).double()
    outs = []
    for fused in (True, False):
        net.fused = fused
        net.zero_grad()
        xi = x.clone().requires_grad_(True)
        attr.grad = None
        v, s = net(xi, h, batch, edges, edge_attr=attr)
        ((v**2).sum() + s.sum()).backward()
        outs.append(
            (v.detach(), s.detach(), xi.grad, attr.grad.clone(), net.layers[0].edge_in.edge.weight.grad)
        )
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="edge_attr of shape"):
        net(x, h, batch, edges)


def test_kabsch_alignment_is_the_best_rotation():
    x, _, _, batch = _batch(counts=(5, 8))
    g = torch.Generator().manual_seed(2)
    rot = random_orthogonal(1.0, g)
    # A rotated copy is brought back exactly.
    rotated = remove_mean(x @ rot.T, batch)
    torch.testing.assert_close(kabsch_align(rotated, x, batch, 2), x, rtol=1e-10, atol=1e-10)
    noise = remove_mean(torch.randn(x.shape, generator=g, dtype=torch.float64), batch)
    aligned = kabsch_align(noise, x, batch, 2)
    # Norms per molecule kept (a rotation), centred, closer to the data, and no other
    # rotation does better.
    for m in range(2):
        k = batch == m
        assert float(aligned[k].norm()) == pytest.approx(float(noise[k].norm()), rel=1e-10)
        best = (aligned[k] - x[k]).norm()
        assert best <= (noise[k] - x[k]).norm() + 1e-12
        for _ in range(20):
            other = random_orthogonal(1.0, g)
            assert best <= (aligned[k] @ other.T - x[k]).norm() + 1e-9
    assert max_abs_mean(aligned, batch) < 1e-12


def test_times_towards_the_data():
    diff = VPDiffusion(NoiseSchedule("polynomial_2", 1000))
    g = torch.Generator().manual_seed(0)
    t = diff.sample_times_towards_data(20000, 2.0, g)
    assert float(t.mean()) == pytest.approx(1 / 3, abs=0.01)  # E[u^2]
    assert torch.equal(t, torch.round(t * 1000) / 1000) and t.min() >= 0 and t.max() <= 1


def test_snr_clamped_weights():
    diff = VPDiffusion(NoiseSchedule("polynomial_2", 1000), loss_settings=LossSettings())
    t = torch.tensor([0.0, 0.5, 0.999], dtype=torch.float64)
    w = diff._weights(t)
    alpha2 = diff.schedule.alpha(t) ** 2
    snr = alpha2 / (1 - alpha2)
    assert float(w[0]) == 1.5 and float(w[2]) == 0.05
    assert float(w[1]) == pytest.approx(float(snr[1].clamp(0.05, 1.5)))


@pytest.mark.parametrize(
    "settings,self_condition",
    [
        (LossSettings(), False),
        (LossSettings(weighting="uniform", type_loss="mse"), False),
        (LossSettings(time_power=2.0, align_noise=True), True),
    ],
)
def test_x0_training_lowers_the_loss(qm9, settings, self_condition):
    mols = qm9.subset(range(64))
    torch.manual_seed(0)
    model = ScoreNetwork(parameterisation="x0", self_condition=self_condition, hidden=32, num_layers=2)
    diffusion = VPDiffusion(NoiseSchedule("polynomial_2", 1000), loss_settings=settings)
    trainer = DiffusionTrainer(
        model, diffusion, mols, TrainConfig(steps=80, batch_size=32, lr=2e-3, log_every=10)
    )
    trainer.train(progress=False)
    losses = [rec.loss for rec in trainer.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10


def test_self_conditioned_x0_sampler_and_reward_guidance_run_and_stay_paired():
    """The sampler feeds the previous estimate back; a reward model equal to the base
    adds nothing, so guided and unguided samples from one seed are identical."""
    torch.manual_seed(0)
    model = ScoreNetwork(parameterisation="x0", self_condition=True, **TINY).eval()
    diffusion = VPDiffusion(NoiseSchedule("polynomial_2", 100))
    counts = [5, 7, 4]
    plain = sample(model, diffusion, counts, steps=20, generator=torch.Generator().manual_seed(1))
    term = RewardGuidance(model, diffusion, weight=2.0)
    guided = sample(
        model, diffusion, counts, steps=20, guidance=[term], generator=torch.Generator().manual_seed(1)
    )
    assert len(plain.molecules) == 3 and not plain.failures
    for a, b in zip(plain.molecules, guided.molecules):
        assert (a.atomic_numbers == b.atomic_numbers).all()
        torch.testing.assert_close(
            torch.as_tensor(a.positions), torch.as_tensor(b.positions), rtol=1e-5, atol=1e-5
        )


def test_a_guidance_terms_score_of_an_x0_network_is_the_diffusion_score():
    """Reward guidance whose reward network is the base: s_r - s is zero to float64 precision."""
    torch.manual_seed(0)
    net = ScoreNetwork(parameterisation="x0", **TINY).double()
    diffusion = VPDiffusion(NoiseSchedule("polynomial_2", 1000))
    x, h, t, batch = _batch()
    edges = fully_connected_edges(batch)
    d = diffusion.denoise(net, x, h, t, batch, edges)
    state = GuidanceState(x, h, t, batch, 3, edges, d.score_x, d.score_h)
    gx, gh = RewardGuidance(net, diffusion, weight=1.0)(state)
    torch.testing.assert_close(gx, torch.zeros_like(gx), rtol=0, atol=1e-9)
    torch.testing.assert_close(gh, torch.zeros_like(gh), rtol=0, atol=1e-9)

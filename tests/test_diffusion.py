"""Diffusion engine: schedule, forward process, loss, exact-score sampling, training and resume."""

import math

import numpy as np
import pytest
import torch

from molguide.data.geometry import max_abs_mean
from molguide.data.graphs import collate_molecules
from molguide.diffusion.atom_counts import NodeCountDistribution
from molguide.diffusion.objective import DiffusionTrainer, TrainConfig
from molguide.diffusion.process import VPDiffusion
from molguide.diffusion.sampling import sample
from molguide.diffusion.schedule import NoiseSchedule
from molguide.diffusion.steps import time_grid
from molguide.models import ScoreNetwork
from molguide.storage.checkpoints import CheckpointError, load_checkpoint


@pytest.mark.parametrize("kind", ["polynomial_2", "cosine"])
def test_schedule_is_variance_preserving_and_monotone(kind):
    sched = NoiseSchedule(kind, steps=1000)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    a, s = sched.alpha(t), sched.sigma(t)
    assert torch.allclose(a**2 + s**2, torch.ones_like(a), atol=1e-12)
    assert (a[1:] <= a[:-1] + 1e-15).all()
    assert a[0] ** 2 == pytest.approx(1 - 1e-5, abs=1e-9)  # (1 - 2s) * 1 + s
    assert a[-1] ** 2 < 1e-3


def test_polynomial_2_matches_the_formula_where_unclipped():
    sched = NoiseSchedule("polynomial_2", steps=1000)
    u = torch.arange(0, 500, dtype=torch.float64) / 1000  # EDM's grid: linspace(0, T+1, T+1)/(T+1) = k/T
    expected = (1 - 2e-5) * (1 - u**2) ** 2 + 1e-5
    assert torch.allclose(sched.alpha2[:500], expected, rtol=1e-12)


def test_forward_process_noise_is_centred_and_has_the_right_scale():
    diff = VPDiffusion(NoiseSchedule("polynomial_2", 1000))
    g = torch.Generator().manual_seed(0)
    counts = torch.full((400,), 10)
    batch = torch.repeat_interleave(torch.arange(400), counts)
    x0 = torch.zeros(4000, 3, dtype=torch.float64)
    onehot = torch.zeros(4000, 5, dtype=torch.float64)
    t = torch.full((400,), 0.5, dtype=torch.float64)
    nb = diff.noise(x0, onehot, batch, t, g)
    assert max_abs_mean(nb.zx, batch) < 1e-12 and max_abs_mean(nb.eps_x, batch) < 1e-12
    sigma = float(diff.schedule.sigma(t[:1]))
    # Centred noise keeps (n - 1) / n of the variance per coordinate.
    assert nb.zx.var().item() == pytest.approx(sigma**2 * 9 / 10, rel=0.03)
    assert nb.zh.var().item() == pytest.approx(sigma**2, rel=0.03)


class ExactGaussianEps(torch.nn.Module):
    """The optimal noise predictor when clean data are N(0, v I) (positions centred)."""

    def __init__(self, schedule: NoiseSchedule, v: float) -> None:
        super().__init__()
        self.schedule, self.v = schedule, v
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, zx, zh, t, batch, edge_index=None, context=None):
        a2 = self.schedule.alpha(t).double()[batch].unsqueeze(-1) ** 2
        s = self.schedule.sigma(t).double()[batch].unsqueeze(-1)
        factor = s / (a2 * self.v + s**2)  # eps_hat = -sigma * score = sigma z / (a^2 v + s^2)
        return factor * zx, factor * zh


@pytest.mark.parametrize("method, steps", [("ancestral", 1000), ("ancestral", 100), ("ddim", 100)])
def test_samplers_recover_the_data_distribution_with_an_exact_score(method, steps):
    sched = NoiseSchedule("polynomial_2", 1000)
    model = ExactGaussianEps(sched, v=2.0)
    counts = torch.full((300,), 8)
    result = sample(
        model, VPDiffusion(sched), counts, steps, method, generator=torch.Generator().manual_seed(1)
    )
    assert len(result.molecules) == 300 and not result.failures
    pos = np.concatenate([m.positions for m in result.molecules])
    # 2,400 atoms x 3 coordinates; per-coordinate variance v (n - 1) / n in the centred subspace.
    expected = 2.0 * 7 / 8
    tol = 4 * expected * math.sqrt(2 / pos.size) + (0.03 if method == "ddim" else 0.0)
    assert abs(pos.var() - expected) < tol + 0.02 * expected
    assert np.abs(np.stack([m.positions.mean(0) for m in result.molecules])).max() < 1e-9


def test_time_grid_lands_on_the_schedule():
    grid = time_grid(100, 1000)
    assert grid[0] == 1.0 and grid[-1] == 0.0 and len(grid) == 101
    assert torch.allclose(grid * 1000, torch.round(grid * 1000))
    with pytest.raises(ValueError):
        time_grid(2000, 1000)


@pytest.mark.parametrize(("steps", "power"), [(100, 2.0), (100, 3.0), (1000, 2.0), (7, 1.5)])
def test_a_power_grid_crowds_the_data_end_and_stays_on_the_schedule(steps, power):
    grid = time_grid(steps, 1000, power)
    ints = grid * 1000
    assert grid[0] == 1.0 and grid[-1] == 0.0 and len(grid) == steps + 1
    assert torch.allclose(ints, torch.round(ints)) and bool((ints[1:] < ints[:-1]).all())
    even = time_grid(steps, 1000)
    if steps == 1000:  # every point of the schedule: the only such grid
        assert torch.equal(grid, even)
    else:  # more of the grid below t = 0.1 than the even grid has
        assert int((grid < 0.1).sum()) > int((even < 0.1).sum())
        # Away from the crowded end the points are the rounded u^p.
        u = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
        assert torch.equal(ints[: steps // 2], torch.round(1000 * u**power)[: steps // 2])
    assert torch.equal(time_grid(steps, 1000, 1.0), even)
    with pytest.raises(ValueError, match="power"):
        time_grid(steps, 1000, 0.0)


def test_sampler_is_seeded_handles_mixed_sizes_and_reports_explosions():
    sched = NoiseSchedule("polynomial_2", 100)
    torch.manual_seed(0)
    net = ScoreNetwork(backbone="egnn", hidden=16, num_layers=2).double()
    diff = VPDiffusion(sched)
    counts = [3, 9, 5, 12]
    a = sample(net, diff, counts, 20, "ancestral", generator=torch.Generator().manual_seed(5))
    b = sample(net, diff, counts, 20, "ancestral", generator=torch.Generator().manual_seed(5))
    assert [m.num_atoms for m in a.molecules] == counts
    for ma, mb in zip(a.molecules, b.molecules):
        np.testing.assert_array_equal(ma.positions, mb.positions)
        assert set(ma.atomic_numbers.tolist()) <= {1, 6, 7, 8, 9}

    class Exploding(ExactGaussianEps):
        """The exact model for N(0, I) data, but huge noise predictions for molecule 1."""

        def forward(self, zx, zh, t, batch, edge_index=None, context=None):
            ex, eh = super().forward(zx, zh, t, batch)
            return torch.where((batch == 1).unsqueeze(-1), 1e6 * zx, ex), eh

    res = sample(Exploding(sched, 1.0), diff, counts, 10, "ddim", generator=torch.Generator().manual_seed(0))
    assert list(res.failures) == [1] and "exceeded" in res.failures[1]
    assert len(res.molecules) == 3 and all(np.isfinite(m.positions).all() for m in res.molecules)


def _trainer(qm9, path, steps):
    torch.manual_seed(0)
    net = ScoreNetwork(backbone="egnn", hidden=16, num_layers=2)
    cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-3, seed=3, checkpoint_every=3, log_every=2)
    return DiffusionTrainer(net, VPDiffusion(NoiseSchedule("polynomial_2", 1000)), qm9, cfg, path)


def test_resume_continues_with_the_same_losses(qm9, tmp_path):
    small = qm9.subset(np.arange(200))
    straight = _trainer(small, tmp_path / "a.pt", 8)
    straight.train()
    losses = [e.loss for e in straight.history]

    first = _trainer(small, tmp_path / "b.pt", 8)
    first.train(until_step=3)  # "killed" after the checkpoint at step 3
    seconds_at_3 = load_checkpoint(tmp_path / "b.pt")["train_seconds"]
    resumed = _trainer(small, tmp_path / "b.pt", 8)
    assert resumed.resume() == 3
    resumed.train()
    assert [e.loss for e in resumed.history] == pytest.approx(losses, rel=0, abs=0)
    for (k1, v1), (k2, v2) in zip(straight.ema.state_dict().items(), resumed.ema.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    state = load_checkpoint(tmp_path / "b.pt")
    assert state["step"] == 8 and len(state["losses"]) == 8
    # Training time adds up over the sessions (the model card's CPU-hours).
    assert state["train_seconds"] > seconds_at_3 > 0 and state["cpu_seconds"] > 0
    assert state["train_seconds"] == pytest.approx(resumed.train_seconds)


def test_broken_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_training_lowers_the_loss_and_node_counts_follow_the_data(qm9):
    small = qm9.subset(np.arange(256))
    trainer = _trainer(small, None, 60)
    trainer.config.batch_size = 32
    trainer.train()
    first = np.mean([e.loss for e in trainer.history[:10]])
    last = np.mean([e.loss for e in trainer.history[-10:]])
    assert last < 0.8 * first
    dist = NodeCountDistribution(small.num_atoms)
    draws = dist.sample(20000, torch.Generator().manual_seed(0)).numpy()
    assert abs(draws.mean() - small.num_atoms.mean()) < 0.1
    assert set(np.unique(draws)) <= set(np.unique(small.num_atoms))


def test_mixed_precision_trains_with_float32_weights_and_close_losses(qm9):
    """bf16 autocast (CPU here, GPU in use): float32 weights, losses close to float32 training."""
    small = qm9.subset(np.arange(256))
    plain, mixed = _trainer(small, None, 6), _trainer(small, None, 6)
    mixed.config.mixed_precision = True
    plain.train()
    mixed.train()
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())
    assert all(s.dtype == torch.float32 for s in mixed.model.state_dict().values() if s.is_floating_point())
    a, b = np.array([e.loss for e in plain.history]), np.array([e.loss for e in mixed.history])
    assert np.isfinite(b).all()
    # bf16 keeps 8 bits of mantissa: about 1 % per step, not more (a float32 run is exact).
    np.testing.assert_allclose(b, a, rtol=0.05)
    assert not np.array_equal(a, b)  # autocast really ran in bf16


def test_prefetched_batches_change_nothing(qm9):
    """The next batch built in a thread (default on GPUs) gives the same training, bit for bit."""
    small = qm9.subset(np.arange(200))
    plain, ahead = _trainer(small, None, 5), _trainer(small, None, 5)
    ahead.config.prefetch = True
    plain.train()
    ahead.train(until_step=2)
    ahead.train()  # a second call starts the thread again
    assert [e.loss for e in ahead.history] == [e.loss for e in plain.history]
    assert ahead._executor is None


def test_collate_matches_the_molecule_set(qm9):
    idx = np.array([5, 100, 7])
    b = collate_molecules(qm9, idx, property_names=["gap_eV"])
    assert int(b["num_graphs"]) == 3
    assert b["pos"].shape[0] == int(qm9.num_atoms[idx].sum())
    assert torch.allclose(
        b["pos"][: qm9.num_atoms[5]], torch.as_tensor(qm9[5].positions, dtype=torch.float32)
    )
    assert b["y"][1, 0].item() == pytest.approx(qm9.properties["gap_eV"][100], rel=1e-6)


def test_a_deadline_stops_training_with_a_checkpoint(qm9, tmp_path):
    import time

    trainer = _trainer(qm9.subset(np.arange(100)), tmp_path / "d.pt", 100_000)
    trainer.train(deadline=time.monotonic() + 1.0)
    assert 0 < trainer.step < 100_000
    assert load_checkpoint(tmp_path / "d.pt")["step"] == trainer.step


def test_guidance_terms_add_to_the_score_exactly():
    """Exact score of N(0, 2 I) plus the term s_{N(0, 0.5 I)} - s_{N(0, 2 I)} must sample N(0, 0.5 I)."""
    sched = NoiseSchedule("polynomial_2", 1000)
    base = ExactGaussianEps(sched, v=2.0)

    def exact_score(z, t, batch, v):
        a2 = sched.alpha(t).double()[batch].unsqueeze(-1) ** 2
        s2 = sched.sigma(t).double()[batch].unsqueeze(-1) ** 2
        return -z / (a2 * v + s2)

    def towards_narrow(state):
        return tuple(
            exact_score(z, state.t, state.batch, 0.5) - exact_score(z, state.t, state.batch, 2.0)
            for z in (state.zx, state.zh)
        )

    counts = torch.full((300,), 8)
    for method in ("ancestral", "ddim"):
        res = sample(base, VPDiffusion(sched), counts, 200, method, guidance=[towards_narrow],
                     generator=torch.Generator().manual_seed(2))  # fmt: skip
        pos = np.concatenate([m.positions for m in res.molecules])
        expected = 0.5 * 7 / 8
        assert abs(pos.var() - expected) < 4 * expected * math.sqrt(2 / pos.size) + 0.03 * expected, method


def test_ema_warms_up_and_forgets_the_initial_weights():
    """EMA decay min(0.999, (1 + n) / (10 + n)) (after 300 steps the initial weights keep
    under 3% of the average, where a fixed 0.999 keeps 74%); both rules follow their formula."""
    from molguide.training.trainer import TensorBatches, Trainer, ema_weights

    def objective(model, batch, generator):
        return ((model(batch["x"]) - batch["y"]) ** 2).mean()

    g = torch.Generator().manual_seed(0)
    data = TensorBatches(x=torch.randn(256, 3, generator=g), y=torch.randn(256, 1, generator=g))
    for warmup in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        trainer = Trainer(
            model, objective, data, TrainConfig(steps=300, batch_size=32, lr=1e-2, ema_warmup=warmup)
        )
        expected = None
        for step in range(300):
            trainer.train_step()
            current = model.weight.detach().clone()
            if expected is None:
                expected = current  # the first update copies
            else:
                decay = min(0.999, (1 + step) / (10 + step)) if warmup else 0.999
                expected = decay * expected + (1 - decay) * current
        ema = ema_weights(trainer.ema.state_dict())["weight"]
        torch.testing.assert_close(ema, expected, rtol=1e-5, atol=1e-6)

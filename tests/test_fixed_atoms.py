"""A score network trained to keep atoms: the flag input, its warm start from an ordinary
network, the training mask and loss, and sampling with kept atoms given noise-free."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molguide.data.geometry import remove_mean
from molguide.diffusion.editing import MoleculeEdit
from molguide.diffusion.process import LossSettings, VPDiffusion, fixed_atom_mask
from molguide.diffusion.schedule import NoiseSchedule
from molguide.models import ScoreNetwork
from molguide.models.growth import add_fixed_flag

KW = {"parameterisation": "x0", "self_condition": True, "coords_range": 5.0, "hidden": 16, "num_layers": 2}


def _batch(counts=(5, 7, 4), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor(counts)
    batch = torch.repeat_interleave(torch.arange(len(counts)), counts)
    n = int(counts.sum())
    x = remove_mean(torch.randn(n, 3, generator=g, dtype=dtype) * 1.5, batch)
    types = torch.randint(0, 5, (n,), generator=g)
    return x, torch.nn.functional.one_hot(types, 5).to(dtype), batch


def test_the_flag_starts_with_zero_weights_so_the_copy_computes_the_source_in_float64():
    torch.manual_seed(0)
    source = ScoreNetwork(5, "egnn", **KW).double()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # far from the initialisation
    keeper = ScoreNetwork(5, "egnn", fixed_atoms=True, **KW).double()
    keeper.load_state_dict(add_fixed_flag(source.state_dict(), source.config, keeper))
    assert keeper.config["fixed_atoms"] is True and "fixed_atoms" not in source.config
    x, onehot, batch = _batch()
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    want = source(x, onehot * 0.25, t, batch)
    for fixed in (None, torch.zeros(len(x), dtype=torch.bool), torch.arange(len(x)) % 3 == 0):
        got = keeper(x, onehot * 0.25, t, batch, fixed=fixed)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="must lack it and the target have it"):
        add_fixed_flag(keeper.state_dict(), keeper.config, keeper)
    with pytest.raises(ValueError, match="was not trained with fixed atoms"):
        source(x, onehot * 0.25, t, batch, fixed=torch.ones(len(x), dtype=torch.bool))


def test_the_training_mask_is_a_contiguous_part_and_leaves_atoms_to_generate():
    x, onehot, batch = _batch(counts=(6, 9, 2, 12), seed=1)
    hydrogen = onehot[:, 0] > 0.5
    seen_without_h = False
    for seed in range(40):
        u = torch.rand(4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        mask = fixed_atom_mask(u, x, hydrogen, batch, 4, prob=1.0)
        for m in range(4):
            atoms = torch.nonzero(batch == m).flatten()
            fixed = mask[atoms]
            assert not bool(fixed.all())  # something is always generated
            if len(atoms) < 2:
                continue
            seed_atom = atoms[min(int(float(u[m, 1]) * len(atoms)), len(atoms) - 1)]
            distance = (x[atoms] - x[seed_atom]).norm(dim=-1)
            k = 1 + min(int(float(u[m, 2]) * (len(atoms) - 1)), len(atoms) - 2)
            nearest = torch.zeros(len(atoms), dtype=torch.bool)
            nearest[torch.argsort(distance, stable=True)[:k]] = True
            if float(u[m, 3]) < 0.5:  # the part without its hydrogens
                seen_without_h |= bool((nearest & hydrogen[atoms]).any())
                nearest &= ~hydrogen[atoms]
            assert torch.equal(fixed, nearest)
    assert seen_without_h  # some draws left a part's hydrogens to be generated
    u = torch.rand(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert not bool(fixed_atom_mask(u, x, hydrogen, batch, 4, prob=0.0).any())


def test_fixed_atoms_enter_noise_free_flagged_and_unscored():
    """In training, a fixed atom's z is alpha x0 (up to the molecule's common shift), its
    flag is set, and its own type prediction is not scored."""
    torch.manual_seed(0)
    net = ScoreNetwork(5, "egnn", fixed_atoms=True, **KW).double()
    diffusion = VPDiffusion(NoiseSchedule("polynomial_2", 100), loss_settings=LossSettings(fixed_prob=1.0))
    x, onehot, batch = _batch(counts=(6, 8, 5), seed=2)
    seen = []
    hook = net.register_forward_hook(
        lambda module, args, kwargs, out: seen.append((args, kwargs)), with_kwargs=True
    )
    draws = diffusion.draw(3, len(x), 5, torch.Generator().manual_seed(4), x.dtype, True, fixed_atoms=True)
    loss = diffusion.per_molecule_loss(net, x, onehot, batch, 3, draws=draws, hydrogen_channel=0)
    hook.remove()
    (zx, zh, t, b, *_), kwargs = seen[-1]
    fixed = kwargs["fixed"]
    assert bool(fixed.any()) and not bool(fixed.all())
    alpha = diffusion.schedule.alpha(t)[b].unsqueeze(-1)
    for m in range(3):
        part = fixed & (b == m)
        offsets = zx[part] - alpha[part] * remove_mean(x, batch)[part]
        torch.testing.assert_close(offsets, offsets[:1].expand_as(offsets), rtol=0, atol=1e-12)
        torch.testing.assert_close(zh[part], alpha[part] * onehot[part] * diffusion.onehot_scale)
    # The network's type logits on fixed atoms do not reach the loss (no self-conditioning
    # pass is taken with these draws, which would feed them back).
    assert draws.self_condition is not None and bool((draws.self_condition >= 0.5).all())
    grad = torch.autograd.grad(loss.sum(), net.backbone.readout.weight, retain_graph=True)[0]
    assert grad.abs().sum() > 0

    def only_fixed_changed(module, args, out):
        bumped = out.clone()
        bumped[fixed, 0] = bumped[fixed, 0] + 5.0  # one channel: a uniform bump would not change the softmax
        return bumped

    handle = net.backbone.readout.register_forward_hook(only_fixed_changed)
    again = diffusion.per_molecule_loss(net, x, onehot, batch, 3, draws=draws, hydrogen_channel=0)
    handle.remove()
    torch.testing.assert_close(again, loss, rtol=1e-10, atol=1e-12)


def test_sampling_gives_the_network_its_kept_atoms_noise_free_and_flagged():
    from molguide.diffusion.sampling import sample

    torch.manual_seed(0)
    net = ScoreNetwork(5, "egnn", fixed_atoms=True, **KW).eval()
    diffusion = VPDiffusion(NoiseSchedule("polynomial_2", 100))
    x, onehot, batch = _batch(counts=(6, 8), seed=3, dtype=torch.float32)
    counts = [6, 8]
    positions = [x[batch == m].numpy() for m in range(2)]
    types = [onehot[batch == m].argmax(-1).numpy() for m in range(2)]
    keep = [np.arange(n) < 3 for n in counts]
    seen = []
    hook = net.register_forward_hook(
        lambda module, args, kwargs, out: seen.append((args, kwargs)), with_kwargs=True
    )
    result = sample(net, diffusion, counts, 12, edit=MoleculeEdit(positions, types, 1.0, keep))
    hook.remove()
    kept = torch.as_tensor(np.concatenate(keep))
    assert len(seen) >= 12
    for (zx, zh, t, b, *_), kwargs in seen:
        assert torch.equal(kwargs["fixed"], kept)
        alpha = diffusion.schedule.alpha(t.double())[b].unsqueeze(-1).float()
        for m in range(2):
            part = kept & (b == m)
            offsets = zx[part] - alpha[part] * x[part]
            torch.testing.assert_close(offsets, offsets[:1].expand_as(offsets), rtol=0, atol=1e-5)
            torch.testing.assert_close(zh[part], alpha[part] * onehot[part] * diffusion.onehot_scale)
    for out, pos, mask in zip(result.molecules, positions, keep):
        np.testing.assert_allclose(out.positions[mask], pos[mask], atol=1e-4)

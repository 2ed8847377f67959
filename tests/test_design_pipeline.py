"""The design pipeline: seeds, sample numbering, batching of per-sample guidance, sampler registry."""

import numpy as np
import pytest
import torch
from exploding import ExplodingScore

from molguide.diffusion.atom_counts import NodeCountDistribution
from molguide.diffusion.process import VPDiffusion
from molguide.diffusion.samplers import SAMPLERS, DDIMSampler, build_sampler, register_sampler
from molguide.diffusion.sampling import sample
from molguide.diffusion.schedule import NoiseSchedule
from molguide.generation.pipeline import MoleculeDiffusionPipeline
from molguide.guidance.terms import ClassifierGuidance
from molguide.models import ScoreNetwork
from molguide.models.predictor import MoleculePredictor

TINY = {"backbone": "egnn", "hidden": 16, "num_layers": 2}


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    model = ScoreNetwork(parameterisation="x0", **TINY).eval()
    nodes = NodeCountDistribution(np.array([3, 4, 4, 5, 6, 6, 6]))
    return MoleculeDiffusionPipeline(model, VPDiffusion(NoiseSchedule("polynomial_2", 100)), nodes, steps=8)


def _same(a, b) -> None:
    assert a.indices == b.indices and a.failures == b.failures
    for x, y in zip(a.molecules, b.molecules):
        assert x.name == y.name
        assert (x.atomic_numbers == y.atomic_numbers).all()
        np.testing.assert_array_equal(x.positions, y.positions)


def test_sizes_come_from_the_seed_and_samples_are_numbered_over_the_batches(pipe):
    result = pipe(7, seed=4, batch_size=3)
    expected = pipe.nodes.sample(7, torch.Generator().manual_seed(4))
    assert result.indices == list(range(7)) and not result.failures
    assert [m.num_atoms for m in result.molecules] == expected.tolist()
    assert [m.name for m in result.molecules] == [f"sample_{k}" for k in range(7)]
    assert result.by_index()[5] is result.molecules[5]
    # The same seed repeats the call exactly; another seed does not.
    _same(result, pipe(7, seed=4, batch_size=3))
    other = pipe(7, seed=5, batch_size=3)
    assert not np.array_equal(other.molecules[0].positions, result.molecules[0].positions)


def test_lost_samples_are_numbered_over_the_whole_call(pipe):
    """An untrained eps network explodes in 8 steps: samples are lost and reported by their number."""
    torch.manual_seed(0)
    exploding = pipe.with_model(ScoreNetwork(**TINY).eval())
    result = exploding(5, seed=0, batch_size=2)
    assert len(result.failures) >= 3  # in the second and third batches too
    assert max(result.failures) >= 3
    assert sorted([*result.failures, *result.indices]) == [0, 1, 2, 3, 4]
    assert [k for k, m in enumerate(result.by_index()) if m is None] == sorted(result.failures)
    assert all("exceeded 100 A" in reason for reason in result.failures.values())


def test_a_call_in_batches_equals_the_batches_sampled_one_by_one(pipe):
    """Per-sample classes are cut to each batch; one noise generator runs through the batches."""
    torch.manual_seed(1)
    clf = MoleculePredictor(5, 3, time_input=True, hidden=8, num_layers=1).eval()
    counts = torch.tensor([4, 5, 3, 6, 4])
    classes = torch.tensor([0, 2, 1, 2, 0])
    term = ClassifierGuidance(clf, classes, 3.0)
    result = pipe(counts, [term], batch_size=2, generator=torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(9)
    for start in range(0, 5, 2):
        part = ClassifierGuidance(clf, classes[start : start + 2], 3.0)
        one = sample(pipe.model, pipe.diffusion, counts[start : start + 2], 8, guidance=[part], generator=gen)
        for k, m in enumerate(one.molecules):
            np.testing.assert_array_equal(m.positions, result.molecules[start + k].positions)
    # Guidance changed the molecules (the term is not a no-op), and the sizes stay paired.
    plain = pipe(counts, batch_size=2, generator=torch.Generator().manual_seed(9))
    assert [m.num_atoms for m in plain.molecules] == [m.num_atoms for m in result.molecules]
    assert not np.allclose(plain.molecules[1].positions, result.molecules[1].positions)


def test_bad_calls_name_the_problem(pipe):
    with pytest.raises(ValueError, match="n must be a whole number >= 1"):
        pipe(0)
    with pytest.raises(ValueError, match="positive integers"):
        pipe([3, 0])
    with pytest.raises(ValueError, match="unknown sampler 'heun'.*ancestral"):
        pipe(2, sampler="heun")
    no_sizes = MoleculeDiffusionPipeline(pipe.model, pipe.diffusion)
    with pytest.raises(ValueError, match="no node-count distribution"):
        no_sizes(3)


def test_a_registered_sampler_is_usable_by_name(pipe):
    @register_sampler
    class CopyOfDDIM(DDIMSampler):
        name = "ddim_copy_for_test"

    try:
        assert isinstance(build_sampler("ddim_copy_for_test", pipe.diffusion.schedule), CopyOfDDIM)
        _same(pipe(4, seed=2, sampler="ddim_copy_for_test"), pipe(4, seed=2, sampler="ddim"))
        with pytest.raises(ValueError, match="registered already"):
            register_sampler(CopyOfDDIM)
    finally:
        del SAMPLERS["ddim_copy_for_test"]


class _ZeroTerm:
    """A user's own guidance term that adds nothing."""

    def __call__(self, state):
        return torch.zeros_like(state.zx), torch.zeros_like(state.zh)


def test_the_designer_generates_through_the_shipped_pipeline_and_takes_user_terms():
    import molguide

    designer = molguide.load("qm9")
    shipped = MoleculeDiffusionPipeline.from_pretrained("qm9")
    assert shipped.grid_power == designer.pipeline.grid_power == 2.0  # the model's own record
    ours = shipped(4, seed=1, steps=10)
    mols = designer.generate(4, seed=1, steps=10, evaluate=False)
    with_term = designer.generate(4, guidance=[_ZeroTerm()], seed=1, steps=10, evaluate=False)
    assert len(mols) == len(with_term) == len(ours.molecules) == 4
    for m, t, ref in zip(mols, with_term, ours.molecules):
        np.testing.assert_allclose(m.GetConformer().GetPositions(), ref.positions, atol=1e-6)
        np.testing.assert_array_equal(t.GetConformer().GetPositions(), m.GetConformer().GetPositions())
    assert with_term[0].GetProp("molguide_guidance") == "_ZeroTerm"
    with pytest.raises(ValueError, match="guidance-term objects"):
        designer.generate(2, guidance=[1.0])
    with pytest.raises(ValueError, match="your own guidance terms carry their targets"):
        designer.generate(2, target={"gap_eV": "high"}, guidance=[_ZeroTerm()])
    again = shipped(np.int64(4), seed=1, steps=10)  # a numpy integer is a count, not a size list
    assert [m.num_atoms for m in again.molecules] == [m.num_atoms for m in ours.molecules]


def test_a_saved_pipeline_loads_with_its_sampler_settings_and_makes_the_same_molecules(pipe, tmp_path):
    import dataclasses

    tuned = dataclasses.replace(pipe, sampler="ddim", steps=6, grid_power=1.5)
    tuned.save_pretrained(tmp_path / "model", training={"steps": 0})
    loaded = MoleculeDiffusionPipeline.from_pretrained(tmp_path / "model")
    assert (loaded.sampler, loaded.steps, loaded.grid_power) == ("ddim", 6, 1.5)
    assert loaded.model.config == pipe.model.config
    assert loaded.diffusion.config == pipe.diffusion.config
    _same(loaded(5, seed=3), tuned(5, seed=3))


def test_generate_says_when_every_sample_is_lost_and_rejects_a_zero_batch():
    import molguide
    from molguide.generation.designer import GenerationError

    designer = molguide.load("qm9")
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        designer.generate(2, steps=5, batch_size=0)
    designer.pipeline = designer.pipeline.with_model(ExplodingScore())
    with pytest.raises(GenerationError, match=r"all 3 samples diverged .*sample 0: coordinates became"):
        designer.generate(3, steps=8, evaluate=False)
    assert sorted(designer.last_failures) == [0, 1, 2]


def test_sampler_options_reach_the_sampler_and_unknown_ones_are_refused(pipe):
    """The SDE solver with eta 0 is the ODE solver, sample for sample (no noise is drawn);
    another eta changes the molecules; an option a sampler lacks is one clear error."""
    ode = pipe(5, seed=2, sampler="dpmpp2m")
    _same(ode, pipe(5, seed=2, sampler="dpmpp2m_sde", sampler_options={"eta": 0.0}))
    stochastic = pipe(5, seed=2, sampler="dpmpp2m_sde")
    assert not np.array_equal(stochastic.molecules[0].positions, ode.molecules[0].positions)
    with pytest.raises(ValueError, match="sampler 'ancestral' has no option 'eta'"):
        pipe(5, seed=2, sampler="ancestral", sampler_options={"eta": 1.0})
    # A pipeline's own options apply to its own sampler only.
    sde = MoleculeDiffusionPipeline(
        pipe.model, pipe.diffusion, pipe.nodes, sampler="dpmpp2m_sde", steps=8, sampler_options={"eta": 0.0}
    )
    _same(ode, sde(5, seed=2))
    _same(pipe(5, seed=2), sde(5, seed=2, sampler="ancestral"))

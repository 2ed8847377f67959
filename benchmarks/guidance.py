"""Guided sampling cost: prints one JSON object (and writes it with --out).

    python benchmarks/guidance.py [--molecules 64] [--steps 20] [--repeat 3] [--device cpu|cuda] [--out FILE]

Side by side in one process, on the same node counts and noise, the variants called
in rounds (one warm-up call each; per round each variant samples twice in a row and the
second call is timed, so it follows a call of its own kind): seconds per sampling step of
the shipped generator (EGNN 64x4, self-conditioned, x0; its own weights) unguided, with
classifier guidance from classifiers of several sizes (EGNN 32x3 as the quickstart trains,
64x4), each with coordinate updates (EDM's EGNN) and without (``coordinate_updates:
false``: an invariant network on the input distances), with reward guidance (a second
network of the generator's architecture, as ``reward.init_from_score`` trains it), and
with a classifier and the reward together. The ratio guided / unguided (median over
rounds of the same-round ratio) is what issue 22's goal (classifier <= 1.3x, classifier
and reward together <= 2.0x) is checked against. Classifier weights are random: the work
does not depend on training (the time can, a little: extreme activations take slow paths
of exp).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, machine, median_ratio, write_report  # noqa: E402

from molguide.generation.pipeline import MoleculeDiffusionPipeline
from molguide.guidance.terms import ClassifierGuidance, RewardGuidance
from molguide.models.predictor import MoleculePredictor
from molguide.models.residual import ResidualScoreNetwork

CLASSIFIERS = {
    "egnn_32x3": (32, 3, True),
    "egnn_32x3_invariant": (32, 3, False),
    "egnn_64x4": (64, 4, True),
    "egnn_64x4_invariant": (64, 4, False),
}


def sampler(model, diffusion, counts, steps, terms, device):
    """A function sampling ``steps`` steps; call r of every such function uses seed r."""
    calls = iter(range(10**9))

    pipe = MoleculeDiffusionPipeline(model, diffusion, steps=steps, device=device)

    def run() -> None:
        pipe(counts, terms, batch_size=len(counts), generator=torch.Generator().manual_seed(next(calls)))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device(args.device)
    at_start = machine(device)
    torch.manual_seed(0)
    from _common import load_generator

    from molguide.storage.trained_run import SHIPPED

    shipped = load_generator(SHIPPED["qm9"])
    counts = shipped.nodes.sample(args.molecules, torch.Generator().manual_seed(0))
    diffusion = shipped.diffusion
    score = shipped.model.to(device).eval()
    terms = {"unguided": []}
    sizes = {}
    for name, (hidden, layers, updates) in CLASSIFIERS.items():
        clf = MoleculePredictor(
            5, 3, time_input=True, hidden=hidden, num_layers=layers, coordinate_updates=updates
        )
        clf = clf.to(device).eval()
        terms[f"classifier_{name}"] = [ClassifierGuidance(clf, 2, 1.0)]
        sizes[f"classifier_{name}"] = sum(p.numel() for p in clf.parameters())
    reward = copy.deepcopy(score)  # reward.init_from_score: the generator's architecture
    terms["reward_egnn_64x4"] = [RewardGuidance(reward, diffusion)]
    # reward.correction: the sampler's own network plus a correction (its output layers
    # randomised here: a zero correction would be no work to time, but the same cost).
    residual = ResidualScoreNetwork(score, {"hidden": 32, "num_layers": 3}).to(device).eval()
    with torch.no_grad():
        for p in residual.correction.parameters():
            p.normal_(0.0, 0.1)
    terms["reward_residual_32x3"] = [RewardGuidance(residual, diffusion)]
    for name in ("egnn_32x3", "egnn_32x3_invariant"):
        terms[f"classifier_{name}+reward_residual_32x3"] = (
            terms[f"classifier_{name}"] + terms["reward_residual_32x3"]
        )
    terms["classifier_egnn_32x3+reward_egnn_64x4"] = terms["classifier_egnn_32x3"] + terms["reward_egnn_64x4"]
    fns = {k: sampler(score, diffusion, counts, args.steps, v, device) for k, v in terms.items()}
    times = interleaved(fns, args.repeat, device)
    base = times["unguided"]
    rows = {}
    for name, t in times.items():
        rows[name] = {"s_per_step": statistics.median(t) / args.steps, "ratio": median_ratio(t, base)}
        if name in sizes:
            rows[name]["classifier_parameters"] = sizes[name]
    result = {
        "benchmark": "guided_sampling_step",
        "machine_at_start": at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "molecules": args.molecules,
        "atoms": int(counts.sum()),
        "timed_steps": args.steps,
        "score_model": "the shipped generator (molguide.load('qm9')): "
        + str(shipped.config["model"]["backbone_kwargs"]),
        "score_parameters": sum(p.numel() for p in score.parameters()),
        "sampler": "ancestral (the guide pipeline's default)",
        "results": rows,
    }
    write_report(result, args.out)


if __name__ == "__main__":
    main()

"""Guided sampling cost: prints one JSON object (and writes it with --out).

    python benchmarks/guidance.py [--molecules 64] [--steps 20] [--repeat 3] [--device cpu|cuda] [--out FILE]

Side by side in one process, on the same node counts and noise, the variants called
in rounds (one warm-up call each; per round each variant samples twice in a row and the
second call is timed, so it follows a call of its own kind): seconds per sampling step for
the unguided EGNN 64x4 score model, with classifier guidance from classifiers of
several sizes (EGNN 32x3, 48x3, 64x4) and with reward guidance (a second 64x4 score
network). The ratio guided / unguided (median over rounds of the same-round ratio) is
the number the guidance issue's target (<= 1.5 for a classifier smaller than the
score model) is checked against. Weights are random: the work does not depend on training
(the time can, a little: extreme activations take slow paths of exp).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, machine, median_ratio, write_report  # noqa: E402

from molguide.design_pipeline import MoleculeDiffusionPipeline
from molguide.diffusion.process import VPDiffusion
from molguide.diffusion.schedule import NoiseSchedule
from molguide.guidance.terms import ClassifierGuidance, RewardGuidance
from molguide.models import ScoreNetwork
from molguide.models.predictor import MoleculePredictor

CLASSIFIERS = {"egnn_32x3": (32, 3), "egnn_48x3": (48, 3), "egnn_64x4": (64, 4)}


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
    from molguide.data import edm_splits, load_qm9
    from molguide.diffusion.nodes import NodeCountDistribution

    qm9 = load_qm9()
    nodes = NodeCountDistribution(qm9.subset(edm_splits(len(qm9))["generator_half"]).num_atoms)
    counts = nodes.sample(args.molecules, torch.Generator().manual_seed(0))
    diffusion = VPDiffusion(NoiseSchedule())
    score = ScoreNetwork(backbone="egnn", hidden=64, num_layers=4).to(device).eval()
    terms = {"unguided_egnn_64x4": []}
    sizes = {}
    for name, (hidden, layers) in CLASSIFIERS.items():
        clf = MoleculePredictor(5, 3, time_input=True, hidden=hidden, num_layers=layers).to(device).eval()
        terms[f"classifier_{name}"] = [ClassifierGuidance(clf, 2, 1.0)]
        sizes[f"classifier_{name}"] = sum(p.numel() for p in clf.parameters())
    reward = ScoreNetwork(backbone="egnn", hidden=64, num_layers=4).to(device).eval()
    terms["reward_egnn_64x4"] = [RewardGuidance(reward, diffusion.schedule.sigma)]
    fns = {k: sampler(score, diffusion, counts, args.steps, v, device) for k, v in terms.items()}
    times = interleaved(fns, args.repeat, device)
    base = times["unguided_egnn_64x4"]
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
        "score_parameters": sum(p.numel() for p in score.parameters()),
        "results": rows,
    }
    write_report(result, args.out)


if __name__ == "__main__":
    main()

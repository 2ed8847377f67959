"""Guided sampling cost: prints one JSON object (and writes it with --out).

    python benchmarks/guidance.py [--molecules 64] [--steps 20] [--repeat 3] [--device cpu|cuda] [--out FILE]

Side by side in one process, on the same node counts and noise: seconds per
sampling step for the unguided EGNN 64x4 score model, with classifier guidance
from classifiers of several sizes (EGNN 32x3, 48x3, 64x4) and with reward
guidance (a second 64x4 score network). The ratio guided / unguided is the number
the guidance issue's target (<= 1.5 for a classifier smaller than the score
model) is checked against. Weights are random: cost does not depend on training.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from molguide.diffusion.process import VPDiffusion
from molguide.diffusion.sampling import sample
from molguide.diffusion.schedule import NoiseSchedule
from molguide.guidance.terms import ClassifierGuidance, RewardGuidance
from molguide.models import ScoreNetwork
from molguide.models.predictor import MoleculePredictor

CLASSIFIERS = {"egnn_32x3": (32, 3), "egnn_48x3": (48, 3), "egnn_64x4": (64, 4)}


def seconds_per_step(model, diffusion, counts, steps, terms, device, repeat) -> float:
    times = []
    for k in range(repeat + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        sample(
            model,
            diffusion,
            counts,
            steps,
            "ancestral",
            terms,
            generator=torch.Generator().manual_seed(k),
            device=device,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k:
            times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    from molguide.data import edm_splits, load_qm9
    from molguide.diffusion.nodes import NodeCountDistribution

    qm9 = load_qm9()
    nodes = NodeCountDistribution(qm9.subset(edm_splits(len(qm9))["generator_half"]).num_atoms)
    counts = nodes.sample(args.molecules, torch.Generator().manual_seed(0))
    diffusion = VPDiffusion(NoiseSchedule())
    score = ScoreNetwork(backbone="egnn", hidden=64, num_layers=4).to(device).eval()
    base = seconds_per_step(score, diffusion, counts, args.steps, [], device, args.repeat)
    rows = {"unguided_egnn_64x4": {"s_per_step": base, "ratio": 1.0}}
    for name, (hidden, layers) in CLASSIFIERS.items():
        clf = MoleculePredictor(5, 3, time_input=True, hidden=hidden, num_layers=layers).to(device).eval()
        s = seconds_per_step(
            score, diffusion, counts, args.steps, [ClassifierGuidance(clf, 2, 1.0)], device, args.repeat
        )
        rows[f"classifier_{name}"] = {
            "s_per_step": s,
            "ratio": s / base,
            "classifier_parameters": sum(p.numel() for p in clf.parameters()),
        }
    reward = ScoreNetwork(backbone="egnn", hidden=64, num_layers=4).to(device).eval()
    s = seconds_per_step(
        score,
        diffusion,
        counts,
        args.steps,
        [RewardGuidance(reward, diffusion.schedule.sigma)],
        device,
        args.repeat,
    )
    rows["reward_egnn_64x4"] = {"s_per_step": s, "ratio": s / base}
    result = {
        "benchmark": "guided_sampling_step",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "molecules": args.molecules,
        "atoms": int(counts.sum()),
        "timed_steps": args.steps,
        "score_parameters": sum(p.numel() for p in score.parameters()),
        "results": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

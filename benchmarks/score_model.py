"""Score-model speed: prints one JSON object (and writes it with --out).

    python benchmarks/score_model.py [--repeat 5] [--sample-batch 64] [--timed-steps 10]
                                     [--full-sampling] [--device cpu|cuda] [--out FILE]

For EGNN 64x4, 128x6, 256x9 (EDM's size) and the e3nn default: forward+backward
milliseconds per batch of 64 QM9 molecules with hydrogens (median of --repeat after
a warm-up), the same EGNN written EDM's naive way (edge MLP on concatenated
features) measured side by side, and sampling seconds per molecule at 100 and 1,000
steps. Sampling cost is linear in the number of steps, so unless --full-sampling is
given it is extrapolated from --timed-steps timed steps and labelled as such.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

CONFIGS = {
    "egnn_64x4": ("egnn", {"hidden": 64, "num_layers": 4}),
    "egnn_128x6": ("egnn", {"hidden": 128, "num_layers": 6}),
    "egnn_256x9": ("egnn", {"hidden": 256, "num_layers": 9}),
    "e3nn_default": ("e3nn", {}),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fwd_bwd_ms(model, diffusion, batch, device, repeat: int) -> float:
    args = (
        batch["pos"].to(device),
        batch["onehot"].to(device),
        batch["batch"].to(device),
        int(batch["num_graphs"]),
    )
    times = []
    for k in range(repeat + 1):
        gen = torch.Generator().manual_seed(k)
        _sync(device)
        t0 = time.perf_counter()
        loss = diffusion.loss(model, *args, generator=gen)
        loss.backward()
        _sync(device)
        if k:  # the first call is the warm-up
            times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return 1000 * statistics.median(times)


def sampling_s_per_molecule(model, diffusion, counts, device, steps: int, timed_steps: int | None) -> dict:
    from molguide.diffusion.sampling import sample

    run_steps = steps if timed_steps is None else min(steps, timed_steps)
    _sync(device)
    t0 = time.perf_counter()
    # A grid of `run_steps` steps costs the same per step as the first steps of a longer one.
    sample(
        model,
        diffusion,
        counts,
        run_steps,
        "ancestral",
        generator=torch.Generator().manual_seed(0),
        device=device,
    )
    _sync(device)
    per_step = (time.perf_counter() - t0) / (run_steps + 1)  # + the final decode
    return {
        "s_per_molecule": per_step * (steps + 1) / len(counts),
        "extrapolated_from_steps": None if run_steps == steps else run_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sample-batch", type=int, default=64)
    parser.add_argument("--timed-steps", type=int, default=10)
    parser.add_argument("--full-sampling", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from molguide.data import edm_splits, load_qm9
    from molguide.data.graphs import collate_molecules
    from molguide.diffusion.nodes import NodeCountDistribution
    from molguide.diffusion.process import VPDiffusion
    from molguide.diffusion.schedule import NoiseSchedule
    from molguide.models import ScoreNetwork

    device = torch.device(args.device)
    qm9 = load_qm9()
    half = edm_splits(len(qm9))["generator_half"]
    batch = collate_molecules(qm9, half[:64])
    counts = NodeCountDistribution(qm9.num_atoms[half]).sample(
        args.sample_batch, torch.Generator().manual_seed(0)
    )
    diffusion = VPDiffusion(NoiseSchedule("polynomial_2", 1000))
    results = {}
    for name in args.configs:
        backbone, kwargs = CONFIGS[name]
        torch.manual_seed(0)
        model = ScoreNetwork(backbone=backbone, **kwargs).to(device)
        entry = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "fwd_bwd_ms_batch64": round(fwd_bwd_ms(model, diffusion, batch, device, args.repeat), 2),
        }
        if backbone == "egnn":
            torch.manual_seed(0)
            naive = ScoreNetwork(backbone="egnn", edge_input="concat", **kwargs).to(device)
            entry["naive_fwd_bwd_ms_batch64"] = round(
                fwd_bwd_ms(naive, diffusion, batch, device, args.repeat), 2
            )
            entry["speedup_vs_naive"] = round(
                entry["naive_fwd_bwd_ms_batch64"] / entry["fwd_bwd_ms_batch64"], 3
            )
        model.eval()
        timed = None if args.full_sampling else args.timed_steps
        for steps in (100, 1000):
            s = sampling_s_per_molecule(model, diffusion, counts, device, steps, timed)
            entry[f"sample_s_per_molecule_{steps}_steps"] = round(s["s_per_molecule"], 4)
            entry[f"sample_{steps}_steps_extrapolated_from"] = s["extrapolated_from_steps"]
        results[name] = entry
        print(name, json.dumps(entry), file=sys.stderr)

    report = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": {"molecules": 64, "atoms": int(batch["pos"].shape[0]), "split": "generator_half[:64]"},
        "sample_batch_molecules": args.sample_batch,
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

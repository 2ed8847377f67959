"""Molecule quality against sampling steps, for several samplers and time grids (issue 22).

Every (sampler, steps, grid power) cell samples the same atom counts and seeds from one
saved model and is judged by EDM's protocol plus strict validity; lost samples count as
invalid and unstable. Network evaluations (NFE) per molecule are steps + 1: one per step
and one final denoising at t = 0. Cells run in parallel processes, one thread each.

    python benchmarks/sampler_steps.py                                   # the shipped generator
    python benchmarks/sampler_steps.py --samplers ancestral dpmpp2m_sde --steps 10 20 25 50 100 500
    python benchmarks/sampler_steps.py --model models/mine --samples 1000 --out results.json
    python benchmarks/sampler_steps.py --samplers dpmpp2m_sde --steps 100 --etas 1 2 5 10  # eta's trade-off

Writes ``benchmarks/results/sampler_steps.json`` (every cell, the table, the machine).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    judge_samples,
    load_generator,  # noqa: E402
    machine,
)

from molguide.storage.files import atomic_write  # noqa: E402
from molguide.storage.trained_run import SHIPPED  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "sampler_steps.json"
KEYS = ("atom_stability", "mol_stability", "validity", "validity_strict", "uniqueness", "novelty")


def judge_cell(
    folder: str, n: int, steps: int, seed: int, batch_size: int, power: float, sampler: str, options: dict
) -> dict:
    """One cell on one thread (a process-pool worker); its options with the sampler's defaults
    filled in, so the result says what ran."""
    from molguide.diffusion.samplers import SAMPLERS

    options = {**SAMPLERS[sampler].OPTIONS, **options}
    from molguide.chem.smiles import qm9_training_smiles

    torch.set_num_threads(1)
    model = load_generator(folder)
    args = (model.model, model.diffusion, model.nodes, n, steps, seed, qm9_training_smiles(), batch_size)
    return judge_samples(*args, grid_power=power, sampler=sampler, sampler_options=options)


def table(cells: list[dict]) -> str:
    head = "| sampler | steps (NFE) | grid | " + " | ".join(f"{k} %" for k in KEYS) + " | s / molecule |"
    lines = [head, "| --- " * (4 + len(KEYS)) + "|"]
    for m in sorted(cells, key=lambda c: (c["sampler"], sorted(c["sampler_options"].items()), c["steps"])):
        values = " | ".join(f"{100 * (m[k] or 0):.1f}" for k in KEYS)
        options = ", ".join(f"{k} {v:g}" for k, v in m["sampler_options"].items())
        label = f"{m['sampler']} ({options})" if options else m["sampler"]
        lines.append(
            f"| {label} | {m['steps']} ({m['steps'] + 1}) | u^{m['grid_power']:g} | {values} "
            f"| {m['sample_s_per_molecule']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qm9", help="a saved model folder or a shipped name")
    parser.add_argument("--samplers", nargs="+", default=["ancestral", "dpmpp2m", "dpmpp2m_sde"])
    parser.add_argument("--steps", type=int, nargs="+", default=[20])
    parser.add_argument("--powers", type=float, nargs="+", default=[2.0])
    parser.add_argument(
        "--etas", type=float, nargs="+", default=[], help="eta values of dpmpp2m_sde (default: its own)"
    )
    parser.add_argument(
        "--eta-steps", type=int, nargs="+", help="the steps at which --etas run (default: all of --steps)"
    )
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    folder = str(SHIPPED.get(args.model, args.model))
    grid = []
    for name, steps, power in itertools.product(args.samplers, args.steps, args.powers):
        grid.append((name, steps, power, {}))
        if name == "dpmpp2m_sde" and (args.eta_steps is None or steps in args.eta_steps):
            grid += [(name, steps, power, {"eta": eta}) for eta in args.etas]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(len(grid), args.processes), mp_context=context) as pool:
        jobs = [
            pool.submit(judge_cell, folder, args.samples, s, args.seed, args.batch_size, p, name, options)
            for name, s, p, options in grid
        ]
        cells = [job.result() for job in jobs]
    result = {
        "model": folder,
        "training": load_generator(folder).config.get("training", {}),
        "samples": args.samples,
        "seed": args.seed,
        "cells": cells,
        "table_markdown": table(cells),
        "machine": machine(torch.device("cpu")),
    }
    payload = json.dumps(result, indent=1, default=str).encode()
    atomic_write(args.out, lambda fh: fh.write(payload))
    print(result["table_markdown"])


if __name__ == "__main__":
    main()

"""PoseBusters' molecule checks beside EDM's metrics: real QM9 molecules and generated ones (issue 22).

Rows, each on the same number of molecules:

- ``qm9_test``: real QM9 molecules (EDM's test split, a seeded random subset): the reference
  a generator is measured against;
- one row per sampler of the model (default: the shipped generator's recommended sampler,
  ``dpmpp2m_sde``, and EDM's ``ancestral``), raw samples at 100 steps.

Every row reports EDM's atom/molecule stability and validity, strict validity, and the
pass rate of each PoseBusters check (config ``mol``, raw geometries, bonds perceived from
the coordinates with total charge 0; a sample lost while sampling or whose bonds cannot be
perceived fails every check), with a 95 % Wilson interval for the all-checks rate.
PoseBusters' energy check embeds reference conformers with RDKit: about 1-2 s per molecule
on one core, so each row of 500 molecules takes 10-15 minutes. Finished rows are cached
in ``benchmarks/results/plausibility_rows/`` and a rerun goes on from them.

    python benchmarks/plausibility.py                      # 500 molecules per row
    python benchmarks/plausibility.py --molecules 200 --samplers dpmpp2m_sde
    python benchmarks/plausibility.py --model models/mine --out mine.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from molguide.storage.files import atomic_write  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "plausibility.json"
CACHE = HERE / "results" / "plausibility_rows"
EDM_KEYS = ("atom_stability", "mol_stability", "validity", "validity_strict")


def wilson(successes: float, n: int, z: float = 1.96) -> list[float]:
    """95 % Wilson score interval of a pass rate (successes out of n)."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def judge(molecules, n_requested: int, requested_atoms: int | None) -> dict:
    """EDM's metrics and PoseBusters' pass rates over ``n_requested`` molecules (lost ones fail)."""
    from molguide.chem import evaluate
    from molguide.chem.evaluate import over_requested
    from molguide.chem.plausibility import posebusters_checks
    from molguide.chem.smiles import qm9_training_smiles

    ev = evaluate(molecules, reference_smiles=qm9_training_smiles(), descriptors=False, progress=False)
    edm = over_requested(ev.metrics, molecules, n_requested, requested_atoms)
    checks = posebusters_checks(molecules, progress=True)
    scale = len(molecules) / n_requested if n_requested else 0.0  # lost samples fail every check
    rates = {name: rate * scale for name, rate in checks.pass_rates.items()}
    all_rate = checks.all_checks * scale
    return {
        "n": n_requested,
        **{k: edm.get(k) for k in EDM_KEYS},
        "posebusters_all": all_rate,
        "posebusters_all_ci95": wilson(all_rate * n_requested, n_requested),
        "posebusters": rates,
    }


def qm9_row(n: int, seed: int) -> dict:
    """Real molecules of EDM's test split (a seeded random subset of ``n``)."""
    from molguide.data import edm_splits, load_qm9

    qm9 = load_qm9()
    test = edm_splits(len(qm9))["test"]
    chosen = np.random.default_rng(seed).choice(test, size=n, replace=False)
    molecules = [qm9[int(i)] for i in chosen]
    return {"row": "qm9_test", **judge(molecules, n, sum(m.num_atoms for m in molecules))}


def generated_row(folder: str, sampler: str, n: int, steps: int, seed: int) -> dict:
    """``n`` raw samples of the model with ``sampler`` (its recommended options and grid
    when it is the model's own recommendation, else the sampler's defaults and u^2)."""
    from _common import load_generator

    from molguide.diffusion.samplers import SAMPLERS
    from molguide.generation.pipeline import MoleculeDiffusionPipeline

    model = load_generator(folder)
    recommended = model.config.get("sampler", {})
    options = dict(SAMPLERS[sampler].OPTIONS)
    if recommended.get("method") == sampler:
        options.update(recommended.get("options", {}))
    power = float(recommended.get("grid_power", 2.0))
    generator = torch.Generator().manual_seed(seed)
    counts = model.nodes.sample(n, generator)
    pipe = MoleculeDiffusionPipeline(
        model.model,
        model.diffusion,
        model.nodes,
        sampler=sampler,
        steps=steps,
        grid_power=power,
        sampler_options=options,
    )
    result = pipe(counts, batch_size=250, generator=generator, progress=True)
    row = judge(result.molecules, n, int(counts.sum()))
    return {
        "row": f"{sampler}_{steps}",
        "sampler": sampler,
        "sampler_options": options,
        "steps": steps,
        "grid_power": power,
        "seed": seed,
        **row,
    }


def cached(key: dict, compute) -> dict:
    """The row for ``key`` from the cache, or computed now and cached (atomically)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = CACHE / f"{key['row']}_{digest}.json"
    if path.exists():
        print(f"{key['row']}: cached ({path.name})", flush=True)
        return json.loads(path.read_text())
    row = compute()
    row["key"] = key
    CACHE.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write((json.dumps(row, indent=2) + "\n").encode()))
    return row


def table(rows: list[dict]) -> str:
    head = "| molecules | n | mol stable % | valid % | strict valid % | PoseBusters all % (95 % CI) |"
    lines = [head, "| --- " * 6 + "|"]
    for r in rows:
        lo, hi = r["posebusters_all_ci95"]
        lines.append(
            f"| {r['row']} | {r['n']} | {100 * (r['mol_stability'] or 0):.1f} | "
            f"{100 * (r['validity'] or 0):.1f} | {100 * (r['validity_strict'] or 0):.1f} | "
            f"{100 * r['posebusters_all']:.1f} ({100 * lo:.1f}-{100 * hi:.1f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qm9", help="a saved model folder or a shipped name")
    parser.add_argument("--samplers", nargs="+", default=["dpmpp2m_sde", "ancestral"])
    parser.add_argument("--molecules", type=int, default=500)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from molguide.storage.trained_run import SHIPPED

    folder = str(SHIPPED[args.model]) if args.model in SHIPPED else args.model
    weights = Path(folder) / "score" / "model.safetensors"  # a trained-run folder
    if not weights.exists():
        weights = Path(folder) / "model.safetensors"  # a folder of format 1
    model_id = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.exists() else folder
    at_start = machine(torch.device("cpu"))
    rows = [
        cached(
            {"row": "qm9_test", "n": args.molecules, "seed": args.seed},
            lambda: qm9_row(args.molecules, args.seed),
        )
    ]
    for sampler in args.samplers:
        key = {
            "row": f"{sampler}_{args.steps}",
            "model": model_id,
            "n": args.molecules,
            "steps": args.steps,
            "seed": args.seed,
        }
        rows.append(
            cached(key, lambda s=sampler: generated_row(folder, s, args.molecules, args.steps, args.seed))
        )
    report = {
        "benchmark": "plausibility",
        "model": args.model,
        "model_weights_sha256_16": model_id,
        "machine_at_start": at_start,
        "rows": rows,
        "table": table(rows),
    }
    atomic_write(args.out, lambda f: f.write((json.dumps(report, indent=2) + "\n").encode()))
    print(report["table"])


if __name__ == "__main__":
    main()

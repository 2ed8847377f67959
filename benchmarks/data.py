"""Data and evaluation speed: prints one JSON object (and writes it with --out).

    python benchmarks/data.py [--n-eval 1000] [--n-xtb 200] [--out benchmarks/results/data.json]

Measures, on this machine: QM9 cache build (parse the qm9pack CSVs, write the npz)
and load times, evaluation ms per molecule (bond perception with the Hueckel
fallback, EDM stability, SMILES, with and without RDKit descriptors), and GFN2-xTB
ms per molecule with 1 and with all worker processes (start-up included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--n-xtb", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from molguide.chem.evaluate import evaluate
    from molguide.chem.xtb import xtb_properties
    from molguide.data.qm9 import load_qm9

    with tempfile.TemporaryDirectory() as cache:
        build_s, _ = _timed(lambda: load_qm9(cache, rebuild=True))
        load_s, qm9 = _timed(lambda: load_qm9(cache), repeat=5)
        size_mb = sum(p.stat().st_size for p in Path(cache).iterdir()) / 1e6

    rng = np.random.default_rng(0)
    eval_mols = list(qm9.subset(rng.choice(len(qm9), args.n_eval, replace=False)))
    plain_s, ev = _timed(lambda: evaluate(eval_mols, reference_smiles=[], descriptors=False, progress=False))
    desc_s, _ = _timed(lambda: evaluate(eval_mols, reference_smiles=[], descriptors=True, progress=False))
    hueckel = sum(r.bond_method == "hueckel" for r in ev.molecules)

    xtb_mols = list(qm9.subset(rng.choice(len(qm9), args.n_xtb, replace=False)))
    cores = os.cpu_count() or 1
    one_s, out = _timed(lambda: xtb_properties(xtb_mols, workers=1))
    all_s, _ = _timed(lambda: xtb_properties(xtb_mols, workers=cores))
    ok = [k for k, o in enumerate(out) if isinstance(o, dict)]
    gap = np.array([out[k]["gap_eV"] for k in ok])
    dft = np.array([xtb_mols[k].properties["gap_eV"] for k in ok])

    result = {
        "machine": {"cpus": cores, "python": sys.version.split()[0], "platform": platform.platform()},
        "qm9_cache_build_s": round(build_s, 3),
        "qm9_cache_load_s": round(load_s, 3),
        "qm9_cache_mb": round(size_mb, 1),
        "n_molecules": len(qm9),
        "eval_molecules": args.n_eval,
        "eval_ms_per_molecule": round(1000 * plain_s / args.n_eval, 3),
        "eval_with_descriptors_ms_per_molecule": round(1000 * desc_s / args.n_eval, 3),
        "eval_hueckel_fallback_fraction": hueckel / args.n_eval,
        "eval_metrics": {k: v for k, v in ev.metrics.items() if v is not None},
        "xtb_molecules": args.n_xtb,
        "xtb_ms_per_molecule_1_worker": round(1000 * one_s / args.n_xtb, 3),
        f"xtb_ms_per_molecule_{cores}_workers": round(1000 * all_s / args.n_xtb, 3),
        "xtb_failures": args.n_xtb - len(ok),
        "xtb_gap_pearson_r_vs_dft": round(float(np.corrcoef(gap, dft)[0, 1]), 4),
        "xtb_gap_mean_offset_eV": round(float(np.mean(gap - dft)), 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

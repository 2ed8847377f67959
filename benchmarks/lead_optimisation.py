"""How far a lead moves, and how much its property improves, against the start level t0.

    python benchmarks/lead_optimisation.py --guidance training/qm9_protocol_cpu/protocol/alpha_bohr3

Leads are real QM9 molecules of the test split (EDM's split, never trained on) in the lowest
third of the property. Each is noised to t0 and denoised ``--variants`` times by the shipped
generator, unguided and with classifier guidance towards the property's top bin, paired
seed by seed (docs/edit.md). Per t0 and setting: the evaluator's mean improvement over the
lead with its 95 % bootstrap interval over leads, the Tanimoto similarity to the lead (Morgan, radius
2), the heavy-atom RMSD after superposition, the share that keeps the lead's Bemis-Murcko
scaffold, and strict validity. Writes benchmarks/results/lead_optimisation.json and a plot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
T0 = (0.1, 0.2, 0.3, 0.4, 0.6, 0.8)


def _leads(prop: str, n: int, seed: int):
    """``n`` test-split QM9 molecules in the lowest third of ``prop``, as RDKit Mols with bonds."""
    from molguide.chem.reconstruct import rebuild_molecule
    from molguide.data.registry import get_dataset

    dataset = get_dataset("qm9")
    molecules = dataset.load()
    test = dataset.splits(len(molecules))["test"]
    values = molecules.properties[prop][test]
    low = test[values < np.quantile(values, 1 / 3)]
    rng = np.random.default_rng(seed)
    leads = []
    for index in rng.permutation(low):
        rebuilt = rebuild_molecule(molecules[int(index)])
        if rebuilt.mol is not None and rebuilt.method == "connect-the-dots":
            mol = rebuilt.mol
            mol.SetProp("_Name", str(molecules.names[int(index)]))
            leads.append(mol)
        if len(leads) == n:
            return leads
    return leads


def _with_shipped_generator(folder: Path) -> str:
    """A run folder of the shipped generator plus ``folder``'s classifier and evaluator
    (a protocol property folder holds those networks without a score network)."""
    import shutil
    import tempfile

    from molguide.generation.pipeline import MoleculeDiffusionPipeline
    from molguide.storage.trained_run import write_index

    if (folder / "score").exists():
        return str(folder)
    run = Path(tempfile.mkdtemp(prefix="lead_optimisation_"))
    MoleculeDiffusionPipeline.from_pretrained("qm9").save_pretrained(run)
    for kind in ("classifier", "evaluator"):
        shutil.copytree(folder / kind, run / kind, ignore=shutil.ignore_patterns("last.pt"))
    write_index(run)
    return str(run)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--guidance", required=True, help="a run folder with the property's classifier and evaluator"
    )
    parser.add_argument("--leads", type=int, default=20)
    parser.add_argument("--variants", type=int, default=8)
    parser.add_argument("--weight", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import molguide
    from molguide.diagnostics.statistics import bootstrap_mean

    designer = molguide.load(_with_shipped_generator(Path(args.guidance)))
    prop = designer.properties[0]
    leads = _leads(prop, args.leads, args.seed)
    rows = []
    for t0 in T0:
        for name, guidance in (
            ("unguided", None),
            (f"classifier_w{args.weight:g}", {"classifier": args.weight}),
        ):
            started = time.perf_counter()
            gains, per_lead, tanimoto, rmsd, scaffold, strict = [], [], [], [], [], []
            for k, lead in enumerate(leads):
                target = {prop: "high"} if guidance else None
                mols = designer.optimize(
                    lead, args.variants, t0, target=target, guidance=guidance, seed=args.seed + k
                )
                own = [float(m.GetProp(f"evaluator_{prop}")) - float(m.GetProp(f"lead_{prop}")) for m in mols]
                gains += own
                per_lead.append(float(np.mean(own)))
                for mol in mols:
                    strict.append(int(mol.GetProp("valid_strict")))
                    for key, out in (
                        ("tanimoto_to_lead", tanimoto),
                        ("rmsd_to_lead", rmsd),
                        ("scaffold_kept", scaffold),
                    ):
                        if mol.HasProp(key):
                            out.append(float(mol.GetProp(key)))
            # Variants of one lead are correlated: the interval resamples leads, not variants.
            interval = bootstrap_mean(np.asarray(per_lead), seed=args.seed)
            row = {
                "t0": t0,
                "setting": name,
                "n": len(gains),
                "n_leads": len(per_lead),
                f"{prop}_improvement": interval.value,
                "ci_low": interval.ci_low,
                "ci_high": interval.ci_high,
                "tanimoto_to_lead": float(np.mean(tanimoto)) if tanimoto else None,
                "rmsd_to_lead": float(np.mean(rmsd)),
                "scaffold_kept": float(np.mean(scaffold)) if scaffold else None,
                "validity_strict": float(np.mean(strict)),
                "seconds": time.perf_counter() - started,
            }
            rows.append(row)
            print(json.dumps(row))
    given = sys.argv[1:] if argv is None else argv
    result = {
        "command": " ".join(["python benchmarks/lead_optimisation.py", *given]),
        "property": prop,
        "guidance": args.guidance,
        "leads": [lead.GetProp("_Name") for lead in leads],
        "variants_per_lead": args.variants,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lead_optimisation.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, RESULTS / "lead_optimisation.png")
    write_table(result, RESULTS / "lead_optimisation.md")
    return result


def write_table(result: dict, path: Path) -> None:
    """The rows as a Markdown table (docs/edit.md includes it)."""
    prop = result["property"]
    lines = [
        f"| t0 | setting | n | {prop} improvement [95 % CI] | Tanimoto | RMSD (A) | scaffold kept "
        "| strict valid |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        tanimoto = "-" if r["tanimoto_to_lead"] is None else f"{r['tanimoto_to_lead']:.2f}"
        scaffold = "-" if r["scaffold_kept"] is None else f"{r['scaffold_kept']:.2f}"
        lines.append(
            f"| {r['t0']:g} | {r['setting']} | {r['n']} | {r[f'{prop}_improvement']:+.2f} "
            f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] | {tanimoto} | {r['rmsd_to_lead']:.2f} "
            f"| {scaffold} | {r['validity_strict']:.2f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def _plot(result: dict, path: Path) -> None:
    from molguide.diagnostics.plots import plot_lead_curve

    prop = result["property"]
    rows = [{**r, "improvement": r[f"{prop}_improvement"]} for r in result["rows"]]
    plot_lead_curve(rows, path, f"{prop} improvement over the lead")


if __name__ == "__main__":
    main()

"""Molecules grown around kept atoms: RePaint on the shipped generator against a generator
trained to keep atoms, side by side on the same references and seeds.

    python benchmarks/keep_fragment.py                                  # the shipped generator alone
    python benchmarks/keep_fragment.py --models qm9 /tmp/frag_final --n 40   # beside an exported model

For each model, 100 ancestral steps, seed 0:

- ``unconstrained``: plain sampling (the model's quality without kept atoms);
- ``furan kept``: the furan ring (5 heavy atoms) of an RDKit-embedded 5-methylfurfuryl
  alcohol kept, the rest (its hydrogens included) grown from noise to QM9-sized molecules
  (``generate(keep=...)``); ``keep_matched``: the furan SMARTS matches the result;
- ``hydrogens regrown``: held-out QM9 molecules (the test split, which no generator here
  trained on) with every heavy atom kept and the hydrogens generated; ``same_molecule``:
  the result's canonical SMILES is the original's (both perceived alike from coordinates);
- ``part regrown``: the same molecules with the heavy atoms nearest a random atom kept
  (half of them, hydrogens of the kept part too) and the rest generated; ``same_molecule``
  as above (other valid completions are fine, this says how often the original comes back);
- ``lead, all atoms but one H kept, t0 0.5``: the alcohol re-made from t0 = 0.5.

Validity is EDM's, strict validity RDKit sanitisation of the perceived molecule (docs/evaluate.md).
Writes benchmarks/results/keep_fragment.json (docs/edit.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULT = Path(__file__).parent / "results" / "keep_fragment.json"


def _references(n: int, seed: int):
    """Held-out QM9 molecules and, per molecule, the heavy atoms nearest a random heavy atom."""
    from molguide.data.registry import get_dataset

    dataset = get_dataset("qm9")
    molecules = dataset.load()
    test = molecules.subset(dataset.splits(len(molecules))["test"][:n])
    rng = np.random.default_rng(seed)
    parts = []
    for mol in test:
        heavy = np.flatnonzero(mol.atomic_numbers > 1)
        centre = mol.positions[rng.choice(heavy)]
        order = heavy[np.argsort(np.linalg.norm(mol.positions[heavy] - centre, axis=1), kind="stable")]
        kept = np.zeros(mol.num_atoms, dtype=bool)
        kept[order[: max(1, len(heavy) // 2)]] = True
        # the kept heavy atoms' own hydrogens stay too (nearest heavy atom kept)
        for i in np.flatnonzero(mol.atomic_numbers == 1):
            nearest = heavy[np.argmin(np.linalg.norm(mol.positions[heavy] - mol.positions[i], axis=1))]
            kept[i] = kept[nearest]
        parts.append(kept)
    return list(test), parts


def _smiles(molecules) -> list[str | None]:
    from molguide.chem.evaluate import evaluate

    return [r.smiles for r in evaluate(molecules, reference_smiles=[], descriptors=False).molecules]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["qm9"], help="shipped names or saved model folders")
    parser.add_argument("--n", type=int, default=40, help="molecules per row")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    from rdkit import Chem
    from rdkit.Chem import AllChem

    import molguide
    from molguide.chem.evaluate import evaluate
    from molguide.diffusion.editing import MoleculeEdit
    from molguide.diffusion.process import network_setting
    from molguide.generation.from_molecules import type_indices

    lead = Chem.AddHs(Chem.MolFromSmiles("OCc1ccc(C)o1"))
    AllChem.EmbedMolecule(lead, randomSeed=0)
    AllChem.MMFFOptimizeMolecule(lead)
    originals, parts = _references(args.n, seed=0)
    original_smiles = _smiles(originals)
    steps, rows = 100, []

    for name in args.models:
        designer = molguide.load(name)
        exact = bool(network_setting(designer.pipeline.model, "fixed_atoms", False))

        head = {"model": name, "keeping": "trained with fixed atoms" if exact else "RePaint"}

        def judged(setting: str, returned: int, metrics: dict, started: float, **extra) -> None:
            row = {
                **head,  # noqa: B023 - called within this iteration only
                "setting": setting,
                "n": returned,
                "validity": metrics.get("validity"),
                "validity_strict": metrics.get("validity_strict"),
                "seconds": round(time.perf_counter() - started, 1),
                **extra,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

        started = time.perf_counter()
        plain = designer.generate(args.n, seed=0, method="ancestral", steps=steps)
        judged("unconstrained", len(plain), designer.last_metrics, started)

        started = time.perf_counter()
        grown = designer.generate(args.n, seed=0, method="ancestral", steps=steps, keep=(lead, "c1ccoc1"))
        matched = float(np.mean([m.GetIntProp("keep_matched") for m in grown])) if grown else 0.0
        judged("furan kept", len(grown), designer.last_metrics, started, keep_matched=matched)

        types = [type_indices(m, designer.run.atom_types) for m in originals]
        for setting, masks in (
            ("hydrogens regrown", [m.atomic_numbers > 1 for m in originals]),
            ("part regrown", parts),
        ):
            edit = MoleculeEdit([m.positions for m in originals], types, 1.0, masks)
            started = time.perf_counter()
            result = designer.pipeline(edit.counts, seed=0, steps=steps, sampler="ancestral", edit=edit)
            judged_mols = evaluate(result.molecules, reference_smiles=[], descriptors=False)
            same = [
                r.smiles is not None and r.smiles == original_smiles[i]
                for i, r in zip(result.indices, judged_mols.molecules)
            ]
            judged(
                setting,
                len(result.molecules),
                judged_mols.metrics,
                started,
                same_molecule=float(np.sum(same)) / args.n,
                lost=len(result.failures),
            )

        keep = list(range(lead.GetNumAtoms() - 1))
        started = time.perf_counter()
        again = designer.optimize(lead, n=args.n, t0=0.5, keep=keep, seed=0, method="ancestral")
        judged("lead, all atoms but one H kept, t0 0.5", len(again), designer.last_metrics, started)

    result = {
        "command": " ".join(
            ["python benchmarks/keep_fragment.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "arguments": {"models": args.models, "n": args.n},
        "steps": steps,
        "sampler": "ancestral",
        "original_molecules_valid_strict": float(np.mean([s is not None for s in original_smiles])),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

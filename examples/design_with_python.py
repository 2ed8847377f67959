"""Generate molecules towards a high HOMO-LUMO gap from a trained molguide run.

    python examples/design_with_python.py runs/quickstart          # a run folder
    python examples/design_with_python.py runs:/<run_id>           # or an MLflow run id

Writes guided.sdf and unguided.sdf (RDKit molecules with 3D conformers and properties as
SD tags) and prints the evaluator's mean gap and the chemistry metrics of both sets.
"""

from __future__ import annotations

import sys

import numpy as np

import molguide


def main(source: str, n: int = 50, out_prefix: str = "") -> dict:
    designer = molguide.load(source)
    print(designer)
    unguided = designer.generate(n, seed=0)
    guided = designer.generate(
        n, target={"gap_eV": "high"}, guidance={"classifier": 2.0, "reward": 2.0}, seed=0
    )
    molguide.write_sdf(unguided, f"{out_prefix}unguided.sdf")
    molguide.write_sdf(guided, f"{out_prefix}guided.sdf")
    summary = {}
    for name, mols in (("unguided", unguided), ("guided", guided)):
        gap = [float(m.GetProp("evaluator_gap_eV")) for m in mols if m.HasProp("evaluator_gap_eV")]
        report = molguide.evaluate(mols, novelty=False)
        summary[name] = {
            "n": len(mols),
            "gap_eV_mean": float(np.mean(gap)),
            "validity": report["validity"],
            "validity_strict": report["validity_strict"],
        }
        print(
            f"{name:>9}: {len(mols)} molecules, predicted gap {np.mean(gap):.3f} eV, "
            f"EDM validity {report['validity']:.3f}, strict validity {report['validity_strict']:.3f}, "
            f"atom stability {report['atom_stability']:.3f}"
        )
    return summary


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart")

"""Molecules grown around a kept fragment by the shipped generator, against plain sampling.

    python benchmarks/keep_fragment.py

A furan ring (5 atoms of an RDKit-embedded 5-methylfurfuryl alcohol) is kept and the rest
generated from noise, with RePaint's replacement alone and with resampling (5 tries per
step), 40 molecules each, 100 ancestral steps, seed 0; beside them 40 unconstrained
molecules of the same sampler, and the lead re-made with all atoms but one hydrogen kept
from t0 = 0.5. Writes benchmarks/results/keep_fragment.json (docs/edit.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

RESULT = Path(__file__).parent / "results" / "keep_fragment.json"


def main() -> dict:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    import molguide
    from molguide.diffusion.editing import MoleculeEdit
    from molguide.generation.from_molecules import (
        as_molecule,
        counts_above,
        grown_edit,
        kept_atoms,
        type_indices,
    )

    lead = Chem.AddHs(Chem.MolFromSmiles("OCc1ccc(C)o1"))
    AllChem.EmbedMolecule(lead, randomSeed=0)
    AllChem.MMFFOptimizeMolecule(lead)
    designer = molguide.load("qm9")
    n, steps, rows = 40, 100, []

    def judged(name: str, mols: list, seconds: float, **extra) -> None:
        row = {
            "setting": name,
            "n": len(mols),
            "validity": designer.last_metrics.get("validity"),
            "validity_strict": designer.last_metrics.get("validity_strict"),
            "seconds": seconds,
            **extra,
        }
        if mols and mols[0].HasProp("keep_matched"):
            row["keep_matched"] = float(np.mean([m.GetIntProp("keep_matched") for m in mols]))
        rows.append(row)
        print(json.dumps(row))

    started = time.perf_counter()
    plain = designer.generate(n, seed=0, method="ancestral", steps=steps)
    judged("unconstrained", plain, time.perf_counter() - started)
    for resample in (1, 5):
        # generate(keep=...) with resampling: the same references, through the pipeline.
        whole = as_molecule(lead)
        ring = kept_atoms(lead, "c1ccoc1", whole.num_atoms)
        fragment = type(whole)(whole.atomic_numbers[ring], whole.positions[ring])
        types = type_indices(fragment, designer.run.atom_types)
        sizes = counts_above(designer.pipeline.nodes, n, len(ring) + 1, 0)
        grown = grown_edit(fragment, types, sizes)
        edit = MoleculeEdit(grown.positions, grown.types, 1.0, grown.keep, resample)
        started = time.perf_counter()
        result = designer.pipeline(sizes, seed=0, steps=steps, sampler="ancestral", edit=edit)
        mols = designer._to_rdkit(result.molecules, True)
        query = Chem.MolFromSmarts("c1ccoc1")
        for mol in mols:
            mol.SetIntProp("keep_matched", int(mol.GetNumBonds() > 0 and mol.HasSubstructMatch(query)))
        judged(f"furan kept, resample {resample}", mols, time.perf_counter() - started, resample=resample)
    keep = list(range(lead.GetNumAtoms() - 1))
    started = time.perf_counter()
    again = designer.optimize(lead, n=n, t0=0.5, keep=keep, seed=0, method="ancestral")
    judged("lead, all atoms but one H kept, t0 0.5", again, time.perf_counter() - started)
    result = {
        "command": "python benchmarks/keep_fragment.py",
        "steps": steps,
        "sampler": "ancestral",
        "rows": rows,
    }
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

"""Relaxing generated molecules with a force field, kept apart from the raw ones.

A generated geometry is the model's; a chemist often wants it relaxed before docking or
a quantum calculation. :func:`relax_mmff` minimises each molecule with RDKit's MMFF94 on
its perceived bonds and returns new molecules: the raw ones are never changed, so raw and
relaxed metrics are always computed on separate sets (docs/evaluate.md). A molecule MMFF
cannot type (no bonds perceived, an element or charge state MMFF lacks) is returned
unrelaxed with the reason in ``relax_notes``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def relax_mmff(mols: Iterable, max_iters: int = 2000) -> list:
    """MMFF94-relaxed copies of RDKit Mols with bonds and a 3D conformer. Each copy carries
    ``relaxed`` (``mmff``, or ``none`` when it could not be relaxed), ``relax_energy_change``
    (kcal/mol, relaxed minus raw), ``relax_rmsd`` (Angstrom, all atoms, superposed) and
    ``relax_converged`` (1/0), or ``relax_notes`` saying why it was not relaxed."""
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolAlign

    out = []
    for mol in mols:
        copy = Chem.Mol(mol)
        for key in list(copy.GetPropNames()):  # the raw geometry's results do not describe the copy
            copy.ClearProp(key)
        if mol.HasProp("_Name"):
            copy.SetProp("_Name", mol.GetProp("_Name"))
        reason = None
        if copy.GetNumBonds() == 0:
            reason = "no bonds perceived"
        else:
            try:
                Chem.SanitizeMol(copy)
                properties = AllChem.MMFFGetMoleculeProperties(copy)
                if properties is None:
                    reason = "MMFF has no parameters for an atom of this molecule"
            except (ValueError, RuntimeError) as err:
                reason = f"RDKit cannot sanitise it ({' '.join(str(err).split())[:120]})"
        if reason is not None:
            copy.SetProp("relaxed", "none")
            copy.SetProp("relax_notes", reason)
            out.append(copy)
            continue
        field = AllChem.MMFFGetMoleculeForceField(copy, properties)
        before = field.CalcEnergy()
        converged = field.Minimize(maxIts=max_iters) == 0
        after = field.CalcEnergy()
        copy.SetProp("relaxed", "mmff")
        copy.SetDoubleProp("relax_energy_change", float(after - before))
        same_atoms = [(i, i) for i in range(copy.GetNumAtoms())]  # a copy: atom i is atom i
        copy.SetDoubleProp("relax_rmsd", float(rdMolAlign.AlignMol(Chem.Mol(copy), mol, atomMap=same_atoms)))
        copy.SetIntProp("relax_converged", int(converged))
        out.append(copy)
    return out


def relaxation_summary(relaxed: list) -> dict[str, float | None]:
    """How many were relaxed and the mean RMSD and energy change of those (for the log)."""
    done = [m for m in relaxed if m.GetProp("relaxed") == "mmff"]
    rmsd = [m.GetDoubleProp("relax_rmsd") for m in done]
    energy = [m.GetDoubleProp("relax_energy_change") for m in done]
    return {
        "relaxed_fraction": len(done) / len(relaxed) if relaxed else None,
        "relax_rmsd_mean": float(np.mean(rmsd)) if rmsd else None,
        "relax_energy_change_mean": float(np.mean(energy)) if energy else None,
    }

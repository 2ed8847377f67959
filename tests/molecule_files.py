"""Molecule files for the reader and bad-input tests, written with RDKit at test time."""

from __future__ import annotations

from pathlib import Path

# (id, SMILES, vendor text): an alcohol, an aromatic phenol, a zwitterion with charges.
ZINC_STYLE = [
    ("ZINC000000000001", "CCO", "Enamine REAL; in stock"),
    ("ZINC000000000002", "c1ccccc1O", "Sigma-Aldrich (2-3 weeks)"),
    ("ZINC000000000003", "[NH3+]CC(=O)[O-]", "Mcule <on request>"),
]


def zinc_style_sdf(path: Path) -> Path:
    """A ZINC-style SDF: 3D conformers with hydrogens, text and numeric SD tags, among them
    ``smiles``, ``qed`` and ``logp``, which molguide also computes."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    writer = Chem.SDWriter(str(path))
    for k, (zinc_id, smiles, vendor) in enumerate(ZINC_STYLE):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=7 + k)
        AllChem.MMFFOptimizeMolecule(mol)
        mol.SetProp("_Name", zinc_id)
        mol.SetProp("zinc_id", zinc_id)
        mol.SetProp("smiles", smiles)
        mol.SetProp("qed", "0.5")
        mol.SetProp("logp", "-1.25")
        mol.SetProp("vendor", vendor)
        writer.write(mol)
    writer.close()
    return path


def sdf_records(path: Path) -> list[str]:
    """The record texts of an SDF, each without its ``$$$$`` line."""
    text = Path(path).read_text()
    return [r + "\n" if not r.endswith("\n") else r for r in text.split("$$$$\n") if r.strip()]

"""A user's own molecule files for the tests: small real molecules with sulfur and chlorine
(elements QM9 lacks), embedded by RDKit, with Crippen's logP as an SD tag or CSV column."""

from __future__ import annotations

from pathlib import Path

# Small molecules (thiols, sulfides, chlorides, heterocycles, acids, amines): real chemistry
# with S and Cl beside H, C, N, O, so that atom types come from the data.
SMILES = (
    "CS", "CCS", "CCCS", "CSC", "CCSC", "CSSC", "C1CCSC1", "C1CSC1", "c1ccsc1", "Cc1ccsc1",
    "CC(=O)S", "CSC=O", "NCCS", "OCCS", "CS(C)=O", "CS(=O)(=O)C", "CCS(C)=O", "SCC(=O)O",
    "CCl", "CCCl", "ClCCl", "ClC(Cl)Cl", "CC(C)Cl", "ClCCO", "ClCCN", "ClCC=O", "CC(=O)Cl",
    "ClC=C", "ClC#C", "Clc1ccccc1", "Clc1ccncc1", "Clc1ccc(O)cc1", "ClCC#N", "CC(Cl)C#N",
    "CCO", "CCCO", "CC(C)O", "CCN", "CCCN", "CC(=O)O", "CC(=O)N", "CC#N", "C1CC1", "C1CCC1",
    "C1CCOC1", "C1CCNC1", "c1ccccc1", "c1ccncc1", "c1ccoc1", "c1cc[nH]c1", "CC(C)C", "CCOC",
    "COC=O", "NC=O", "OC=O", "CC=O", "CCC=O", "CC(C)=O", "C=CC", "C#CC", "OCCO", "NCCN",
    "SCCCl", "ClCCS", "CSCCl", "ClCSC", "Sc1ccccc1", "Clc1ccsc1", "CC(S)Cl", "OC(=O)CCl",
    "NC(=O)CS", "CC(=O)SC", "ClCC(Cl)Cl", "SCCS", "CCSCC", "CSc1ccccc1", "CCCCl", "CCCCS",
    "ClC1CC1", "SC1CC1", "OC1CCSC1", "NC1CCSC1", "ClC1CCOC1", "CC1CCSC1", "c1cnsc1", "c1cscn1",
    "Cc1nccs1", "Clc1cccnc1", "COCCl", "COCCS", "CNCCl", "CNCCS", "CC(O)CS", "CC(O)CCl",
)  # fmt: skip


def crippen_logp(smiles: str) -> float:
    """Crippen's logP of a SMILES (RDKit): the property the tests steer."""
    from rdkit import Chem
    from rdkit.Chem import Crippen

    return float(Crippen.MolLogP(Chem.MolFromSmiles(smiles)))


def write_own_sdf(
    path: Path, smiles: tuple[str, ...] = SMILES, seed: int = 0, bad_records: bool = True
) -> Path:
    """An SDF of ``smiles`` embedded in 3D (ETKDGv3 + MMFF) with ``logP`` and ``source`` tags;
    with ``bad_records``, one record without a value and one that is not a molecule at all."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    blocks = []
    for k, smi in enumerate(smiles):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        params = AllChem.ETKDGv3()
        params.randomSeed = seed + k
        assert AllChem.EmbedMolecule(mol, params) == 0, smi
        AllChem.MMFFOptimizeMolecule(mol)
        mol.SetProp("_Name", f"own_{k}")
        if not (bad_records and k == 3):  # record 4 has no logP: it trains the generator only
            mol.SetProp("logP", f"{crippen_logp(smi):.4f}")
        mol.SetProp("source", "tests")
        blocks.append(Chem.MolToMolBlock(mol) + "".join(
            f">  <{key}>\n{mol.GetProp(key)}\n\n" for key in ("logP", "source") if mol.HasProp(key)
        ) + "$$$$\n")  # fmt: skip
    if bad_records:
        blocks.insert(
            10, "not a molecule\n  nothing\n\n  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n"
        )
    path.write_text("".join(blocks))
    return path


def write_own_csv(path: Path, smiles: tuple[str, ...] = SMILES) -> Path:
    """A CSV of ``smiles`` with their ``logP`` and a text column, plus one SMILES that does not parse."""
    rows = ["smiles,name,logP,source"]
    rows += [f"{smi},own_{k},{crippen_logp(smi):.4f},tests" for k, smi in enumerate(smiles)]
    rows.insert(6, "C1CC,broken_ring,1.0,tests")
    path.write_text("\n".join(rows) + "\n")
    return path


ROOT = Path(__file__).resolve().parents[1]

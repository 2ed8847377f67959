"""RDKit descriptor oracles: cheap, deterministic properties of a valid molecule."""

from __future__ import annotations


def _sa_scorer():
    # The SA score ships in RDKit's Contrib folder, not in the rdkit.Chem namespace.
    from rdkit.Contrib.SA_Score import sascorer

    return sascorer


def rdkit_descriptors(mol) -> dict[str, float]:
    """QED, Crippen logP, TPSA, ring counts and SA score (1 easy .. 10 hard) of a sanitised Mol."""
    from rdkit import Chem
    from rdkit.Chem import QED, Crippen, rdMolDescriptors

    heavy = Chem.RemoveHs(mol)
    return {
        "qed": float(QED.qed(heavy)),
        "logp": float(Crippen.MolLogP(heavy)),
        "tpsa": float(rdMolDescriptors.CalcTPSA(heavy)),
        "num_rings": float(rdMolDescriptors.CalcNumRings(heavy)),
        "num_aromatic_rings": float(rdMolDescriptors.CalcNumAromaticRings(heavy)),
        "sa_score": float(_sa_scorer().calculateScore(heavy)),
    }

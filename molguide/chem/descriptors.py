"""RDKit descriptor oracles: cheap, deterministic properties of a valid molecule."""

from __future__ import annotations


def _sa_scorer():
    # The SA score ships in RDKit's Contrib folder, not in the rdkit.Chem namespace.
    from rdkit.Contrib.SA_Score import sascorer

    return sascorer


def rdkit_descriptors(mol) -> dict[str, float]:
    """QED, Crippen logP, TPSA, ring counts, SA score (1 easy .. 10 hard) and the drug-likeness
    counts a chemist filters on (molecular weight, H-bond donors and acceptors, rotatable
    bonds, Lipinski's rule-of-five violations) of a sanitised Mol."""
    from rdkit import Chem
    from rdkit.Chem import QED, Crippen, Descriptors, Lipinski, rdMolDescriptors

    heavy = Chem.RemoveHs(mol)
    weight, logp = float(Descriptors.MolWt(heavy)), float(Crippen.MolLogP(heavy))
    donors, acceptors = float(Lipinski.NumHDonors(heavy)), float(Lipinski.NumHAcceptors(heavy))
    return {
        "qed": float(QED.qed(heavy)),
        "logp": logp,
        "tpsa": float(rdMolDescriptors.CalcTPSA(heavy)),
        "num_rings": float(rdMolDescriptors.CalcNumRings(heavy)),
        "num_aromatic_rings": float(rdMolDescriptors.CalcNumAromaticRings(heavy)),
        "sa_score": float(_sa_scorer().calculateScore(heavy)),
        "mol_weight": weight,
        "h_donors": donors,
        "h_acceptors": acceptors,
        "rotatable_bonds": float(rdMolDescriptors.CalcNumRotatableBonds(heavy)),
        "lipinski_violations": float((weight > 500) + (logp > 5) + (donors > 5) + (acceptors > 10)),
    }


ALERT_CATALOGS = ("PAINS", "BRENK")


def _catalog():
    from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

    params = FilterCatalogParams()
    for name in ALERT_CATALOGS:
        params.AddCatalog(getattr(FilterCatalogParams.FilterCatalogs, name))
    return FilterCatalog(params)


_CATALOG = None


def structural_alerts(mol) -> tuple[dict[str, float], list[str]]:
    """RDKit's PAINS (Baell and Holloway 2010) and Brenk (Brenk et al. 2008) alerts of a
    sanitised Mol: their counts (``pains_alerts``, ``brenk_alerts``) and the names matched,
    as ``PAINS: ene_five_het_A`` (a flag for a chemist to look at, not a verdict)."""
    global _CATALOG
    if _CATALOG is None:  # built once per process (about 0.1 s)
        _CATALOG = _catalog()
    counts = {f"{name.lower()}_alerts": 0.0 for name in ALERT_CATALOGS}
    names = []
    for entry in _CATALOG.GetMatches(mol):
        catalog = "PAINS" if "PAINS" in str(entry.GetProp("FilterSet")).upper() else "BRENK"
        counts[f"{catalog.lower()}_alerts"] += 1
        names.append(f"{'PAINS' if catalog == 'PAINS' else 'Brenk'}: {entry.GetDescription()}")
    return counts, names

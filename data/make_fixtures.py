"""Write the small fixture files in data/fixtures/ (run from the repository root).

- qm9_sample.xyz: 100 QM9 molecules (DFT geometries) from the EDM test split, seed 0,
  with their properties as extended-XYZ key=value pairs;
- qm9_sample.sdf: the same molecules as SDF with properties as SD tags;
- mixed_bad.xyz / mixed_bad.sdf: good records with deliberately broken ones between;
- smiles.csv: SMILES with a property column, including a SMILES that does not parse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from molguide.data import edm_splits, load_qm9, write_sdf
from molguide.data.io import write_xyz

OUT = Path(__file__).parent / "fixtures"
PROPS = ("gap_eV", "homo_eV", "lumo_eV", "mu_D", "alpha_bohr3", "cv_calmolK")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    qm9 = load_qm9()
    test = edm_splits(len(qm9))["test"]
    idx = np.random.RandomState(0).choice(test, 100, replace=False)
    sample = qm9.subset(idx)
    mols = list(sample)
    for m in mols:
        m.properties = {k: m.properties[k] for k in PROPS}
    write_xyz(mols, OUT / "qm9_sample.xyz")
    write_sdf(mols, OUT / "qm9_sample.sdf")

    good = (OUT / "qm9_sample.xyz").read_text().split("\n")
    # Records of the sample file: find the first five and break some neighbours.
    blocks, i = [], 0
    while i < len(good) and good[i].strip():
        n = int(good[i])
        blocks.append(good[i : i + n + 2])
        i += n + 2
    b = blocks
    broken = [
        *b[0],
        "3", "missing atom line", "C 0.0 0.0 0.0", "H 1.0 0.0 0.0",  # declares 3, has 2
        *b[1],
        "2", "unknown element", "Xx 0.0 0.0 0.0", "H 0.0 0.0 1.1",
        *b[2],
        "2", "bad coordinate", "C 0.0 abc 0.0", "H 0.0 0.0 1.1",
        "not-a-count",
        *b[3],
        *b[4],
    ]  # fmt: skip
    (OUT / "mixed_bad.xyz").write_text("\n".join(broken) + "\n")

    sdf_blocks = (OUT / "qm9_sample.sdf").read_text().split("$$$$\n")[:4]
    bad_count = sdf_blocks[1].split("\n")
    bad_count[3] = "  9" + bad_count[3][3:]  # claims more atoms than the block has... or fewer
    bad_element = sdf_blocks[2].split("\n")
    bad_element[4] = bad_element[4][:31] + "Qq" + bad_element[4][33:]
    sdf = [sdf_blocks[0], "garbage\nnot a molfile\n", "\n".join(bad_count), "\n".join(bad_element),
           sdf_blocks[3]]  # fmt: skip
    (OUT / "mixed_bad.sdf").write_text("$$$$\n".join(sdf) + "$$$$\n")

    (OUT / "smiles.csv").write_text(
        "name,smiles,gap_eV\n"
        "ethanol,CCO,9.1\n"
        "broken,C1CC(,1.0\n"
        "benzene,c1ccccc1,6.8\n"
        "empty,,2.0\n"
        "acetic_acid,CC(=O)O,not-a-number\n"
        "pyridine,c1ccncc1,6.1\n"
    )


if __name__ == "__main__":
    main()

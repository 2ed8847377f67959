"""Registries: what one entry adds is accepted by configs and used by the code (backbones,
samplers, data sets), and unknown names list the known ones."""

import numpy as np
import pytest
import torch

from molguide.data.registry import DATASETS, Dataset, get_dataset, register_dataset, split_molecules
from molguide.diffusion.samplers import SAMPLERS, AncestralSampler, register_sampler
from molguide.models.registry import BACKBONES, build_backbone, register_backbone
from molguide.runs.config import ConfigError, load_config


def test_a_registered_sampler_is_a_valid_config_value():
    with pytest.raises(
        ConfigError, match="sample.method: Input should be 'ancestral', 'ddim', 'dpmpp2m' or 'dpmpp2m_sde'"
    ):
        load_config(overrides=["sample.method=noisy_test"])

    @register_sampler
    class NoisyTest(AncestralSampler):
        name = "noisy_test"

    try:
        config = load_config(overrides=["sample.method=noisy_test", "guide.method=noisy_test"])
        assert config.sample.method == config.guide.method == "noisy_test"
    finally:
        del SAMPLERS["noisy_test"]


def test_a_registered_backbone_builds_networks_and_passes_config_validation():
    from molguide.models import ScoreNetwork
    from molguide.models.egnn import EGNN

    class SmallEGNN(EGNN):
        """A user's backbone: here EGNN with other defaults."""

        def __init__(self, in_features: int, out_features: int, **kwargs) -> None:
            super().__init__(in_features, out_features, **{"hidden": 8, "num_layers": 1, **kwargs})

    register_backbone("small_egnn_test", lambda: SmallEGNN)
    try:
        assert load_config(overrides=["model.backbone=small_egnn_test"]).model.backbone == "small_egnn_test"
        net = ScoreNetwork(backbone="small_egnn_test")
        assert isinstance(net.backbone, SmallEGNN) and net.config["backbone"] == "small_egnn_test"
        x, h = torch.randn(4, 3), torch.randn(4, 5)
        out = net(x, h, torch.tensor([0.5]), torch.zeros(4, dtype=torch.long))
        assert out[0].shape == (4, 3) and out[1].shape == (4, 5)
        with pytest.raises(ValueError, match="registered already"):
            register_backbone("small_egnn_test", lambda: SmallEGNN)
    finally:
        del BACKBONES["small_egnn_test"]
    with pytest.raises(
        ValueError, match=r"unknown backbone 'small_egnn_test'; choose one of \['egnn', 'e3nn'\]"
    ):
        build_backbone("small_egnn_test", 6, 5)


def test_a_registered_data_set_is_loaded_split_and_validated(qm9):
    """A data set of 200 QM9 molecules split by hand: configs accept its name and properties."""
    small = qm9.subset(np.arange(200))

    def splits(n: int) -> dict[str, np.ndarray]:
        idx = np.arange(n)
        return {
            "train": idx[:150],
            "valid": idx[150:],
            "generator_half": idx[:75],
            "evaluator_half": idx[75:150],
        }

    qm9_entry = get_dataset("qm9")
    register_dataset(
        Dataset(
            "tiny_test",
            lambda: small,
            splits,
            qm9_entry.properties,
            ("mu_D",),
            qm9_entry.atom_types,
            frozenset,
        )
    )
    try:
        config = load_config(overrides=["data.dataset=tiny_test", "target.property=mu_D"])
        mols = split_molecules(config.data)
        assert len(mols) == 75 and np.array_equal(mols.num_atoms, small.num_atoms[:75])
        assert len(split_molecules(config.data, "valid", 10)) == 10
        with pytest.raises(ValueError, match="has no split 'test'"):
            split_molecules(config.data, "test")
        with pytest.raises(ValueError, match="targets \\['nope'\\] are not among its properties"):
            props = qm9_entry.properties
            bad = Dataset("bad_test", lambda: small, splits, props, ("nope",), (1, 6), frozenset)
            register_dataset(bad)
    finally:
        del DATASETS["tiny_test"]
    with pytest.raises(ConfigError, match="data.dataset: Input should be 'qm9'"):
        load_config(overrides=["data.dataset=tiny_test"])


def test_a_registered_guidance_kind_gets_its_weight_config_section_record_and_command():
    """One GuidanceKind (registered before the config is imported, as molguide's own kinds
    are in guidance/kinds.py) gives the guide section its weight, the run config its
    network's section, the saved-network loader its record and the CLI its train command."""
    import subprocess
    import sys

    program = """
from molguide.guidance.kinds import ClassifierRecord, GuidanceKind, register_guidance_kind
register_guidance_kind(GuidanceKind(
    "pull", network="puller", record=ClassifierRecord, summary="a test kind",
    default_weight=0.0, build=lambda request: None))
from molguide.runs.config import load_config
config = load_config(None, ["guide.pull=1.5", "puller.train.steps=7"])
from molguide.storage.metadata import RECORDS
import molguide.cli
print(config.guide.pull, config.puller.train.steps, RECORDS["puller"].__name__,
      molguide.cli.PIPELINES["train-puller"])
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1.5", "7", "ClassifierRecord", "molguide.runs.train:train_network:puller"]
    with pytest.raises(ConfigError, match="puller"):
        load_config(None, ["puller.train.steps=7"])  # without the kind there is no such section


def test_a_data_set_with_new_elements_brings_their_bond_table():
    """Registering a data set with S and Cl rows makes EDM's stability and validity defined
    for molecules with those elements (in a subprocess: the tables are process-wide)."""
    import subprocess
    import sys

    program = """
import molguide
from rdkit import Chem
from rdkit.Chem import AllChem
from molguide.data.registry import Dataset, get_dataset, register_dataset

def embedded(smiles):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    return mol

mols = [embedded("CS"), embedded("CCl")]
before = molguide.evaluate(mols, novelty=False)
qm9 = get_dataset("qm9")
lengths = {("C", "S"): (182,), ("H", "S"): (134,), ("C", "Cl"): (177,), ("H", "Cl"): (127,)}
register_dataset(Dataset("sulfur_test", qm9.load, qm9.splits, qm9.properties, (), (1, 6, 16, 17),
                         frozenset, lengths, {"S": (2, 4, 6), "Cl": 1}))
after = molguide.evaluate(mols, novelty=False)
try:
    register_dataset(Dataset("clash_test", qm9.load, qm9.splits, qm9.properties, (), (1, 6),
                             frozenset, {("C", "Cl"): (170,)}, {}))
except ValueError as error:
    print("refused:", error)
print(before["atom_stability"], after["atom_stability"], after["mol_stability"], after["validity"])
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    refused, numbers = out.stdout.strip().splitlines()[-2:]
    assert "data set 'clash_test': bond lengths of C-Cl: (170.0,) pm differ" in refused
    assert numbers.split() == ["None", "1.0", "1.0", "1.0"]

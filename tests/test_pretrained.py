"""Self-describing saved score models (safetensors + JSON) and molguide.load on them."""

import json

import pytest
import torch

import molguide
from molguide.checkpoint import CheckpointError
from molguide.components import build_score_model
from molguide.diffusion.nodes import NodeCountDistribution
from molguide.pretrained import CONFIG_FILE, WEIGHTS_FILE, load_pretrained, save_pretrained

MODEL = {
    "backbone": "egnn",
    "backbone_kwargs": {"hidden": 16, "num_layers": 2},
    "parameterisation": "x0",
    "self_condition": True,
}
DIFFUSION = {"schedule": "polynomial_2", "steps": 100, "precision": 1e-5, "loss": {"time_power": 2.0}}


def _saved(tmp_path, atom_types=(1, 6, 7, 8, 9), name="model"):
    torch.manual_seed(0)
    net = build_score_model({**MODEL, "num_atom_types": len(atom_types)})
    return net, save_pretrained(
        tmp_path / name,
        net,
        MODEL,
        DIFFUSION,
        NodeCountDistribution(torch.tensor([5, 6, 6, 7])),
        atom_types,
        training={"steps": 0, "split": "generator_half"},
        card="# test model\n",
    )


def test_saved_model_describes_itself_and_loads_weights_only(tmp_path):
    net, folder = _saved(tmp_path)
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["atom_types"] == [1, 6, 7, 8, 9] and config["model"]["parameterisation"] == "x0"
    assert config["diffusion"]["loss"]["time_power"] == 2.0
    assert (folder / "MODEL_CARD.md").read_text().startswith("# test model")
    loaded = load_pretrained(folder)
    assert loaded.model.self_condition and loaded.model.parameterisation == "x0"
    assert loaded.diffusion.loss_settings.time_power == 2.0 and loaded.diffusion.schedule.steps == 100
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    assert float(loaded.nodes.probs[6]) == pytest.approx(0.5)


def test_designer_on_a_saved_model_is_seeded_and_decodes_its_own_atom_types(tmp_path):
    _, folder = _saved(tmp_path, atom_types=(1, 6, 8), name="hco")
    designer = molguide.load(str(folder))
    a = designer.generate(4, seed=3, steps=10, evaluate=False)
    b = designer.generate(4, seed=3, steps=10, evaluate=False)
    assert len(a) == 4
    symbols = {atom.GetSymbol() for mol in a for atom in mol.GetAtoms()}
    assert symbols <= {"H", "C", "O"}
    for x, y in zip(a, b):
        assert torch.allclose(
            torch.tensor(x.GetConformer().GetPositions()), torch.tensor(y.GetConformer().GetPositions())
        )
    with pytest.raises(ValueError, match=r"atom types are \[1, 6, 8\], not \[1, 6, 7, 8, 9\]"):
        load_pretrained(folder, expect_atom_types=(1, 6, 7, 8, 9))


def test_broken_saved_models_are_one_clear_error(tmp_path):
    _, folder = _saved(tmp_path)
    (folder / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_pretrained(folder)
    _, other = _saved(tmp_path, name="other")
    config = json.loads((other / CONFIG_FILE).read_text())
    config["model"]["backbone_kwargs"]["hidden"] = 32
    (other / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not fit the network"):
        load_pretrained(other)
    with pytest.raises(CheckpointError, match="neither a model folder nor a shipped model"):
        load_pretrained(tmp_path / "nowhere")

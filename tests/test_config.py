import pytest

from molguide.runs.config import ConfigError, dump_config, load_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain:\n  steps: 10\nmodel:\n  backbone: e3nn\n")
    cfg = load_config(path, ["train.lr=0.01", "sample.steps=[5, 50]", "data.max_molecules=100"])
    assert cfg.name == "x" and cfg.train.steps == 10 and cfg.train.lr == 0.01
    assert cfg.sample.steps == [5, 50] and cfg.data.max_molecules == 100
    assert cfg.model.backbone == "e3nn" and cfg.diffusion.schedule == "polynomial_2"
    assert load_config(None, []).train.batch_size == 64
    assert "steps: 10" in dump_config(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.stepz=3"], "train.stepz: Extra inputs are not permitted"),
        (["train.steps=many"], "train.steps: Input should be a valid integer"),
        (["train.steps=0"], "train.steps: Input should be greater than or equal to 1"),
        (["model.backbone=transformer"], "model.backbone: Input should be 'egnn' or 'e3nn'"),
        (["train.steps"], "expected key.path=value"),
        (["name.inner=3"], "name: Input should be a valid string"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(listy)


def test_overriding_one_training_key_keeps_the_sections_own_defaults():
    """--set cfg.train.max_minutes=6 once reset lr and ema to the generic defaults."""
    from molguide.runs.config import load_config

    cfg = load_config(None, ["cfg.train.max_minutes=6", "reward.train.steps=5", "classifier.train.seed=3"])
    assert cfg.cfg.train.max_minutes == 6 and cfg.cfg.train.lr == 5e-4 and cfg.cfg.train.ema_decay == 0.995
    assert cfg.reward.train.steps == 5 and cfg.reward.train.lr == 2e-4
    assert (
        cfg.classifier.train.seed == 3
        and cfg.classifier.train.lr == 5e-4
        and cfg.classifier.train.steps == 2000
    )


def test_quickstart_defaults_validate_and_layer_under_file_and_overrides(tmp_path):
    from molguide.runs.workflow import full_steps, quickstart_defaults

    base = quickstart_defaults()
    config = load_config(None, [], base=base)
    assert config.name == "quickstart" and config.train.steps == 1200 and config.reward.clip_z == 3.0
    assert config.model.pretrained == "qm9" and config.guide.xtb  # the shipped generator, xTB judges
    assert config.guide.grid_power == 2.0 and load_config(None, []).guide.grid_power == 1.0
    assert load_config(None, ["model.pretrained=null"], base=base).model.pretrained is None  # from scratch
    layer = tmp_path / "layer.yaml"
    layer.write_text("guide:\n  n_samples: 50\n")
    config = load_config(layer, ["classifier.train.steps=7"], base=base)
    assert config.guide.n_samples == 50 and config.guide.classifier == 2.0  # sections merge
    assert config.classifier.train.steps == 7 and config.classifier.train.seed == 1
    assert base["guide"]["n_samples"] == 500  # the defaults are not modified
    assert full_steps(config)[-2:] == ("sample", "guide") and "train-cfg" not in full_steps(config)
    assert "train-cfg" in full_steps(load_config(None, ["cfg.enabled=true"]))


def test_a_key_given_twice_is_an_error_naming_the_file_key_and_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  steps: 5\n  lr: 0.1\n  steps: 7\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: key 'steps' appears twice \(lines 2 and 4\)"):
        load_config(path)

"""Bad-input cases: configs, settings, checkpoints and saved models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bad_input_common import (
    ApiCase,
    Case,
    checkpoint_args,
    run_args,
    write,
)

from molguide.storage.checkpoints import CheckpointError

TINY_MODEL = {"backbone": "egnn", "backbone_kwargs": {"hidden": 8, "num_layers": 1}, "parameterisation": "x0"}


def saved_model(folder: Path, name: str = "model") -> Path:
    """A real trained-run folder of a tiny untrained score network, written by the
    package's own save function (what every saved-model case corrupts)."""
    import torch

    from molguide.diffusion.atom_counts import NodeCountDistribution
    from molguide.diffusion.process import VPDiffusion
    from molguide.generation.pipeline import MoleculeDiffusionPipeline
    from molguide.models.build import build_score_model

    torch.manual_seed(0)
    net = build_score_model({**TINY_MODEL, "num_atom_types": 5})
    diffusion = VPDiffusion.from_config({"schedule": "polynomial_2", "steps": 100, "precision": 1e-5})
    nodes = NodeCountDistribution(torch.tensor([3, 4, 4]))
    return MoleculeDiffusionPipeline(net, diffusion, nodes, (1, 6, 7, 8, 9)).save_pretrained(folder / name)


def corrupt(folder: Path, path: tuple[str | int, ...], value: Any, file: str = "score/config.json") -> Path:
    """A saved model whose ``file`` holds ``value`` at the key ``path`` (``()``: the whole file)."""
    model = saved_model(folder)
    config = json.loads((model / file).read_text())
    if not path:
        config = value
    else:
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    (model / file).write_text(json.dumps(config))
    return model


def load_args(
    folder: Path, path: tuple[str | int, ...], value: Any, file: str = "score/config.json"
) -> list[str]:
    """``molguide run train-score`` with ``model.pretrained`` set to such a corrupt model
    (the saved model would be copied into the run's score folder if it were not refused)."""
    model = corrupt(folder, path, value, file)
    return run_args(folder, f"model.pretrained={model}")


def loaded(path: tuple[str | int, ...], value: Any, file: str = "score/config.json"):
    """An API call: ``molguide.load`` of a saved model corrupted at ``path``."""

    def call(folder: Path) -> object:
        import molguide

        return molguide.load(str(corrupt(folder, path, value, file))).generate(2, steps=2, evaluate=False)

    return call


def designer_call(**kwargs: Any):
    """An API call: ``generate`` on a tiny saved model with ``kwargs``."""

    def call(folder: Path) -> object:
        import molguide

        return molguide.load(str(saved_model(folder))).generate(**{"n": 2, "steps": 2, **kwargs})

    return call


def source(name: str):
    def call(folder: Path) -> object:
        import molguide

        return molguide.load(name)

    return call


def nested_index(folder: Path) -> Path:
    """A saved model whose index is a list nested 100,000 deep (Python's JSON parser recurses)."""
    model = saved_model(folder)
    (model / "molguide_run.json").write_text("[" * 100_000 + "]" * 100_000)
    return model


def guided_model(folder: Path) -> Path:
    """A tiny saved model with a classifier for gap_eV (3 bins): a run that takes a target."""
    from molguide.guidance.targets import PropertyTarget
    from molguide.models.build import build_predictor
    from molguide.storage.metadata import ClassifierRecord
    from molguide.storage.trained_run import read_network, save_network, write_index

    model = saved_model(folder)
    net = build_predictor(TINY_MODEL, out_dim=3, time_input=True)
    target = PropertyTarget("gap_eV", n_bins=3, edges=[6.0, 7.0]).to_dict()
    diffusion = read_network(model / "score").record.diffusion
    record = ClassifierRecord(target=target, diffusion=diffusion)
    save_network(model / "classifier", "classifier", net, record, 0)
    write_index(model)
    return model


def guided_call(**kwargs: Any):
    """An API call: ``generate`` on a tiny saved model with a classifier, with ``kwargs``."""

    def call(folder: Path) -> object:
        import molguide

        return molguide.load(str(guided_model(folder))).generate(**{"n": 2, "steps": 2, **kwargs})

    return call


def _pipe(folder: Path):
    from molguide.generation.pipeline import MoleculeDiffusionPipeline

    return MoleculeDiffusionPipeline.from_pretrained(saved_model(folder))


CONFIG = "{d}/model/score/config.json"
NAN = float("nan")

CASES = [
    # ------------------------------------------------------------------ configs
    Case(
        "duplicate YAML key",
        lambda d: ["run", "train-score", "-c", write(d, "c.yaml", "name: a\nname: b\n")],
        2,
        "key 'name' appears twice",
    ),
    Case(
        "unknown key",
        lambda d: run_args(d, "train.stesp=3"),
        2,
        "train.stesp: Extra inputs are not permitted",
    ),
    Case(
        "zero width",
        lambda d: run_args(d, "model.backbone_kwargs={hidden: 0, num_layers: 2}"),
        2,
        "model.backbone_kwargs: hidden must be a whole number of at least 1, not 0",
    ),
    Case(
        "negative depth",
        lambda d: run_args(
            d, "classifier.backbone_kwargs={hidden: 8, num_layers: -1}", pipeline="train-classifier"
        ),
        2,
        "classifier.backbone_kwargs: num_layers must be a whole number of at least 1, not -1",
    ),
    Case(
        "a switch that is not true or false",
        lambda d: run_args(
            d,
            "classifier.backbone_kwargs={hidden: 8, num_layers: 2, coordinate_updates: no_thanks}",
            pipeline="train-classifier",
        ),
        2,
        "classifier.backbone_kwargs: coordinate_updates must be true or false, not 'no_thanks'",
    ),
    Case(
        "a score network without coordinate updates",
        lambda d: run_args(d, "model.backbone_kwargs={hidden: 8, num_layers: 2, coordinate_updates: false}"),
        2,
        "model.backbone_kwargs: coordinate_updates: false is for classifiers and evaluators",
    ),
    Case(
        "a misspelt size of the reward's correction network",
        lambda d: run_args(d, "reward.correction={hiden: 32}", pipeline="train-reward"),
        2,
        "correction: unknown EGNN setting(s) ['hiden']",
    ),
    Case("unknown device", lambda d: run_args(d, "device=tpu"), 2, "device=tpu: not a device name"),
    Case(
        "empty guidance window",
        lambda d: run_args(d, "guide.t_min=0.9", "guide.t_max=0.1", pipeline="guide"),
        2,
        "guide: t_min (0.9) must be below t_max (0.1)",
    ),
    Case(
        "negative sweep weight",
        lambda d: run_args(d, "guide.sweep=[1, -2]"),
        2,
        "guide.sweep.1: Input should be",
    ),
    Case(
        "no sampling steps",
        lambda d: run_args(d, "sample.steps=[]", pipeline="sample"),
        2,
        "sample.steps: List",
    ),
    # ------------------------------------------------------------------ checkpoints
    Case("empty checkpoint", lambda d: checkpoint_args(d, b""), 2, "last.pt: the checkpoint file is empty"),
    Case(
        "text as checkpoint",
        lambda d: checkpoint_args(d, b"weights\n"),
        2,
        "last.pt: not a PyTorch checkpoint",
    ),
    Case(
        "export of a non-checkpoint",
        lambda d: ["export", write(d, "x.pt", b"PK\x03\x04broken"), str(d / "model")],
        2,
        "x.pt: not a PyTorch checkpoint",
    ),
    Case(
        "generate: a target the run has no network for",
        lambda d: ["generate", str(guided_model(d)), "--target", "mu_D=low", "-n", "2", "--steps", "2"],
        2,
        "target 'mu_D': this run's guidance networks were trained for 'gap_eV'",
    ),
    Case(
        "generate: a goal that is not one",
        lambda d: ["generate", "qm9", "--target", "gap_eV=hgh", "-n", "2"],
        2,
        "--target 'gap_eV=hgh': give high, low, a value",
    ),
    Case(
        "generate: a weight that is not a number",
        lambda d: ["generate", "qm9", "--guidance", "classifier=two", "-n", "2"],
        2,
        "--guidance 'classifier=two': give KIND=WEIGHT",
    ),
    Case("generate: zero molecules", lambda d: ["generate", "qm9", "-n", "0"], 2, "-n: 0 is below 1"),
    Case(
        "generate: guidance from a folder that is not a run",
        lambda d: ["generate", "qm9", "--guidance-from", str(d), "-n", "2"],
        2,
        "not a trained molguide run",
    ),
    Case(
        "generate: --out that is not an SDF",
        lambda d: ["generate", "qm9", "-n", "2", "--out", str(d / "x.txt")],
        2,
        "x.txt: name an .sdf file to write",
    ),
]

# ---------------------------------------------------------------------- saved models (model.pretrained)
# Every key of a saved network's config.json out of range is one line naming the file and the key.
API_CASES: list[ApiCase] = []
SAVED_MODEL_CASES = [
    ("atom type 0", ("record", "atom_types", 4), 0, "record.atom_types.4: Input should be greater than"),
    ("atom type 999", ("record", "atom_types", 4), 999, "record.atom_types.4: Input should be less than"),
    ("atom type -1", ("record", "atom_types", 4), -1, "record.atom_types.4"),
    ("atom type twice", ("record", "atom_types"), [1, 6, 7, 8, 8], "record.atom_types: each atom type"),
    (
        "atom type as text",
        ("record", "atom_types", 0),
        "H",
        "record.atom_types.0: Input should be a valid integer",
    ),
    (
        "atom-count probability negative",
        ("record", "node_count_probs"),
        [0, -1, 2],
        "record.node_count_probs.1",
    ),
    ("atom-count probabilities zero", ("record", "node_count_probs"), [0, 0, 0], "positive sum"),
    ("atom-count probability NaN", ("record", "node_count_probs"), [0, NAN, 1], "record.node_count_probs.1"),
    ("molecules of 0 atoms", ("record", "node_count_probs"), [1, 1], "a molecule of 0 atoms"),
    ("100,001 atom counts", ("record", "node_count_probs"), [0] * 100_000 + [1], "at most 1001 items"),
    ("negative diffusion steps", ("record", "diffusion", "steps"), -5, "record.diffusion.steps"),
    ("unknown noise schedule", ("record", "diffusion", "schedule"), "zigzag", "record.diffusion.schedule"),
    ("precision NaN", ("record", "diffusion", "precision"), NAN, "record.diffusion.precision"),
    ("unknown loss setting", ("record", "diffusion", "loss"), {"bogus": 1}, "record.diffusion.loss"),
    ("negative sampler steps", ("record", "sampler", "steps"), -1, "record.sampler.steps"),
    (
        "unknown recommended sampler",
        ("record", "sampler", "method"),
        "nope",
        "record.sampler: unknown sampler",
    ),
    ("grid power as text", ("record", "sampler", "grid_power"), "x", "record.sampler.grid_power"),
    ("sampler option it lacks", ("record", "sampler", "options"), {"zz": 1}, "has no option 'zz'"),
    (
        "negative width",
        ("network", "backbone_kwargs", "hidden"),
        -3,
        "network.backbone_kwargs: hidden must be",
    ),
    ("billion-wide network", ("network", "backbone_kwargs", "hidden"), 10**9, "hidden must be at most 4096"),
    ("1000 layers", ("network", "backbone_kwargs", "num_layers"), 1000, "num_layers must be at most 64"),
    ("unknown backbone setting", ("network", "backbone_kwargs", "hiden"), 8, "unknown egnn setting 'hiden'"),
    ("negative atom-type channels", ("network", "num_atom_types"), -1, "network.num_atom_types"),
    ("huge context", ("network", "context_dim"), 10**7, "network.context_dim"),
    ("unknown parameterisation", ("network", "parameterisation"), "v", "network.parameterisation"),
    ("a switch as text", ("network", "self_condition"), "yes", "network.self_condition"),
    ("unknown network key", ("network", "zzz"), 1, "network.zzz: Extra inputs"),
    ("network as a list", ("network",), [1], "network: Input should be a valid dictionary"),
    ("config as a list", (), [1, 2], "holds a list, not a JSON object"),
    ("format version as text", ("format_version",), "two", "format_version must be a whole number"),
    ("format version 0", ("format_version",), 0, "format_version must be a whole number >= 1"),
    ("training step as text", ("step",), "x", "step: Input should be a valid integer"),
    ("unknown kind", ("kind",), "zzz", "kind: unknown kind of network 'zzz'"),
]
# Through the command line (model.pretrained would copy the model into the run) a few;
# every one through molguide.load (the same reader, without a tracking store's start-up).
THROUGH_THE_COMMAND_LINE = ("atom type 0", "100,001 atom counts", "negative width", "config as a list")
for name, path, value, message in SAVED_MODEL_CASES:
    culprit = f"{CONFIG}: {message}" if message.startswith(("record", "network")) else message
    if name in THROUGH_THE_COMMAND_LINE:
        CASES.append(Case(f"saved model: {name}", lambda d, p=path, v=value: load_args(d, p, v), 2, culprit))
    API_CASES.append(ApiCase(f"load: {name}", loaded(path, value), CheckpointError, culprit))
CASES += [
    Case(
        "saved model: index leading out of the run",
        lambda d: load_args(d, ("networks", "score"), "../..", file="molguide_run.json"),
        2,
        "molguide_run.json: networks: score: '../..' is not the name of a subfolder",
    ),
    Case(
        "saved model: config nested 100,000 deep",
        lambda d: run_args(d, f"model.pretrained={nested_index(d)}"),
        2,
        "nested too deeply",
    ),
    # ------------------------------------------------------------------ YAML configs
    Case(
        "YAML alias bomb",
        lambda d: [
            "run",
            "train-score",
            "-c",
            write(d, "bomb.yaml", "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nname: [*b, *b, *b]\n"),
        ],
        2,
        "bomb.yaml: line 2: an alias (*'a') is not accepted in a config",
    ),
    Case(
        "config that is not UTF-8",
        lambda d: ["run", "train-score", "-c", write(d, "latin1.yaml", "name: caf\xe9\n".encode("latin-1"))],
        2,
        "latin1.yaml: not UTF-8 text (byte 9, line 1: 0xe9)",
    ),
    Case(
        "config key nested 3,000 deep",
        lambda d: [
            "run",
            "train-score",
            "-c",
            write(
                d,
                "deep.yaml",
                "train:\n"
                + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(3000))
                + "  " * 3001
                + "x: 1\n",
            ),
        ],
        2,
        "deep.yaml: train.k0.k1.k2...k29.k30.k31: nested deeper than 32 levels",
    ),
    Case(
        "--set value nested 3,000 deep",
        lambda d: run_args(d, "train=" + "{a: " * 3000 + "1" + "}" * 3000),
        2,
        "nested deeper than 32 levels",
    ),
    Case(
        "--set key nested 3,000 deep",
        lambda d: run_args(d, "train" + ".a" * 3000 + "=1"),
        2,
        "--set train.a.a.a...a.a.a: nested deeper than 32 levels",
    ),
    Case(
        "malformed YAML in --set",
        lambda d: run_args(d, "train.steps=[1"),
        2,
        "--set 'train.steps=[1': not a YAML value (line 1, column 3",
    ),
    Case(
        "a huge bad value is shown short",
        lambda d: run_args(d, "name=[" + ", ".join(["x"] * 100_000) + "]"),
        2,
        "name: Input should be a valid string (got ['x', 'x', 'x', 'x', 'x', 'x', ...])",
    ),
    Case(
        "a billion guided samples",
        lambda d: run_args(d, "guide.n_samples=1000000000", pipeline="guide"),
        2,
        "guide: n_samples=1,000,000,000 molecules is more than max_samples=100,000",
    ),
    Case(
        "a negative sampling seed",
        lambda d: run_args(d, "sample.seed=-1", pipeline="sample"),
        2,
        "sample.seed: Input should be greater than or equal to 0",
    ),
]

# ---------------------------------------------------------------------- the Python API
API_CASES += [
    ApiCase(
        "load: bool as width",
        loaded(("network", "backbone_kwargs", "hidden"), True),
        CheckpointError,
        "hidden must be a whole number",
    ),
    ApiCase(
        "load: shipped name in capitals misspelt",
        source("qm10"),
        CheckpointError,
        "(shipped: qm9); give a trained-run folder, file://<folder>, runs:/",
    ),
    ApiCase(
        "load: models:/ URI",
        source("models:/generator/1"),
        CheckpointError,
        "models:/generator/1: cannot load it from the model registry",
    ),
    ApiCase(
        "load: s3:// URI",
        source("s3://bucket/model"),
        CheckpointError,
        "s3://bucket/model: s3: URIs are not supported",
    ),
    ApiCase(
        "load: file:// of a missing folder",
        source("file:///nowhere/model"),
        CheckpointError,
        "/nowhere/model: no such folder, and not a shipped model",
    ),
    ApiCase("load: empty runs:/", source("runs:/"), CheckpointError, "runs:/: give the run id"),
    ApiCase("load: not a string", source(42), CheckpointError, "42: not a source"),
    ApiCase(
        "generate: bin 1.5",
        guided_call(target={"gap_eV": {"bin": 1.5}}),
        ValueError,
        "target['gap_eV']: a bin is a whole number >= 0, got 1.5",
    ),
    ApiCase(
        "generate: goal True",
        guided_call(target={"gap_eV": True}),
        ValueError,
        "target['gap_eV']: give 'high', 'low', a value (a number)",
    ),
    ApiCase(
        "generate: seed as text", designer_call(seed="7"), ValueError, "seed must be a whole number from 0"
    ),
    ApiCase("generate: seed 2.5", designer_call(seed=2.5), ValueError, "seed must be a whole number"),
    ApiCase("generate: seed True", designer_call(seed=True), ValueError, "seed must be a whole number"),
    ApiCase("generate: seed -1", designer_call(seed=-1), ValueError, "seed must be a whole number from 0"),
    ApiCase(
        "generate: steps 2.5", designer_call(steps=2.5), ValueError, "steps must be a whole number from 1"
    ),
    ApiCase("generate: steps as text", designer_call(steps="7"), ValueError, "steps must be a whole number"),
    ApiCase("generate: steps True", designer_call(steps=True), ValueError, "steps must be a whole number"),
    ApiCase("generate: n True", designer_call(n=True), ValueError, "n must be a whole number"),
    ApiCase(
        "generate: ten million",
        designer_call(n=10**7),
        ValueError,
        "n=10,000,000 molecules is more than max_samples=100,000",
    ),
    ApiCase(
        "generate: a kind name as guidance on an unguided run",
        designer_call(guidance="classifier"),
        ValueError,
        "guidance['classifier']: {d}/model has no classifier model",
    ),
    ApiCase(
        "generate: guidance as a number",
        designer_call(guidance=2.0),
        ValueError,
        "guidance: give weights by kind",
    ),
    ApiCase(
        "pipeline: seed as text", lambda d: _pipe(d)(2, seed="7"), ValueError, "seed must be a whole number"
    ),
    ApiCase("pipeline: n True", lambda d: _pipe(d)(True), ValueError, "n must be a whole number"),
]

"""Bad-input cases: configs, settings, checkpoints and saved models."""

from __future__ import annotations

from bad_input_common import (
    Case,
    checkpoint_args,
    run_args,
    write,
)

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
]

"""Checkpoints that cannot be used are one CheckpointError naming the file and the way out."""

import json
import pickle

import pytest
import torch

from molguide.cli import main
from molguide.storage.checkpoints import CheckpointError, load_checkpoint, load_weights, save_checkpoint


class _Payload:  # an object a weights-only load must refuse
    pass


def _bad_files(folder):
    good = save_checkpoint({"step": 1, "w": torch.ones(3)}, folder / "good.pt")
    data = good.read_bytes()
    files = {
        "empty": b"",
        "text": b"hello, not a checkpoint\n",
        "truncated": data[: len(data) // 2],
        "pickle": pickle.dumps({"step": 1}),
    }
    for name, content in files.items():
        (folder / f"{name}.pt").write_bytes(content)
    torch.save({"step": _Payload()}, folder / "objects.pt")
    torch.save([1, 2, 3], folder / "list.pt")
    return ["empty", "text", "truncated", "pickle", "objects", "list"]


def test_unusable_checkpoints_are_one_error_naming_the_file(tmp_path):
    for name in _bad_files(tmp_path):
        path = tmp_path / f"{name}.pt"
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "move it away" in message, message
        assert "weights_only" not in message and len(message.splitlines()) == 1, message
    with pytest.raises(CheckpointError, match="holds Python objects besides weights"):
        load_checkpoint(tmp_path / "objects.pt")


def test_weights_of_another_architecture_are_one_line():
    small, large = torch.nn.Linear(4, 8), torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU())
    with pytest.raises(CheckpointError) as caught:
        load_weights(small, large.state_dict(), "other.pt")
    message = str(caught.value)
    assert message.startswith("other.pt: holds a network of another architecture")
    assert "2 tensors missing (e.g. weight)" in message and len(message.splitlines()) == 1
    load_weights(small, torch.nn.Linear(4, 8).state_dict(), "same.pt")  # a fitting one loads


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_resuming_with_another_config_names_the_keys_and_the_ways_out(qm9, tmp_path, tracking, capsys):
    run = tmp_path / "run"
    common = ["run", "train-score", "--set", f"output_dir={run}", "--set", "data.max_molecules=64",
              "--set", "model.backbone_kwargs={hidden: 16, num_layers: 2}", "--set", "train.batch_size=16",
              "--set", "train.checkpoint_every=2"]  # fmt: skip
    assert main([*common, "--set", "train.steps=2"]) == 0
    capsys.readouterr()
    state = load_checkpoint(run / "score" / "last.pt")
    assert state["run_config"]["train"]["batch_size"] == 16  # the config that produced it
    changes = {
        "train.batch_size=8": "train.batch_size (16 in the checkpoint, 8 now)",
        "data.max_molecules=32": "data.max_molecules (64 in the checkpoint, 32 now)",
        "data.remove_hydrogens=true": "data.remove_hydrogens (False in the checkpoint, True now)",
        "diffusion.schedule=cosine": "diffusion.schedule ('polynomial_2' in the checkpoint, 'cosine' now)",
        "model.parameterisation=x0": "model.parameterisation ('eps' in the checkpoint, 'x0' now)",
        "model.backbone_kwargs={hidden: 32, num_layers: 2}": "model.backbone_kwargs.hidden (16",
    }
    for change, named in changes.items():
        assert main([*common, "--set", "train.steps=4", "--set", change]) == 2, change
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and named in err, err
        assert "was trained with another config" in err
        assert "train.resume=false" in err and "output_dir" in err
    assert load_checkpoint(run / "score" / "last.pt")["step"] == 2  # untouched
    # Longer training with the same settings resumes; train.resume=false starts afresh.
    assert main([*common, "--set", "train.steps=4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 4
    assert main([*common, "--set", "train.steps=3", "--set", "train.batch_size=8", "--set",
                 "train.resume=false", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["steps"] == 3

    # A checkpoint from before configs were recorded: another architecture is still one line.
    state = load_checkpoint(run / "score" / "last.pt")
    del state["resume_signature"]
    save_checkpoint(state, run / "score" / "last.pt")
    wider = [*common, "--set", "train.steps=4", "--set", "train.batch_size=8",
             "--set", "model.backbone_kwargs={hidden: 32, num_layers: 2}"]  # fmt: skip
    assert main(wider) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "holds a network of another architecture" in errors[0], errors
    assert "tensors differ in shape" in errors[0] and "[32" in errors[0]


def test_a_damaged_checkpoint_stops_a_resume_with_one_line(qm9, tmp_path, tracking, capsys):
    run = tmp_path / "run"
    (run / "score").mkdir(parents=True)
    (run / "score" / "last.pt").write_bytes(b"")
    code = main(["run", "train-score", "--set", f"output_dir={run}", "--set", "data.max_molecules=16",
                 "--set", "model.backbone_kwargs={hidden: 8, num_layers: 1}",
                 "--set", "train.steps=1"])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("molguide")]
    assert code == 2 and len(err) == 1, err  # (a new store adds MLflow's own INFO lines)
    err = err[0]
    assert f"{run / 'score' / 'last.pt'}: the checkpoint file is empty; move it away" in err


def test_a_damaged_logged_model_is_a_checkpoint_error(tmp_path, tracking):
    import mlflow

    import molguide

    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("molguide-damaged")
    from molguide.diffusion.atom_counts import NodeCountDistribution
    from molguide.diffusion.process import VPDiffusion
    from molguide.diffusion.schedule import NoiseSchedule
    from molguide.generation.pipeline import MoleculeDiffusionPipeline
    from molguide.models.score import ScoreNetwork
    from molguide.storage.trained_run import log_trained_network

    net = ScoreNetwork(hidden=8, num_layers=1)
    nodes = NodeCountDistribution(torch.tensor([3, 4]))
    folder = MoleculeDiffusionPipeline(
        net, VPDiffusion(NoiseSchedule("polynomial_2", 100)), nodes
    ).save_pretrained(tmp_path / "saved")
    (folder / "score" / "model.safetensors").write_bytes(b"not weights")
    with mlflow.start_run() as active:
        log_trained_network(folder / "score")
    with pytest.raises(CheckpointError) as caught:
        molguide.load(f"runs:/{active.info.run_id}")
    assert "model.safetensors: cannot read weights" in str(caught.value)
    assert "weights_only" not in str(caught.value)


def test_a_sound_checkpoint_that_cannot_load_here_is_not_called_damaged(tmp_path):
    path = save_checkpoint({"step": 1, "w": torch.ones(2)}, tmp_path / "gpu.pt")
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, map_location="cuda")
    message = str(caught.value)
    assert "cannot load the checkpoint here" in message and "CUDA" in message
    assert "damaged" not in message and "move it away" not in message


def test_config_differences_ignore_rounding_and_keys_of_other_versions():
    from molguide.storage.checkpoints import config_differences

    saved = {"data": {"mean": 0.1 + 0.2, "edges": [1.0, 2.0]}, "train": {"lr": 1e-4}}
    current = {"data": {"mean": 0.3, "edges": [1.0, 2.0 + 1e-13]}, "train": {"lr": 1e-4, "new_key": 1}}
    assert config_differences(saved, current) == []
    current["train"]["lr"] = 2e-4
    current["data"]["edges"] = list(range(40))
    edges, lr = config_differences(saved, current)
    assert edges == f"data.edges ([1.0, 2.0] in the checkpoint, {str(list(range(40)))[:57]}... now)"
    assert lr == "train.lr (0.0001 in the checkpoint, 0.0002 now)"


def test_loading_onto_a_device_this_machine_lacks_is_one_clear_error():
    import molguide
    from molguide.runs.preflight import PreflightError

    with pytest.raises(PreflightError, match="device=gpu: not a device name"):
        molguide.load("qm9", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(PreflightError, match="device=cuda: CUDA is not available"):
            molguide.load("qm9", device="cuda")


def test_a_signal_during_an_atomic_write_waits_until_the_file_is_in_place(tmp_path):
    """SIGTERM inside torch.save broke its zip writer (the run failed instead of stopping):
    a signal arriving during a write is delivered once the complete file is in place."""
    import os
    import signal

    from molguide.storage.files import atomic_write

    class Stopped(Exception):
        pass

    def stop(signum, frame):
        raise Stopped

    def write(fh):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-write
        fh.write(b"x" * 4096)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped):
            atomic_write(tmp_path / "state.bin", write)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (tmp_path / "state.bin").read_bytes() == b"x" * 4096
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]  # no temporary file left

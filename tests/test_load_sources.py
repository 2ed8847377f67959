"""What molguide.load accepts as a source, what it leaves behind, and the one schema of saved networks."""

from __future__ import annotations

import json
import tempfile

import pytest
import torch
from bad_input_models import saved_model

import molguide
from molguide.storage.checkpoints import CheckpointError
from molguide.storage.metadata import NetworkFile
from molguide.storage.trained_run import CONFIG_FILE, TrainedRun, save_network


def test_loading_from_mlflow_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """runs:/<id> and runs:/<id>/<path> download into temporary folders: every one is gone
    once load returns, and the loaded networks still generate (they live in memory)."""
    import mlflow

    from molguide.storage.trained_run import log_trained_network

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("molguide-temporary-folders")
    folder = saved_model(tmp_path)
    with mlflow.start_run() as active:
        log_trained_network(folder / "score")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # every mkdtemp of this process lands here
    for source in (f"runs:/{active.info.run_id}", f"runs:/{active.info.run_id}/trained_run/score"):
        designer = molguide.load(source)
        assert list(scratch.iterdir()) == [], source
        assert designer.generate(2, steps=2, evaluate=False, seed=0) is not None
    mlflow.set_tracking_uri(None)


def test_sources_by_name_uri_and_case(tmp_path):
    folder = saved_model(tmp_path)
    assert TrainedRun.from_pretrained(f"file://{folder}").atom_types == (1, 6, 7, 8, 9)
    assert TrainedRun.from_pretrained("QM9").source == "qm9"  # shipped names in any case
    with pytest.raises(CheckpointError, match="shipped: qm9"):
        TrainedRun.from_pretrained("qm10")


def test_what_save_network_writes_is_the_schema_read_network_reads(tmp_path):
    folder = saved_model(tmp_path)
    config = json.loads((folder / "score" / CONFIG_FILE).read_text())
    assert NetworkFile.model_validate(config).network.backbone_kwargs == {"hidden": 8, "num_layers": 1}
    net = TrainedRun.from_pretrained(folder).network("score")
    net.config = {**net.config, "backbone_kwargs": {"hidden": 10**6, "num_layers": 1}}
    record = TrainedRun.from_pretrained(folder).record("score")
    with pytest.raises(ValueError, match="cannot save this network: network.backbone_kwargs: hidden must"):
        save_network(tmp_path / "bad", "score", net, record, 0)
    assert not (tmp_path / "bad" / CONFIG_FILE).exists()


def test_generate_accepts_numpy_integers_and_a_kind_name(tmp_path):
    import numpy as np

    designer = molguide.load(str(saved_model(tmp_path)))
    mols = designer.generate(np.int64(2), seed=np.int32(3), steps=np.int16(2), evaluate=False)
    assert len(mols) + len(designer.last_failures) == 2
    assert torch.is_tensor(designer.pipeline._counts(np.int64(2), 0))

"""Tracking against a real ``mlflow server``, an unreachable server, Ctrl-C, and the MLflow Project."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow_server import free_port, running_mlflow_server

from molguide.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY_SCORE = [
    "data.max_molecules=200",
    "model.backbone_kwargs={hidden: 16, num_layers: 2}",
    "train.steps=20",
    "train.batch_size=16",
    "train.log_every=5",
    "train.checkpoint_every=10",
]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture()
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, served artifacts), stopped by its pid."""
    store = ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
             "--artifacts-destination", str(tmp_path / "artifacts")]  # fmt: skip
    with running_mlflow_server(tmp_path, store) as uri:
        yield uri


def test_a_pipeline_logs_to_a_real_mlflow_server_and_its_run_id_loads_the_model(
    mlflow_server, tmp_path, monkeypatch, capsys
):
    import mlflow

    import molguide
    from molguide.generation.designer import GenerationError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    args = ["-q", "run", "train-score", "--json", "--no-progress"]
    assert main([*args, *_sets([f"output_dir={tmp_path / 'runs'}", *TINY_SCORE])]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    run = mlflow.MlflowClient(mlflow_server).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["train_steps_per_s"] > 0
    assert len(mlflow.MlflowClient(mlflow_server).get_metric_history(run_id, "loss")) == 20
    designer = molguide.load(f"runs:/{run_id}")  # the model comes back through the server's artifacts
    assert designer.target is None and designer.guidance_kinds == []
    try:
        mols = designer.generate(2, steps=5, evaluate=False)
    except GenerationError:  # a 20-step model may lose both samples: then it says so
        mols = []
    assert len(mols) + len(designer.last_failures) == 2


def test_an_unreachable_server_is_one_clear_error_before_any_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    out = tmp_path / "runs"
    assert main(["run", "train-score", *_sets([f"output_dir={out}", *TINY_SCORE])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not reachable" in err[0] and "MLFLOW_TRACKING_URI" in err[0]
    assert not out.exists()  # nothing trained


class _FakeTrackingServer:
    """A stdlib HTTP server that answers /health like MLflow and refuses API calls as told.

    ``refuse``: "host" answers every API call 403 (MLflow 3's reply to a host name missing
    from --allowed-hosts); "auth" answers 401 unless the request carries ``auth``.
    """

    def __init__(self, refuse: str, auth: str | None = None) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the handler's API)
                if self.path == "/health":
                    code, body = 200, b"OK"
                elif refuse == "host":
                    code, body = 403, b"Invalid Host header"
                elif self.headers.get("Authorization") != auth:
                    code, body = 401, b"You are not authenticated."
                else:
                    code, body = 404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST"}'
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.uri = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_a_server_whose_api_refuses_this_host_is_one_clear_error(tmp_path, monkeypatch, capsys):
    """MLflow 3 answers /health but refuses API calls for host names not in --allowed-hosts."""
    with _FakeTrackingServer("host") as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        out = tmp_path / "runs"
        assert main(["run", "train-score", *_sets([f"output_dir={out}", *TINY_SCORE])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refuses requests: 403 Invalid Host header" in err[0]
    assert "--allowed-hosts" in err[0] and not out.exists()


def test_the_api_check_sends_mlflow_credentials(monkeypatch):
    import base64

    from molguide.runs.tracking import TrackingError, check_tracking

    auth = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    with _FakeTrackingServer("auth", auth) as server:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        with pytest.raises(TrackingError, match="refuses requests: 401.*MLFLOW_TRACKING_USERNAME"):
            check_tracking(server.uri)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
        assert check_tracking(server.uri) == server.uri


def test_ctrl_c_marks_the_run_killed_keeps_the_checkpoint_and_prints_the_resume_command(
    tmp_path, monkeypatch, capsys
):
    import mlflow

    from molguide.storage.checkpoints import load_checkpoint
    from molguide.training.trainer import Trainer

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    args = ["run", "train-score", "--no-progress", *_sets([f"output_dir={tmp_path / 'runs'}", *TINY_SCORE])]
    real_step = Trainer.train_step

    def interrupted_step(self):
        if self.step == 15:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "resume with: molguide run train-score" in err and "KILLED" in err
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("molguide-score")
    (killed,) = client.search_runs([exp.experiment_id])
    assert killed.info.status == "KILLED"
    ckpt = tmp_path / "runs" / "score" / "last.pt"
    assert load_checkpoint(ckpt)["step"] == 10  # the last checkpoint before Ctrl-C

    monkeypatch.setattr(Trainer, "train_step", real_step)
    resume = shlex.split(err.split("resume with: ")[1].splitlines()[0])
    assert resume[:3] == ["molguide", "run", "train-score"]
    assert main(["-q", *resume[1:], "--json"]) == 0
    assert load_checkpoint(ckpt)["step"] == 20
    statuses = sorted(r.info.status for r in client.search_runs([exp.experiment_id]))
    assert statuses == ["FINISHED", "KILLED"]


def _training_past_its_first_checkpoint(tmp_path, uri: str, cache) -> tuple[subprocess.Popen, Path]:
    """A long ``molguide run train-score`` in a subprocess, returned once its first checkpoint exists."""
    import time

    sets = [f"output_dir={tmp_path / 'runs'}", *TINY_SCORE, "train.steps=100000", "train.checkpoint_every=5"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MOLGUIDE_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "molguide.cli", "run", "train-score", "--no-progress", *_sets(sets)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "runs" / "score" / "last.pt"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ckpt.exists(), proc.communicate(timeout=60)[1][-2000:]
    return proc, ckpt


def test_sigterm_is_handled_like_ctrl_c(tmp_path, molguide_cache):
    """What Slurm and ``docker stop`` send: the run is marked KILLED, the checkpoint kept, the
    resume command printed, exit status 143 (128 + SIGTERM)."""
    import signal

    import mlflow

    from molguide.storage.checkpoints import load_checkpoint

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, ckpt = _training_past_its_first_checkpoint(tmp_path, uri, molguide_cache)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "train-score terminated (SIGTERM)" in err and "resume with: molguide run train-score" in err
    assert "Traceback" not in err
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("molguide-score").experiment_id])
    assert run.info.status == "KILLED"
    assert load_checkpoint(ckpt)["step"] % 5 == 0  # a whole checkpoint, loadable


def test_a_run_left_running_by_kill_9_is_marked_failed_when_the_folder_runs_again(
    tmp_path, molguide_cache, monkeypatch
):
    import signal

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, ckpt = _training_past_its_first_checkpoint(tmp_path, uri, molguide_cache)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("molguide-score").experiment_id
    (ghost,) = client.search_runs([experiment])
    assert ghost.info.status == "RUNNING"  # kill -9 leaves no chance to record anything

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    resumed = [f"output_dir={tmp_path / 'runs'}", *TINY_SCORE, "train.steps=30"]
    assert main(["-q", "run", "train-score", "--json", "--no-progress", *_sets(resumed)]) == 0
    ghost = client.get_run(ghost.info.run_id)
    assert ghost.info.status == "FAILED" and "its process had ended" in ghost.data.tags["molguide.note"]
    statuses = sorted(r.info.status for r in client.search_runs([experiment]))
    assert statuses == ["FAILED", "FINISHED"]


def test_the_mlflow_project_entry_point_runs_the_pipeline_in_the_project_run(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bin_dir = str(Path(sys.executable).parent)  # as in an activated virtual environment
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    for leaked in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):  # set by earlier runs
        env.pop(leaked, None)
    overrides = shlex.join([f"output_dir={tmp_path / 'runs'}", *TINY_SCORE])
    cmd = [str(Path(bin_dir) / "mlflow"), "run", "pipelines", "-e", "train-score", "--env-manager", "local"]
    cmd += ["--experiment-name", "molguide-score", "-P", f"overrides={overrides}"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("molguide-score")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["molguide.pipeline"] == "train-score"  # molguide logged into MLflow's project run
    assert "mlflow.project.entryPoint" in run.data.tags and run.data.metrics["final_loss"] > 0
    assert (tmp_path / "runs" / "score" / "last.pt").exists()


_KILL_AT_STEP = """
import os, signal, sys
from molguide.cli import main
from molguide.training.trainer import Trainer

real_step, kill_at = Trainer.train_step, int(sys.argv[1])

def step_then_die(self):
    if self.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # nothing gets to run after this: no handler, no flush
    return real_step(self)

Trainer.train_step = step_then_die
sys.exit(main(sys.argv[2:]))
"""


def test_kill_9_at_a_random_step_resumes_to_the_same_losses_and_a_clean_store(
    tmp_path, molguide_cache, monkeypatch
):
    import random
    import signal

    import mlflow
    import torch

    from molguide.storage.checkpoints import load_checkpoint

    kill_at = random.Random(14).randint(3, 18)  # seeded: the same step on every machine
    sets = [*TINY_SCORE, "train.checkpoint_every=4", "train.log_every=1"]
    reference_store = f"sqlite:///{tmp_path / 'reference.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", reference_store)
    reference_run = _sets([f"output_dir={tmp_path / 'ref'}", *sets])
    assert main(["-q", "run", "train-score", "--json", *reference_run]) == 0
    reference = load_checkpoint(tmp_path / "ref" / "score" / "last.pt")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["-q", "run", "train-score", "--no-progress", *_sets([f"output_dir={tmp_path / 'run'}", *sets])]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MOLGUIDE_CACHE": str(molguide_cache)}
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_AT_STEP, str(kill_at), *args], env=env, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoint = tmp_path / "run" / "score" / "last.pt"
    assert load_checkpoint(checkpoint)["step"] == kill_at // 4 * 4  # the last checkpoint before the kill

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main([*args, "--json"]) == 0
    resumed = load_checkpoint(checkpoint)
    assert resumed["step"] == 20 and resumed["losses"] == reference["losses"]  # bit for bit
    assert all(torch.equal(resumed["model"][k], w) for k, w in reference["model"].items())

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("molguide-score").experiment_id
    runs = {r.info.status: r for r in client.search_runs([experiment])}
    assert sorted(runs) == ["FAILED", "FINISHED"]  # no ghost left RUNNING
    assert "its process had ended" in runs["FAILED"].data.tags["molguide.note"]
    history = client.get_metric_history(runs["FINISHED"].info.run_id, "loss")
    start = kill_at // 4 * 4
    assert [m.step for m in history] == list(range(start + 1, 21))
    assert [m.value for m in history] == pytest.approx(reference["losses"][start:], rel=1e-6)


def test_a_store_that_refuses_the_experiment_kind_tag_still_opens_the_run(tmp_path, monkeypatch, caplog):
    """Two workers creating one experiment both set its kind tag; a SQL store refuses the second
    insert (a unique key). The run must open anyway: the tag is cosmetic and already there."""
    import logging

    import mlflow
    from mlflow.exceptions import MlflowException

    from molguide.runs.tracking import mlflow_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    def refuse(self, experiment_id, key, value):
        raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: experiment_tags.key")

    monkeypatch.setattr(mlflow.MlflowClient, "set_experiment_tag", refuse)
    with caplog.at_level(logging.DEBUG, logger="molguide"), mlflow_run("molguide-race", "worker") as run:
        run_id = run.info.run_id
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
    assert "experiment kind tag not set: (sqlite3.IntegrityError)" in caplog.text


def test_a_data_set_another_worker_just_logged_is_linked_on_the_second_try(tmp_path, monkeypatch, caplog):
    """Two workers logging one data set to one server race on its row (a unique key): the loser's
    first log_input is refused; the retry finds the row and links it, and the run goes on."""
    import logging

    import mlflow
    from mlflow.exceptions import MlflowException

    from molguide.data.molecules import MoleculeSet
    from molguide.runs.tracking import log_dataset, mlflow_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    real, calls = mlflow.log_input, []

    def first_refused(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id")
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", first_refused)
    mols = MoleculeSet([6, 1], [[0, 0, 0], [1, 0, 0]], [0, 2])
    with caplog.at_level(logging.WARNING, logger="molguide"), mlflow_run("molguide-race", "worker") as run:
        log_dataset(mols, "tiny:train", "training", str(tmp_path))
        run_id = run.info.run_id
    inputs = mlflow.MlflowClient(uri).get_run(run_id).inputs.dataset_inputs
    assert len(calls) == 2 and [d.dataset.name for d in inputs] == ["tiny:train"]
    assert "could not log data set" not in caplog.text

"""Remote tracking for teams: several workers, one ``mlflow server``, one shared artifact folder.

The server keeps runs in a SQL backend (SQLite here; PostgreSQL or MySQL for a real team) and
is started with ``--default-artifact-root <shared folder> --no-serve-artifacts``: that is what
a team on a shared filesystem (NFS, a cluster's /scratch) uses. The server only stores the
artifact *location*; every worker writes its checkpoints, configs and models straight into the
shared folder, so large files never stream through the server (the served-artifacts mode,
``--artifacts-destination``, is covered by tests/test_tracking.py). The price: the folder must
be visible under the same path on every worker and on every machine that loads the models.

The second test starts two workers on an experiment that does not exist yet, so that both
try to create it: with MLflow 3.17 the loser's runs landed in 'Default' until
molguide.runs.tracking.mlflow_run passed start_run the experiment id explicitly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow_server import running_mlflow_server

TINY = [
    "data.max_molecules=200",
    "model.backbone_kwargs={hidden: 16, num_layers: 2}",
    "train.steps=20",
    "train.batch_size=16",
    "train.log_every=5",
    "train.checkpoint_every=10",
]
WORKERS = ("alice", "bob")


@pytest.fixture(scope="module")
def shared_folder_server(request, tmp_path_factory):
    """``mlflow server`` with a SQLite backend and a shared artifact folder; yields (uri, folder)."""
    tmp = tmp_path_factory.mktemp("server")
    shared = tmp / "shared_artifacts"
    store = ["--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
             "--default-artifact-root", str(shared), "--no-serve-artifacts"]  # fmt: skip
    # Build the QM9 cache while the server starts (the workers share it).
    with running_mlflow_server(tmp, store, lambda: request.getfixturevalue("qm9")) as uri:
        yield uri, shared


# A worker is a Python process that waits for the other worker at one point of MLflow's client,
# so that the two really meet on the server however the processes get scheduled:
#   start_run:          just after its run was created (the two runs are open at the same time);
#   create_experiment:  just before creating the experiment that both found missing (a sure race).
# Then it runs the code after ``--``: molguide's command line or a molguide.runs.tracking call.
GATE = """
import pathlib, sys, time
import mlflow
from mlflow.tracking._tracking_service.client import TrackingServiceClient
hook, ready, other = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
def wait_for_the_other():
    ready.touch()
    deadline = time.monotonic() + 180  # a loaded CI machine imports slowly
    while not other.exists():
        if time.monotonic() > deadline:
            sys.exit(f"the other worker never reached {hook} ({other})")
        time.sleep(0.05)
if hook == "start_run":
    real_start_run = mlflow.start_run
    def start_run(*args, **kwargs):
        run = real_start_run(*args, **kwargs)
        wait_for_the_other()
        return run
    mlflow.start_run = start_run
else:
    real_create = TrackingServiceClient.create_experiment
    def create_experiment(self, *args, **kwargs):
        wait_for_the_other()
        return real_create(self, *args, **kwargs)
    TrackingServiceClient.create_experiment = create_experiment
args = sys.argv[sys.argv.index("--") + 1 :]
"""
CLI = GATE + "from molguide.cli import main\nsys.exit(main(args))\n"
OPEN_RUNS = GATE + (  # a run with one nested step, as quickstart and full open them
    "from molguide.runs.tracking import mlflow_run\n"
    "with mlflow_run(args[0], args[1]) as run, mlflow_run(args[0], args[1] + '-step'):\n"
    "    print(run.info.run_id)\n"
)


def _start_workers(code: str, hook: str, uri: str, folder: Path, args: dict[str, list[str]]):
    """One process per worker (``args``: its arguments), pointed at the server by the env var only."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}  # one core per worker
    for leaked in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        env.pop(leaked, None)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(args)
    procs = {}
    for name, other in zip(names, reversed(names)):
        cmd = [sys.executable, "-c", code, hook, str(folder / name), str(folder / other), "--", *args[name]]
        procs[name] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return procs


def _finish(procs: dict[str, subprocess.Popen], gate: Path) -> dict[str, str]:
    """Each worker's stdout; a failed worker fails the test with its stderr."""
    outputs, failed = {}, []
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=300)
            if proc.returncode != 0:  # every failed worker's log: the first to fail explains the rest
                failed.append(f"worker {name} failed:\n{stderr.decode()[-3000:]}")
            outputs[name] = stdout.decode()
        assert not failed, "\n".join(failed)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sorted(p.name for p in gate.iterdir()) == sorted(procs), "a worker never reached the gate"
    return outputs


def _runs_everywhere(client) -> list[tuple[str, str | None]]:
    return [
        (e.name, r.info.run_name)
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
    ]


def test_concurrent_workers_log_to_one_server_and_write_into_the_shared_artifact_folder(
    shared_folder_server, tmp_path, monkeypatch
):
    import mlflow

    import molguide
    from molguide.storage.checkpoints import ema_weights, load_checkpoint

    uri, shared = shared_folder_server
    client = mlflow.MlflowClient(uri)  # a fresh client, as a team member would use
    outs = {name: tmp_path / "workers" / name for name in WORKERS}
    seeds = {name: seed for seed, name in enumerate(WORKERS)}
    cli = ["-q", "run", "train-score", "--json", "--no-progress"]
    args = {}
    for name in WORKERS:
        overrides = [f"name={name}", f"output_dir={outs[name]}", f"train.seed={seeds[name]}", *TINY]
        args[name] = [*cli, *[arg for item in overrides for arg in ("--set", item)]]
    gate = tmp_path / "gate"
    outputs = _finish(_start_workers(CLI, "start_run", uri, gate, args), gate)
    summaries = {name: json.loads(out) for name, out in outputs.items()}

    exp = client.get_experiment_by_name("molguide-score")
    experiment_id = exp.experiment_id
    assert Path(exp.artifact_location.removeprefix("file://")) == shared / experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([experiment_id])}
    assert sorted(runs) == [f"{name}-train" for name in WORKERS], f"runs: {_runs_everywhere(client)}"
    spans = []
    for name in WORKERS:
        run = runs[f"{name}-train"]
        run_id = run.info.run_id
        assert summaries[name]["run_id"] == run_id and run.info.status == "FINISHED"
        assert run.data.params["output_dir"] == str(outs[name])
        assert run.data.params["train.seed"] == str(seeds[name])
        assert run.data.tags["molguide.pipeline"] == "train-score"
        assert run.data.metrics["final_loss"] > 0 and run.data.metrics["train_steps_per_s"] > 0
        assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(1, 21))
        spans.append((run.info.start_time, run.info.end_time))

        # The worker wrote its artifacts itself, straight into the shared folder on disk ...
        on_disk = shared / experiment_id / run_id / "artifacts"
        assert Path(run.info.artifact_uri.removeprefix("file://")) == on_disk
        for rel in ("config.yaml", "checkpoint/last.pt", "trained_run/score/model.safetensors"):
            assert (on_disk / rel).is_file(), f"{rel} missing from {on_disk}"
        # ... and anyone with the run id finds them: the server says where, the client reads the folder.
        listed = {a.path for a in client.list_artifacts(run_id)}
        assert {"config.yaml", "checkpoint", "trained_run"} <= listed
        config = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path / name))).read_text()
        assert f"name: {name}" in config and str(outs[name]) in config

    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the two runs did not overlap: {spans}"

    # A run id is enough to load a worker's model again, and it is that worker's model.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    weights = {}
    for name in WORKERS:
        designer = molguide.load(f"runs:/{summaries[name]['run_id']}")
        assert designer.guidance_kinds == []
        weights[name] = designer.run.network("score").state_dict()
        local = ema_weights(load_checkpoint(outs[name] / "score" / "last.pt")["ema"])
        assert weights[name].keys() == local.keys()
        assert all(torch.equal(weights[name][k], local[k]) for k in local)
    assert any(not torch.equal(weights["alice"][k], weights["bob"][k]) for k in weights["alice"])


def test_workers_racing_to_create_the_experiment_both_log_into_it(shared_folder_server, tmp_path):
    import mlflow

    uri, _ = shared_folder_server
    gate = tmp_path / "gate"
    args = {name: ["molguide-race", name] for name in WORKERS}
    outputs = _finish(_start_workers(OPEN_RUNS, "create_experiment", uri, gate, args), gate)
    run_ids = {name: out.strip() for name, out in outputs.items()}
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("molguide-race")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    expected = sorted([*WORKERS, *(f"{name}-step" for name in WORKERS)])
    assert sorted(runs) == expected, f"runs on the server: {_runs_everywhere(client)}"
    for name in WORKERS:
        assert runs[name].info.run_id == run_ids[name]
        assert runs[f"{name}-step"].data.tags["mlflow.parentRunId"] == run_ids[name]

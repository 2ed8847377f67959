"""Data-parallel training: N processes on the gloo backend take the steps one process takes.

Three levels: the shard maths in one process (float64), the Trainer in two spawned
processes against one process, and ``torchrun ... molguide run train-score`` with a
resume against ``molguide run train-score`` in one process.
"""

import os
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest
import torch
from mlflow_server import free_port

from molguide.diffusion.objective import DenoisingObjective
from molguide.diffusion.process import VPDiffusion
from molguide.diffusion.schedule import NoiseSchedule
from molguide.models import ScoreNetwork
from molguide.storage.checkpoints import load_checkpoint
from molguide.training.distributed import split_global_batch
from molguide.training.trainer import TensorBatches, TrainConfig, Trainer, step_generator

TINY_EGNN = {"hidden": 16, "num_layers": 2}


def _molecules(qm9, n=40):
    return qm9.subset(np.arange(n))


def _objective_and_data(qm9):
    """A CFG-style context and reward-style weights together: every sharded draw and sum at once."""
    from molguide.data.graphs import MoleculeBatches

    mols = _molecules(qm9)
    rng = np.random.default_rng(1)
    context = rng.normal(size=(len(mols), 3)).astype(np.float32)
    weight = rng.uniform(0.2, 3.0, size=len(mols)).astype(np.float32)
    diffusion = VPDiffusion(NoiseSchedule("polynomial_2", 100))
    objective = DenoisingObjective(
        diffusion, context_key="context", p_uncond=0.3, weight_key="weight", hydrogen_channel=0
    )
    return objective, MoleculeBatches(mols, context=context, weight=weight)


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    # x0 with self-conditioning and fixed atoms: every setting the loss reads through the DDP wrapper
    settings = {"parameterisation": "x0", "self_condition": True, "fixed_atoms": True}
    network = ScoreNetwork(backbone="egnn", context_dim=3, **settings, **TINY_EGNN)
    return network.to(dtype)


def test_split_global_batch_covers_every_molecule_and_atom_once():
    indices = np.arange(10, 17)
    counts = np.array([3, 5, 2, 4, 4, 1, 6])
    parts = [split_global_batch(indices, counts, r, 3) for r in range(3)]
    assert np.concatenate([p[0] for p in parts]).tolist() == indices.tolist()
    assert [p[1].num_graphs for p in parts] == [2, 3, 2]
    assert [p[1].node_offset for p in parts] == [0, 8, 18]
    assert sum(p[1].num_nodes for p in parts) == counts.sum() == parts[0][1].total_nodes
    with pytest.raises(ValueError, match="cannot be split over 8 processes"):
        split_global_batch(indices, counts, 0, 8)


def test_shard_losses_average_to_the_global_gradient_float64(qm9):
    """DDP averages the processes' gradients: the average of the shard losses' gradients is the global one."""
    objective, data = _objective_and_data(qm9)
    model = _model(torch.float64)
    indices = np.arange(8)

    def grads(batch_indices, shard=None):
        batch = {k: (v.double() if v.is_floating_point() else v) for k, v in data(batch_indices).items()}
        model.zero_grad()
        loss = objective(model, batch, step_generator(3, 5), shard=shard)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()]), float(loss)

    # Without a process group the weight total cannot be summed over processes: the spawned
    # test below covers the weights; here the context draw and the molecule sums.
    objective.weight_key = None
    full, full_loss = grads(indices)
    world = 2
    parts = [split_global_batch(indices, data.num_nodes(indices), r, world) for r in range(world)]
    shard_grads = [grads(idx, shard) for idx, shard in parts]
    averaged = sum(g for g, _ in shard_grads) / world
    torch.testing.assert_close(averaged, full, rtol=1e-10, atol=1e-12)
    assert np.mean([loss for _, loss in shard_grads]) == pytest.approx(full_loss, rel=1e-12)


def _worker(rank: int, world: int, port: int, out_dir: str, cache: str) -> None:
    """One process of the spawned data-parallel Trainer run (module level: spawn pickles it)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ.update(MASTER_PORT=str(port), MOLGUIDE_CACHE=cache)
    torch.set_num_threads(1)
    from molguide.data import load_qm9
    from molguide.training import distributed

    distributed.init_from_env("cpu")
    objective, data = _objective_and_data(load_qm9())
    config = TrainConfig(steps=4, batch_size=7, lr=1e-3, seed=7, checkpoint_every=2)
    trainer = Trainer(_model(), objective, data, config, checkpoint_path=f"{out_dir}/last.pt")
    cpu0 = time.process_time()
    trainer.train(deadline=time.monotonic() + 3600)  # the deadline check is a collective too
    own_cpu = time.process_time() - cpu0
    torch.save(
        {
            "model": trainer.model.state_dict(),
            "losses": [e.loss for e in trainer.history],
            "cpu_seconds": trainer.cpu_seconds,
            "own_cpu": own_cpu,
        },
        f"{out_dir}/rank{rank}.pt",
    )
    distributed.shutdown()
    # Leave without interpreter teardown: freeing the DDP reducer there destroys the gloo
    # process group while holding the GIL, and gloo's worker thread, freeing its last
    # all-reduce, waits for the GIL: the process hung at exit twice on this machine
    # (py-spy: ProcessGroupGloo::~ProcessGroupGloo joining runLoop). The results are written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_two_spawned_processes_match_one_process(qm9, tmp_path, molguide_cache):
    """Weighted loss, dropped contexts and unequal shards (7 molecules: 4 + 3) at once."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), str(molguide_cache)), nprocs=2, join=True)

    objective, data = _objective_and_data(qm9)
    config = TrainConfig(steps=4, batch_size=7, lr=1e-3, seed=7, checkpoint_every=2)
    single = Trainer(_model(), objective, data, config)
    single.train()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in single.model.state_dict().items():
        for rank in ranks:
            torch.testing.assert_close(rank["model"][name], value, rtol=0, atol=1e-5)
    # The logged loss is the global batch's, the same on every process.
    np.testing.assert_allclose(ranks[0]["losses"], [e.loss for e in single.history], rtol=1e-5)
    assert ranks[0]["losses"] == ranks[1]["losses"]
    # Rank 0 wrote the checkpoint (and only one file exists for both).
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 4
    # CPU time counts both processes: the same sum on each, more than either spent alone
    # within train(), and no more than both together.
    own = [rank["own_cpu"] for rank in ranks]
    assert ranks[0]["cpu_seconds"] == ranks[1]["cpu_seconds"] == state["cpu_seconds"]
    assert max(own) < state["cpu_seconds"] <= sum(own)


def test_an_objective_without_sharding_is_refused_under_data_parallel(monkeypatch):
    from molguide.training import distributed

    monkeypatch.setattr(distributed, "_context", distributed.DistContext(rank=0, world_size=2))
    model = torch.nn.Linear(2, 1)
    data = TensorBatches(x=torch.zeros(8, 2))
    with pytest.raises(ValueError, match="cannot be trained data-parallel yet"):
        Trainer(model, lambda m, b, g: m(b["x"]).sum(), data, TrainConfig())


def test_a_pipeline_that_cannot_run_data_parallel_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from molguide.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["run", "train-classifier", "--set", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "train-classifier runs in one process" in err and "train-score" in err


def _molguide(args, env, launcher=()):
    cmd = [*launcher, "-m", "molguide.cli", "-q", "run", "train-score", "--no-progress", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_train_score_with_resume_matches_one_process(qm9, tmp_path, molguide_cache):
    """``torchrun --nproc-per-node 2 molguide run train-score``, stopped and resumed, equals one process."""
    env = {**os.environ, "MOLGUIDE_CACHE": str(molguide_cache), "OMP_NUM_THREADS": "1"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--set", "data.max_molecules=64", "--set", "model.backbone_kwargs={hidden: 16, num_layers: 2}",
              "--set", "train.batch_size=8", "--set", "train.lr=0.001", "--set", "train.log_every=1",
              "--set", "train.checkpoint_every=2"]  # fmt: skip
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    ddp = ["--set", f"output_dir={tmp_path / 'ddp'}"]
    first = _molguide([*common, *ddp, "--set", "train.steps=3"], env, torchrun)
    assert first.returncode == 0, first.stderr[-3000:]
    second = _molguide([*common, *ddp, "--set", "train.steps=6"], env, torchrun)  # resumes at step 3
    assert second.returncode == 0, second.stderr[-3000:]
    single = _molguide([*common, "--set", f"output_dir={tmp_path / 'one'}", "--set", "train.steps=6"], env,
                       (sys.executable,))  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]

    ddp_state = load_checkpoint(tmp_path / "ddp" / "score" / "last.pt")
    one_state = load_checkpoint(tmp_path / "one" / "score" / "last.pt")
    assert ddp_state["step"] == one_state["step"] == 6
    for part in ("model", "ema"):
        for name, value in one_state[part].items():
            torch.testing.assert_close(ddp_state[part][name], value, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ddp_state["losses"], one_state["losses"], rtol=1e-5)

    # Rank 0 alone logged: one run per launch, both finished, with the global batch's losses.
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["molguide-score"], output_format="list")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    client = mlflow.MlflowClient()
    ddp_runs = [r for r in runs if r.data.params["output_dir"].endswith("ddp")]
    logged = sorted(
        (m.step, m.value) for r in ddp_runs for m in client.get_metric_history(r.info.run_id, "loss")
    )
    assert [s for s, _ in logged] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in logged], one_state["losses"], rtol=1e-5)

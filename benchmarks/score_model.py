"""Score-model speed and memory: prints one JSON object (and writes it with --out).

    python benchmarks/score_model.py [--repeat 5] [--train-repeat 10] [--sample-batch 64]
                                     [--timed-steps 10] [--full-sampling] [--device cpu|cuda]
                                     [--bf16] [--configs egnn_256x9 ...] [--no-memory] [--out FILE]

For EGNN 64x4, 128x6, 256x9 (EDM's size) and the e3nn default, per model:

- ``train_*``: full optimisation steps through molguide's Trainer (MoleculeBatches
  batching of 64 QM9 molecules with hydrogens from the generator half, the
  DenoisingObjective forward, backward, gradient clipping, AdamW, EMA update;
  lr 1e-4 after a 10,000-step warm-up, see ``trainer``): median ms per step and
  training molecules per second.
- ``naive_train_*``: the same, side by side in the same process and on the same
  batches, for the same EGNN written EDM's naive way (the first edge and coordinate
  layers applied to the concatenation [h_i, h_j, e_ij] per edge, plain autograd);
  ``train_step_ratio_vs_naive`` is the median over rounds of ours / naive.
- ``fwd_bwd_*``: loss forward + backward alone on one fixed batch of 64 molecules,
  ours and naive side by side.
- ``train_memory``: peak memory of three training steps, in a fresh process per
  model (CPU: peak resident set size over the usage before the steps; CUDA:
  ``max_memory_allocated``); ``naive_train_memory`` the same for the naive form.
- ``sample_s_per_molecule_*``: ancestral sampling seconds per molecule at 100 and
  1,000 steps for --sample-batch molecules; cost is linear in the number of steps,
  so unless --full-sampling is given it is extrapolated from --timed-steps steps.

Calls measured side by side run in rounds after one warm-up call each: per round,
each variant runs twice in a row and the second call is timed (so it follows a call
of its own kind, as in a training loop), and the order alternates between rounds.
Other processes on the machine then slow both alike; the load average before and
after each model is recorded. --bf16 (CUDA only) runs forward passes under bf16
autocast.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory, autocast, interleaved, machine, median_ratio, sync, write_report  # noqa: E402

CONFIGS = {
    "egnn_64x4": ("egnn", {"hidden": 64, "num_layers": 4}),
    "egnn_128x6": ("egnn", {"hidden": 128, "num_layers": 6}),
    "egnn_256x9": ("egnn", {"hidden": 256, "num_layers": 9}),
    "e3nn_default": ("e3nn", {}),
}
MEMORY_STEPS = 3
SETTLE = 1  # untimed calls before each timed one, so a timed call follows its own kind


def build(name: str, naive: bool, device: torch.device):
    """The score network ``name``; ``naive``: the EGNN with EDM's concatenated edge input."""
    from molguide.models import ScoreNetwork

    backbone, kwargs = CONFIGS[name]
    if naive:
        kwargs = {**kwargs, "edge_input": "concat"}
    torch.manual_seed(0)
    return ScoreNetwork(backbone=backbone, **kwargs).to(device)


class Data:
    """QM9, the diffusion process and the fixed benchmark batch, loaded once."""

    def __init__(self) -> None:
        from molguide.data import edm_splits, load_qm9
        from molguide.data.graphs import collate_molecules
        from molguide.diffusion.process import VPDiffusion
        from molguide.diffusion.schedule import NoiseSchedule

        qm9 = load_qm9()
        self.half = edm_splits(len(qm9))["generator_half"]
        self.train_set = qm9.subset(self.half)
        self.batch = collate_molecules(qm9, self.half[:64])
        self.diffusion = VPDiffusion(NoiseSchedule("polynomial_2", 1000))


class _Autocast:
    """An objective run under bf16 autocast (the backward pass runs outside it)."""

    def __init__(self, objective, device: torch.device, bf16: bool) -> None:
        self.objective, self.device, self.bf16 = objective, device, bf16

    def __call__(self, model, batch, generator):
        with autocast(self.device, self.bf16):
            return self.objective(model, batch, generator)


def trainer(model, data: Data, device: torch.device, bf16: bool):
    """molguide's Trainer of the plain score model, batches of 64, no checkpoints."""
    from molguide.data.graphs import MoleculeBatches
    from molguide.diffusion.objective import DenoisingObjective
    from molguide.training.trainer import TrainConfig, Trainer

    objective = _Autocast(DenoisingObjective(data.diffusion), device, bf16)
    # A long warm-up keeps the weights near their initial values during the few steps
    # timed here. The work of a step does not depend on the learning rate, but its time
    # does depend on the values: EGNN 256x9 at lr 1e-4 without warm-up diverges within
    # two steps (loss 130 -> 1e9, with either edge input), and the huge activations of a
    # diverged network push exp/sigmoid into slow denormal paths (silu up to 4x slower).
    config = TrainConfig(steps=10**9, batch_size=64, seed=0, warmup_steps=10_000)
    return Trainer(model, objective, MoleculeBatches(data.train_set), config, device=device)


def fwd_bwd(model, data: Data, device: torch.device, bf16: bool):
    """A function running loss forward + backward on the fixed batch (fresh noise each call)."""
    b = data.batch
    args = (b["pos"].to(device), b["onehot"].to(device), b["batch"].to(device), int(b["num_graphs"]))
    calls = iter(range(10**9))

    def run() -> None:
        with autocast(device, bf16):
            loss = data.diffusion.loss(model, *args, generator=torch.Generator().manual_seed(next(calls)))
        loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def sampling_s_per_molecule(model, data, counts, device, bf16, steps_list, timed_steps) -> dict:
    """Seconds per molecule for each number of steps (extrapolated from ``timed_steps`` if given)."""
    from molguide.generation.pipeline import MoleculeDiffusionPipeline

    pipe = MoleculeDiffusionPipeline(model, data.diffusion, device=device)

    def seconds(steps: int) -> float:
        sync(device)
        start = time.perf_counter()
        with autocast(device, bf16):
            pipe(counts, batch_size=len(counts), generator=torch.Generator().manual_seed(0), steps=steps)
        sync(device)
        return time.perf_counter() - start

    out = {}
    if timed_steps is not None:
        # A grid of `timed_steps` steps costs the same per step as the first steps of a longer one.
        per_step = seconds(timed_steps) / (timed_steps + 1)  # + the final decode
    for steps in steps_list:
        total = per_step * (steps + 1) if timed_steps is not None else seconds(steps)
        out[f"sample_s_per_molecule_{steps}_steps"] = round(total / len(counts), 4)
        out[f"sample_{steps}_steps_extrapolated_from"] = timed_steps
    return out


def memory_probe(name: str, naive: bool, device: torch.device, bf16: bool) -> dict:
    """Peak memory of MEMORY_STEPS training steps of a new model in this process."""
    data = Data()
    tr = trainer(build(name, naive, device), data, device, bf16)
    with PeakMemory(device) as peak:
        for _ in range(MEMORY_STEPS):
            tr.train_step()
    return {**peak.report(), "steps": MEMORY_STEPS}


def memory_in_fresh_process(name: str, naive: bool, args) -> dict:
    cmd = [sys.executable, __file__, "--memory-probe", name, "--device", args.device]
    cmd += ["--naive"] if naive else []
    cmd += ["--bf16"] if args.bf16 else []
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(name: str, data: Data, counts, args, device: torch.device) -> dict:
    backbone = CONFIGS[name][0]
    has_naive = backbone == "egnn"
    model = build(name, False, device)
    entry: dict = {"parameters": sum(p.numel() for p in model.parameters())}
    entry["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]

    # Full training steps, ours and naive in lockstep: same seed, so the same batches.
    ours = trainer(model, data, device, args.bf16)
    steps = {"ours": ours.train_step}
    if has_naive:
        steps["naive"] = trainer(build(name, True, device), data, device, args.bf16).train_step
    t = interleaved(steps, args.train_repeat, device, settle=SETTLE)
    molecules = 64  # every Trainer batch is full
    timed = [(r + 1) * (SETTLE + 1) for r in range(args.train_repeat)]  # step 0 is the warm-up
    atoms = [int(data.train_set.num_atoms[ours._batch_indices(k)].sum()) for k in timed]
    entry["train_mean_atoms_per_batch"] = round(statistics.mean(atoms), 1)
    med = statistics.median(t["ours"])
    entry["train_step_ms"] = round(1000 * med, 1)
    entry["train_molecules_per_s"] = round(molecules / med, 1)
    if has_naive:
        entry["naive_train_step_ms"] = round(1000 * statistics.median(t["naive"]), 1)
        entry["naive_train_molecules_per_s"] = round(molecules / statistics.median(t["naive"]), 1)
        entry["train_step_ratio_vs_naive"] = round(median_ratio(t["ours"], t["naive"]), 3)
        entry["train_step_ratio_vs_naive_rounds"] = [round(a / b, 3) for a, b in zip(t["ours"], t["naive"])]
    entry["train_rounds"] = args.train_repeat
    del steps, ours

    # Forward + backward alone on the fixed batch.
    fns = {"ours": fwd_bwd(model, data, device, args.bf16)}
    if has_naive:
        naive = build(name, True, device)
        fns["naive"] = fwd_bwd(naive, data, device, args.bf16)
    t = interleaved(fns, args.repeat, device, settle=SETTLE)
    entry["fwd_bwd_ms_batch64"] = round(1000 * statistics.median(t["ours"]), 1)
    if has_naive:
        entry["naive_fwd_bwd_ms_batch64"] = round(1000 * statistics.median(t["naive"]), 1)
        entry["fwd_bwd_ratio_vs_naive"] = round(median_ratio(t["ours"], t["naive"]), 3)
        del naive, fns

    model.eval()
    timed = None if args.full_sampling else args.timed_steps
    entry.update(sampling_s_per_molecule(model, data, counts, device, args.bf16, (100, 1000), timed))

    if not args.no_memory:
        entry["train_memory"] = memory_in_fresh_process(name, False, args)
        if has_naive:
            entry["naive_train_memory"] = memory_in_fresh_process(name, True, args)
    entry["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds of forward+backward timing")
    parser.add_argument("--train-repeat", type=int, default=10, help="rounds of training-step timing")
    parser.add_argument("--sample-batch", type=int, default=64)
    parser.add_argument("--timed-steps", type=int, default=10)
    parser.add_argument("--full-sampling", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.bf16 and device.type != "cuda":
        parser.error("--bf16 is for --device cuda only")

    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.naive, device, args.bf16)))
        return

    from molguide.diffusion.atom_counts import NodeCountDistribution

    report = {"machine_at_start": machine(device)}
    data = Data()
    counts = NodeCountDistribution(data.train_set.num_atoms).sample(
        args.sample_batch, torch.Generator().manual_seed(0)
    )
    results = {}
    for name in args.configs:
        results[name] = measure(name, data, counts, args, device)
        print(name, json.dumps(results[name]), file=sys.stderr)
    report.update(
        {
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "bf16_autocast": args.bf16,
            "batch": {
                "molecules": 64,
                "fixed_batch_atoms": int(data.batch["pos"].shape[0]),
                "fixed_batch": "generator_half[:64]",
                "train_batches": "Trainer order over the generator half, seed 0",
            },
            "train_rounds": args.train_repeat,
            "fwd_bwd_rounds": args.repeat,
            "sample_batch_molecules": args.sample_batch,
            "results": results,
        }
    )
    write_report(report, args.out)


if __name__ == "__main__":
    main()

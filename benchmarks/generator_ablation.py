"""Which score-model recipe makes the best molecules for the same CPU time (issue 12).

Every variant trains on the same data (QM9's generator half, EDM's split), with the
same seeds, batch size, optimiser and one CPU thread, for the same wall-clock
training budget; the EMA weights are then sampled (ancestral, 100 steps, atom counts
from the data) and judged by EDM's protocol plus strict validity. Along the way the
model is sampled at a few training times for the curve of molecule stability against
training minutes.

The budget is turned into steps by timing every variant's training step side by side
on one thread first (``--calibrate``: interleaved rounds, median per variant, written
to ``benchmarks/results/ablation_step_times.json``): a variant then trains
budget / (its seconds per step) steps, so the results are those of a quiet machine
even when the runs share it with other work. Everything resumes: run the same command
again and a variant continues from its checkpoint (``--workdir``); finished variants
are skipped.

    python benchmarks/generator_ablation.py --list
    python benchmarks/generator_ablation.py --calibrate          # once, on a quiet machine
    python benchmarks/generator_ablation.py --variants edm x0_snr_ce --minutes 30
    python benchmarks/generator_ablation.py --summary

Results: one JSON per variant in ``benchmarks/results/ablation/`` and, with
``--summary``, the table of all finished variants (``benchmarks/results/ablation.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import judge_samples, machine  # noqa: E402

from molguide.chem.bond_orders import cached_bond_table  # noqa: E402
from molguide.chem.smiles import qm9_training_smiles  # noqa: E402
from molguide.data import edm_splits, load_qm9  # noqa: E402
from molguide.diffusion.atom_counts import NodeCountDistribution  # noqa: E402
from molguide.diffusion.objective import DiffusionTrainer, TrainConfig  # noqa: E402
from molguide.diffusion.process import VPDiffusion  # noqa: E402
from molguide.models.build import build_score_model  # noqa: E402
from molguide.storage.files import atomic_write  # noqa: E402
from molguide.training.trainer import ema_weights  # noqa: E402

log = logging.getLogger("ablation")
RESULTS = Path(__file__).resolve().parent / "results"

# EDM's coordinate range: 15 A in all, divided over the layers (EDM's EGNN does this;
# 15 A per layer made x0 training blow up in its first steps and never recover).
BASE_MODEL = {"backbone": "egnn", "backbone_kwargs": {"hidden": 64, "num_layers": 4, "coords_range": 3.75}}
CORE_LOSS = {"weighting": "snr_clamp", "type_loss": "ce"}

# name -> (model overrides, loss settings, description)
VARIANTS: dict[str, tuple[dict, dict, str]] = {
    "edm": ({"parameterisation": "eps"}, {}, "EDM: eps prediction, unweighted MSE, t uniform"),
    "x0": ({"parameterisation": "x0"}, {"weighting": "uniform", "type_loss": "mse"}, "x0 prediction alone"),
    "x0_snr": (
        {"parameterisation": "x0"},
        {"weighting": "snr_clamp", "type_loss": "mse"},
        "x0 + SNR-clamped weights",
    ),
    "x0_ce": (
        {"parameterisation": "x0"},
        {"weighting": "uniform", "type_loss": "ce"},
        "x0 + type cross-entropy",
    ),
    "x0_snr_ce": ({"parameterisation": "x0"}, CORE_LOSS, "core: x0 + SNR clamp + type CE"),
    "core_selfcond": (
        {"parameterisation": "x0", "self_condition": True},
        CORE_LOSS,
        "core + self-conditioning",
    ),
    "core_time": (
        {"parameterisation": "x0"},
        {**CORE_LOSS, "time_power": 2.0},
        "core + times towards the data",
    ),
    "core_align": (
        {"parameterisation": "x0"},
        {**CORE_LOSS, "align_noise": True},
        "core + Kabsch-aligned noise",
    ),
    "all": (
        {"parameterisation": "x0", "self_condition": True},
        {**CORE_LOSS, "time_power": 2.0, "align_noise": True},
        "core + self-conditioning + time + alignment",
    ),
    "all_bonds": (
        {"parameterisation": "x0", "self_condition": True, "bond_head": True},
        {**CORE_LOSS, "time_power": 2.0, "align_noise": True},
        "all + bond-order head (returned molecules use its bonds)",
    ),
    "all_128x6": (
        {
            "parameterisation": "x0",
            "self_condition": True,
            "backbone_kwargs": {"hidden": 128, "num_layers": 6, "coords_range": 2.5},
        },
        {**CORE_LOSS, "time_power": 2.0, "align_noise": True},
        "all, EGNN 128x6",
    ),
}


def model_config(name: str) -> dict:
    overrides = VARIANTS[name][0]
    cfg = copy.deepcopy(BASE_MODEL)
    cfg.update(copy.deepcopy(overrides))
    return cfg


def diffusion_config(name: str) -> dict:
    return {"schedule": "polynomial_2", "steps": 1000, "precision": 1e-5, "loss": dict(VARIANTS[name][1])}


def _trainer(name: str, args, mols, workdir: Path):
    torch.manual_seed(args.seed)
    model = build_score_model(model_config(name))
    diffusion = VPDiffusion.from_config(diffusion_config(name))
    config = TrainConfig(
        steps=10**9,
        batch_size=args.batch_size,
        lr=args.lr,
        ema_decay=0.999,
        ema_warmup=False,  # the rule these runs started with (fixed decay from the init)
        seed=args.seed,
        checkpoint_every=500,
        log_every=100,
    )
    extra = {"model_config": model_config(name), "diffusion_config": diffusion_config(name)}
    ckpt = workdir / "last.pt" if workdir else None
    bonds = cached_bond_table(mols) if model_config(name).get("bond_head") else None
    return DiffusionTrainer(model, diffusion, mols, config, ckpt, extra, bonds=bonds), diffusion


STEP_TIMES = RESULTS / "ablation_step_times.json"


def calibrate(names: list[str], args, mols, rounds: int = 8, steps_per_round: int = 8) -> dict:
    """Seconds per training step of each variant, timed in interleaved rounds (median).

    The times are merged into the file of earlier calibrations. When some of ``names``
    were calibrated before (anchors), the new times are scaled by the median of their
    old / new ratios, so that a variant calibrated later on a busier machine still gets
    the step count of the same quiet-machine budget.
    """
    trainers = {name: _trainer(name, args, mols, None)[0] for name in names}
    for trainer in trainers.values():  # warm-up
        trainer.train(until_step=2)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.train(until_step=trainer.step + steps_per_round)
            times[name].append((time.perf_counter() - t0) / steps_per_round)
    measured = {name: float(np.median(v)) for name, v in times.items()}
    previous = json.loads(STEP_TIMES.read_text()) if STEP_TIMES.exists() else {"s_per_step": {}}
    anchors = [n for n in names if n in previous["s_per_step"]]
    anchored = bool(anchors) and len(anchors) < len(names)  # else: a fresh or full recalibration
    scale = float(np.median([previous["s_per_step"][n] / measured[n] for n in anchors])) if anchored else 1.0
    new = {n: measured[n] * scale for n in names if not (anchored and n in anchors)}
    if anchored:  # the file's own settings and machine stay those of the main calibration
        rescaled = previous.setdefault("rescaled", {})
        for name in new:
            rescaled[name] = {
                "anchors": anchors,
                "factor": scale,
                "raw_s_per_step": measured[name],
                "machine": machine(torch.device("cpu")),
            }
        result = {**previous, "s_per_step": {**previous["s_per_step"], **new}}
    else:
        result = {
            **previous,
            "s_per_step": {**previous["s_per_step"], **new},
            "rounds": rounds,
            "steps_per_round": steps_per_round,
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "machine": machine(torch.device("cpu")),
        }
    payload = json.dumps(result, indent=1).encode()
    atomic_write(STEP_TIMES, lambda fh: fh.write(payload))
    return result


def run_variant(name: str, args, mols, nodes, reference, s_per_step: float) -> dict:
    """Train ``name`` for the budget's steps (resumable), sampling at the curve's marks."""
    out_path = RESULTS / "ablation" / f"{name}.json"
    if out_path.exists() and json.loads(out_path.read_text()).get("minutes") == args.minutes:
        log.info("%s: finished earlier (%s)", name, out_path)
        return json.loads(out_path.read_text())
    workdir = Path(args.workdir) / name
    state_path = workdir / "progress.json"
    progress = json.loads(state_path.read_text()) if state_path.exists() else {"curve": [], "train_s": 0.0}
    trainer, diffusion = _trainer(name, args, mols, workdir)
    if trainer.checkpoint_path.exists():
        trainer.resume()
    minutes = [m for m in args.curve_minutes if m < args.minutes] + [args.minutes]
    for mark in minutes:
        target = int(round(mark * 60.0 / s_per_step))
        if any(c["step"] == target for c in progress["curve"]):
            continue
        if trainer.step < target:
            t0 = time.perf_counter()
            trainer.train(until_step=target, desc=name)
            progress["train_s"] += time.perf_counter() - t0
        eval_model = build_score_model(model_config(name))
        eval_model.load_state_dict(ema_weights(trainer.ema.state_dict()))
        eval_model.eval()
        n = args.samples if mark == args.minutes else args.curve_samples
        metrics = judge_samples(eval_model, diffusion, nodes, n, args.steps, args.seed + 1, reference)
        point = {"train_min": mark, "step": target, **metrics}
        progress["curve"].append(point)
        workdir.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(progress).encode()
        atomic_write(state_path, lambda fh, data=payload: fh.write(data))
        _log_judgement(f"{name} at {mark:g} min (step {target})", metrics)
    losses = [h.loss for h in trainer.history]
    result = {
        "variant": name,
        "description": VARIANTS[name][2],
        "model_config": model_config(name),
        "diffusion_config": diffusion_config(name),
        "n_parameters": sum(p.numel() for p in trainer.model.parameters()),
        "minutes": args.minutes,
        "s_per_step_quiet": s_per_step,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "train_steps": trainer.step,
        "epochs": trainer.step * args.batch_size / len(mols),
        "train_s_measured_this_machine_state": progress["train_s"],
        "final_loss_mean_last_100": float(np.mean(losses[-100:])) if losses else None,
        "sampler": {"method": "ancestral", "steps": args.steps},
        "final": progress["curve"][-1],
        "curve": sorted(progress["curve"], key=lambda c: c["step"]),
        "machine": machine(torch.device("cpu")),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(result, indent=1).encode()
    atomic_write(out_path, lambda fh: fh.write(payload))
    return result


def judge_raw_weights(name: str, args, nodes, reference) -> dict | None:
    """Judge a finished variant's final raw (not averaged) weights as its EMA weights were
    judged, into its JSON as ``final_raw_weights``; None when its checkpoint is gone.

    The EMA's fixed decay of 0.999 from the initial weights still gives the first steps a
    share of exp(-steps / 1000) at the end: more for the variants with the fewest (and
    costliest) steps, whose EMA result the raw weights put in perspective.
    """
    out_path = RESULTS / "ablation" / f"{name}.json"
    if not out_path.exists():
        log.warning("%s: not finished (no %s); run it first", name, out_path)
        return None
    result = json.loads(out_path.read_text())
    from molguide.storage.checkpoints import load_checkpoint

    ckpt = Path(args.workdir) / name / "last.pt"
    if not ckpt.exists():
        log.warning("%s: no checkpoint at %s, so its raw weights cannot be judged", name, ckpt)
        return None
    state = load_checkpoint(ckpt)
    if int(state["step"]) != int(result["train_steps"]):
        raise SystemExit(f"{ckpt} is at step {state['step']}, the result at {result['train_steps']}")
    model = build_score_model(model_config(name))
    model.load_state_dict(state["model"])
    model.eval()
    diffusion = VPDiffusion.from_config(diffusion_config(name))
    metrics = judge_samples(model, diffusion, nodes, args.samples, args.steps, args.seed + 1, reference)
    result["final_raw_weights"] = {"step": int(state["step"]), **metrics}
    payload = json.dumps(result, indent=1).encode()
    atomic_write(out_path, lambda fh: fh.write(payload))
    _log_judgement(f"{name} raw weights (step {state['step']})", metrics)
    return result


def _log_judgement(label: str, metrics: dict) -> None:
    log.info(
        "%s: mol stab %.3f, atom stab %.3f, valid %.3f, strict %.3f, lost %d",
        label,
        metrics["mol_stability"],
        metrics["atom_stability"],
        metrics["validity"],
        metrics["validity_strict"],
        metrics["sample_failures"],
    )


def promote(name: str, output_dir: Path, mols, s_per_step: float) -> Path:
    """A variant's checkpoint as a ``train-score`` checkpoint in ``output_dir/score/last.pt``, so
    ``molguide run train-score`` with the variant's settings continues it (the generator that
    ships starts from the best variant's 30 minutes instead of repeating them)."""
    from molguide.storage.checkpoints import load_checkpoint, save_checkpoint

    workdir = RESULTS / "ablation_state" / name
    state = load_checkpoint(workdir / "last.pt")
    progress = json.loads((workdir / "progress.json").read_text())
    state.update(
        {
            "node_counts": NodeCountDistribution(mols.num_atoms).state_dict(),
            "data_config": {"dataset": "qm9", "split": "generator_half", "max_molecules": None},
            "n_molecules": len(mols),
            "promoted_from": f"benchmarks/generator_ablation.py variant {name}",
        }
    )
    # Checkpoints of these runs predate the trainer's own time records: the measured wall
    # clock of the training, and one thread's quiet step time for the CPU time.
    state.setdefault("train_seconds", float(progress["train_s"]))
    state.setdefault("cpu_seconds", float(state["step"]) * s_per_step)
    target = output_dir / "score" / "last.pt"
    save_checkpoint(state, target)
    log.info("%s (step %d) -> %s", name, state["step"], target)
    return target


def summary_table() -> str:
    rows = []
    for path in sorted((RESULTS / "ablation").glob("*.json")):
        r = json.loads(path.read_text())
        f = r["final"]
        key = "validity_strict_predicted_bonds"
        predicted = f"{100 * f[key]:.1f}" if f.get(key) is not None else "-"
        raw = r.get("final_raw_weights")
        keys = ("mol_stability", "validity", "validity_strict")
        raw_cells = " | ".join(f"{100 * raw[k]:.1f}" if raw else "-" for k in keys)
        rows.append(
            f"| {r['variant']} | {r['description']} | {r['train_steps']} | {r['minutes']:g} | "
            f"{100 * f['atom_stability']:.1f} | {100 * f['mol_stability']:.1f} | {100 * f['validity']:.1f} | "
            f"{100 * f['validity_strict']:.1f} | {100 * (f['uniqueness'] or 0):.1f} | {predicted} | "
            f"{raw_cells} |"
        )
    head = (
        "| variant | what | steps | train min | atom stab % | mol stab % | EDM valid % "
        "| strict valid % | unique % | strict valid, predicted bonds % "
        "| raw weights: mol stab % | raw: EDM valid % | raw: strict valid % |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    return head + "\n" + "\n".join(rows)


def plot_curves(finished: list[dict], path: Path) -> None:
    """Molecule stability and strict validity against training minutes, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for r in finished:
        minutes = [c["train_min"] for c in r["curve"]]
        for ax, key in zip(axes, ("mol_stability", "validity_strict")):
            ax.plot(minutes, [100 * c[key] for c in r["curve"]], marker="o", label=r["variant"])
    for ax, title in zip(axes, ("molecule stability %", "strict validity %")):
        ax.set_xlabel("training minutes (quiet CPU thread)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("QM9 generator ablation: 100 sampling steps, 200 samples per point (1,000 at the end)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="*", default=[], help=f"any of {list(VARIANTS)}")
    parser.add_argument("--list", action="store_true")
    parser.add_argument(
        "--summary", action="store_true", help="print and write the table of finished variants"
    )
    parser.add_argument("--calibrate", action="store_true", help="time every variant's step (quiet machine)")
    parser.add_argument(
        "--promote",
        nargs=2,
        metavar=("VARIANT", "OUTPUT_DIR"),
        help="write the checkpoint of VARIANT as OUTPUT_DIR/score/last.pt for train-score to continue",
    )
    parser.add_argument(
        "--raw-weights",
        action="store_true",
        help="judge the finished --variants' final raw (not EMA) weights too, into their JSON",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget per variant")
    parser.add_argument("--curve-minutes", type=float, nargs="*", default=[5.0, 10.0, 20.0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--curve-samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100, help="sampling steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--workdir",
        default=str(RESULTS / "ablation_state"),
        help="checkpoints of the runs (those of unfinished variants are committed between sessions)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.list:
        for name, (_, _, what) in VARIANTS.items():
            print(f"{name:<15} {what}")
        return
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; --list shows them")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.promote:
        qm9 = load_qm9()
        mols = qm9.subset(np.sort(edm_splits(len(qm9))["generator_half"]))
        times = json.loads(STEP_TIMES.read_text())["s_per_step"]
        promote(args.promote[0], Path(args.promote[1]), mols, times[args.promote[0]])
        return
    if args.variants or args.calibrate:
        qm9 = load_qm9()
        mols = qm9.subset(np.sort(edm_splits(len(qm9))["generator_half"]))
    if args.calibrate:
        times = calibrate(args.variants or list(VARIANTS), args, mols)["s_per_step"]
        for name, sec in times.items():
            print(
                f"{name:<15} {sec * 1000:7.1f} ms/step -> "
                f"{args.minutes * 60 / sec:8.0f} steps in {args.minutes:g} min"
            )
    elif args.variants:
        if not STEP_TIMES.exists():
            parser.error(f"no step times at {STEP_TIMES}: run --calibrate first (quiet machine)")
        times = json.loads(STEP_TIMES.read_text())["s_per_step"]
        missing = [v for v in args.variants if v not in times]
        if missing:
            parser.error(f"no calibrated step time for {missing}: run --calibrate --variants ...")
        nodes = NodeCountDistribution(mols.num_atoms)
        reference = qm9_training_smiles()
        for name in args.variants:
            if args.raw_weights:
                judge_raw_weights(name, args, nodes, reference)
            else:
                run_variant(name, args, mols, nodes, reference, times[name])
    if args.summary:
        table = summary_table()
        print(table)
        finished = [json.loads(p.read_text()) for p in sorted((RESULTS / "ablation").glob("*.json"))]
        payload = json.dumps({"table_markdown": table, "variants": finished}, indent=1).encode()
        atomic_write(RESULTS / "ablation.json", lambda fh: fh.write(payload))
        plot_curves(finished, RESULTS / "ablation_curve.png")


if __name__ == "__main__":
    main()

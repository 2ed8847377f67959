"""Helpers shared by the benchmark scripts: devices, interleaved timing, peak memory, reports."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; never on CPU."""
    if bf16 and device.type != "cuda":
        raise ValueError("--bf16 is for --device cuda only")
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()


def machine(device: torch.device) -> dict:
    """What the numbers were measured on, including the load from other processes right now."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
    }


def interleaved(
    fns: dict[str, Callable[[], object]], repeat: int, device: torch.device, settle: int = 1
) -> dict:
    """Seconds per call of each function, measured in turns (after one warm-up call each).

    Each round calls every function ``settle + 1`` times in a row and times the last
    call only, so each timed call follows a call of the same function, as in a
    training or sampling loop (the first call after another model pays for memory the
    other model freed and for caches it evicted). Functions measured side by side see
    the same load from other processes, so ratios of same-round calls are far steadier
    than ratios of separately measured medians. The order alternates between rounds.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for name in names:  # warm-up
        fns[name]()
    for r in range(repeat):
        for name in names if r % 2 == 0 else names[::-1]:
            for _ in range(settle):
                fns[name]()
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[k] / den[k]."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


class PeakMemory:
    """Peak memory of a block of code, in MiB.

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: the peak
    resident set size (VmHWM), reset through /proc/self/clear_refs on Linux; where that
    is not possible, ``ru_maxrss`` of the whole process (then only meaningful in a fresh
    process that has done little else). ``increase_mib`` is the peak minus the usage at
    the start of the block.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
        else:
            self.start = _status_kib("VmRSS") * 1024
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.method = "VmHWM (peak RSS, reset via /proc/self/clear_refs)"
            except OSError:
                self.method = "ru_maxrss (peak RSS of the whole process)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("VmHWM"):
            self.peak = _status_kib("VmHWM") * 1024
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def report(self) -> dict:
        mib = 1024**2
        return {
            "peak_mib": round(self.peak / mib, 1),
            "increase_mib": round((self.peak - self.start) / mib, 1),
            "method": self.method,
        }


def _status_kib(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def write_report(report: dict, out: str | Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def judge_samples(
    model,
    diffusion,
    nodes,
    n: int,
    steps: int,
    seed: int,
    reference,
    batch_size: int = 100,
    progress=False,
    grid_power: float = 1.0,
    sampler: str = "ancestral",
    sampler_options: dict | None = None,
) -> dict:
    """Sample ``n`` molecules (atom counts from ``nodes``, the registered ``sampler``,
    seeded, time grid of ``grid_power``) and judge them by EDM's protocol plus strict
    validity; lost samples count as invalid and unstable."""
    from molguide.chem import evaluate
    from molguide.chem.evaluate import over_requested
    from molguide.generation.pipeline import MoleculeDiffusionPipeline

    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)  # sizes, then noise, from one generator
    counts = nodes.sample(n, generator)
    pipe = MoleculeDiffusionPipeline(
        model,
        diffusion,
        nodes,
        sampler=sampler,
        steps=steps,
        grid_power=grid_power,
        sampler_options=dict(sampler_options or {}),
    )
    result = pipe(counts, batch_size=batch_size, generator=generator, progress=progress)
    molecules = result.molecules
    seconds = time.perf_counter() - t0
    ev = evaluate(molecules, reference_smiles=reference, descriptors=False, progress=progress)
    m = over_requested(ev.metrics, molecules, n, int(counts.sum()))
    m.update({"n_samples": n, "sample_s_per_molecule": seconds / n})
    m.update({"grid_power": grid_power, "sampler": sampler, "steps": steps})
    m["sampler_options"] = dict(sampler_options or {})
    return m


def judge_saved_model(
    folder: str,
    n: int,
    steps: int,
    seed: int,
    batch_size: int,
    grid_power: float,
    sampler: str = "ancestral",
    sampler_options: dict | None = None,
) -> dict:
    """:func:`judge_samples` of a saved model folder on one thread (a process-pool worker:
    measurements of several samplers then run side by side)."""
    import logging

    from molguide.chem.smiles import qm9_training_smiles

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    pretrained = load_generator(folder)
    reference = qm9_training_smiles()
    args = (pretrained.model, pretrained.diffusion, pretrained.nodes, n, steps, seed, reference, batch_size)
    return judge_samples(
        *args, progress=False, grid_power=grid_power, sampler=sampler, sampler_options=sampler_options
    )


def load_generator(source: str) -> SimpleNamespace:
    """A saved generator (a folder or a shipped name) as ``model``, ``diffusion``, ``nodes``,
    ``atom_types`` and ``config`` (its network config as ``model`` and its score record's
    entries: ``training``, ``sampler``, ``diffusion``, ``atom_types``)."""
    from molguide.storage.trained_run import TrainedRun

    run = TrainedRun.from_pretrained(source)
    record = run.record("score").model_dump(mode="json")
    config = {"model": dict(run.network("score").config), **record}
    return SimpleNamespace(
        model=run.network("score"),
        diffusion=run.diffusion,
        nodes=run.nodes,
        atom_types=run.atom_types,
        config=config,
    )


def judge_side_by_side(
    folder: str, n: int, steps: int, seed: int, batch_size: int, cells, processes: int
) -> list[dict]:
    """judge_saved_model(...) of every cell (sampler, grid power, sampler options), in the
    cells' order, one process per measurement (spawned)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(len(cells), processes), mp_context=context) as pool:
        jobs = [
            pool.submit(judge_saved_model, folder, n, steps, seed, batch_size, power, sampler, options)
            for sampler, power, options in cells
        ]
        return [job.result() for job in jobs]

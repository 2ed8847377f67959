"""The ``molguide`` command line."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import shlex
import shutil
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from molguide import __version__
from molguide.guidance.kinds import GUIDANCE_KINDS

log = logging.getLogger("molguide")


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- data info


def data_info(cache_dir: str | None = None, rebuild: bool = False) -> dict:
    """Sizes, splits, elements and property units and ranges of QM9 (as ``data info --json``)."""
    import numpy as np

    from molguide.data.elements import symbol
    from molguide.data.qm9 import PROPERTIES, default_cache_dir, load_qm9
    from molguide.data.splits import EDM_SPLIT_SEED, edm_splits

    qm9 = load_qm9(cache_dir, rebuild=rebuild)
    splits = edm_splits(len(qm9))
    counts = qm9.num_atoms
    elements, element_counts = np.unique(qm9.atomic_numbers, return_counts=True)
    heavy = qm9.without_hydrogens().num_atoms
    return {
        "dataset": "QM9 (qm9pack 1.0.3; DFT B3LYP/6-31G(2df,p) geometries)",
        "n_molecules": len(qm9),
        "n_atoms": {"mean": float(counts.mean()), "min": int(counts.min()), "max": int(counts.max())},
        "n_heavy_atoms": {"mean": float(heavy.mean()), "max": int(heavy.max())},
        "elements": {symbol(int(z)): int(c) for z, c in zip(elements, element_counts)},
        "splits": {name: int(len(idx)) for name, idx in splits.items()},
        "split_protocol": (
            f"EDM: RandomState({EDM_SPLIT_SEED}).permutation over GDB-index order; train/valid/test = "
            "100000/17748/13083; evaluator_half = first 50000 of train (property evaluator), "
            "generator_half = last 50000 (generator and guidance classifiers)"
        ),
        "properties": {
            p.name: {
                "unit": p.unit,
                "description": p.description,
                "source_column": p.column,
                "min": float(qm9.properties[p.name].min()),
                "max": float(qm9.properties[p.name].max()),
                "mean": float(qm9.properties[p.name].mean()),
                "std": float(qm9.properties[p.name].std()),
            }
            for p in PROPERTIES
        },
        "cache_dir": str(Path(cache_dir or default_cache_dir())),
    }


def _print_data_info(info: dict) -> None:
    print(f"{info['dataset']}")
    print(
        f"molecules: {info['n_molecules']}   atoms per molecule: mean {info['n_atoms']['mean']:.1f}, "
        f"max {info['n_atoms']['max']} (heavy atoms max {info['n_heavy_atoms']['max']})"
    )
    print("elements:  " + ", ".join(f"{k} {v}" for k, v in info["elements"].items()))
    print("splits:    " + ", ".join(f"{k} {v}" for k, v in info["splits"].items()))
    print(f"           {info['split_protocol']}")
    print(f"{'property':<13} {'unit':<12} {'min':>10} {'max':>10} {'mean':>10} {'std':>9}  description")
    for name, p in info["properties"].items():
        print(
            f"{name:<13} {p['unit']:<12} {p['min']:>10.4g} {p['max']:>10.4g} {p['mean']:>10.4g} "
            f"{p['std']:>9.4g}  {p['description']}"
        )
    print(f"cache:     {info['cache_dir']}")


# ----------------------------------------------------------------------------- evaluate


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _print_evaluation(result: dict, path: str, max_errors: int = 20, warning: str | None = None) -> None:
    print(f"{path}: {result['n_evaluated']} of {result['n_input']} records evaluated")
    if warning is not None:
        print(f"  {warning}")
    from molguide.chem import METRIC_NAMES
    from molguide.chem.evaluate import PREDICTED_BONDS_METRIC

    for key in (*METRIC_NAMES, PREDICTED_BONDS_METRIC):
        if key in result:
            print(f"  {key:<16} {_fmt(result[key])}")
    if result["properties"]:
        print(f"  {'property':<22} {'n':>6} {'mean':>10} {'median':>10} {'std':>9}")
        for name, s in result["properties"].items():
            if s["n"]:
                print(f"  {name:<22} {s['n']:>6} {s['mean']:>10.4g} {s['median']:>10.4g} {s['std']:>9.4g}")
    if "posebusters" in result:
        print("  PoseBusters (config mol, raw geometries): pass rate of each check")
        for name, rate in result["posebusters"].items():
            print(f"  {name:<32} {_fmt(rate)}")
    errors = result["errors"]
    if errors:
        print(f"  {len(errors)} record(s) with problems:")
        for e in errors[:max_errors]:
            where = f"record {e['record']}" + (f" (line {e['line']})" if e.get("line") else "")
            print(f"    {where}: {e['reason']}")
        if len(errors) > max_errors:
            print(f"    ... and {len(errors) - max_errors} more (use --json for all)")


def _export_sampler(args: argparse.Namespace) -> dict | None:
    """The sampler record ``molguide export`` writes (None: no recommendation)."""
    from molguide.diffusion.samplers import SAMPLERS

    record: dict = {}
    if args.grid_power is not None:
        record["grid_power"] = args.grid_power
    if args.sampler is not None:
        if args.sampler not in SAMPLERS:
            raise UserError(f"--sampler: unknown sampler {args.sampler!r}; choose one of {list(SAMPLERS)}")
        record["method"] = args.sampler
    options = {}
    for item in args.sampler_option:
        key, sep, value = item.partition("=")
        known = SAMPLERS[record.get("method", "ancestral")].OPTIONS
        if not sep or key not in known:
            raise UserError(
                f"--sampler-option {item!r}: give KEY=VALUE with KEY one of {list(known) or 'none'}"
            )
        try:
            options[key] = float(value)
        except ValueError:
            raise UserError(f"--sampler-option {item!r}: {value!r} is not a number") from None
    if options:
        record["options"] = options
    return record or None


def run_evaluate(args: argparse.Namespace) -> int:
    from molguide.chem.evaluate import (
        check_evaluated_sdf_path,
        evaluate,
        missing_hydrogens_warning,
        write_evaluated_sdf,
    )
    from molguide.data.io import read_molecules

    def number_option(option: str, raw: str | None, whole: bool) -> float | int | None:
        """The value of a numeric ``evaluate`` option: a finite number above 0 (a whole one
        when ``whole``), None when not given; UserError naming the option otherwise."""
        if raw is None:
            return None
        kind = "a whole number of at least 1" if whole else "a number above 0"
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"{option}: {raw!r} is not a number; give {kind}") from None
        if not (math.isfinite(value) and value > 0) or (whole and not value.is_integer()):
            raise UserError(f"{option}: {raw} is not {kind}")
        return int(value) if whole else value

    workers = number_option("--workers", args.workers, whole=True)
    xtb_timeout = number_option("--xtb-timeout", args.xtb_timeout, whole=False)
    max_file_mb = number_option("--max-file-mb", args.max_file_mb, whole=False)
    if args.out:  # before the evaluation, which may take minutes
        from molguide.runs.preflight import check_output_dir

        check_evaluated_sdf_path(args.out, args.file)  # and the CSV beside it
        check_output_dir(Path(args.out).resolve().parent, "--out folder")
    report = read_molecules(args.file, max_mb=max_file_mb)
    if report.errors:
        log.warning("%s", report.summary())
    if not report.molecules and args.json:
        errors = [e.as_dict() for e in report.errors]
        print(json.dumps({"n_input": report.n_records, "n_evaluated": 0, "errors": errors}))
        return 2
    molecules = report.require_molecules()
    evaluation = evaluate(
        molecules,
        reference_smiles=[] if args.no_novelty else None,
        xtb=not args.no_xtb,
        xtb_workers=workers,
        xtb_timeout_s=xtb_timeout,
        read_errors=report.errors,
        progress=None if not args.json else False,
    )
    result = evaluation.to_dict()
    warning = missing_hydrogens_warning(evaluation, molecules)
    if warning is not None and args.json:
        log.warning("%s", warning)  # stdout holds only the JSON object
    if args.posebusters:
        from molguide.chem.plausibility import posebusters_checks

        checks = posebusters_checks(molecules, progress=not args.json)
        # Over the records evaluated: raw geometries, nothing relaxed.
        result["posebusters"] = {"all_checks": checks.all_checks, **checks.pass_rates}
    if args.out:
        count = write_evaluated_sdf(evaluation, molecules, args.out, args.file, report.errors)
        log.info("wrote %d records with their results as molguide_* SD tags to %s", count, args.out)
    if args.json:
        print(json.dumps(result, allow_nan=False, default=_json_default))
    else:
        _print_evaluation(result, args.file, warning=warning)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    """``molguide generate SOURCE``: molecules from a trained run, guided towards one goal
    per ``--target``; prints what they reached and writes them with ``--out``."""
    from molguide.diagnostics.goals import goal_improvements
    from molguide.generation.designer import Designer, GenerationError
    from molguide.guidance.goals import parse_goal_text

    try:
        target = dict(parse_goal_text(text) for text in args.target) or None
        guidance = dict(_weight_option(text) for text in args.guidance) or None
        n, seed = _whole_option("-n", args.n, 1), _whole_option("--seed", args.seed, 0)
        steps = _whole_option("--steps", args.steps, 1) if args.steps is not None else None
        if args.out:
            from molguide.runs.preflight import check_output_dir

            if Path(args.out).suffix.lower() != ".sdf" or Path(args.out).is_dir():
                raise UserError(f"--out {args.out}: name an .sdf file to write")
            check_output_dir(Path(args.out).resolve().parent, "--out folder")
            if args.start_from:  # the structures and the CSVs beside them must not replace the input
                from molguide.chem.evaluate import check_evaluated_sdf_path

                check_evaluated_sdf_path(args.out, args.start_from)
                if args.relax:
                    check_evaluated_sdf_path(_relaxed_path(args.out), args.start_from)
        designer = Designer.load(args.source, args.device, args.guidance_from)
        progress = sys.stderr.isatty() and not args.json  # bars on a terminal only
        options = {"seed": seed, "steps": steps, "method": args.method, "progress": progress}
        if args.t0 is not None or args.keep is not None:
            if not args.start_from:
                raise UserError("--t0 and --keep need --from FILE (the lead or the fragment's molecule)")
            from molguide.generation.from_molecules import lead_from_file

            lead, keep = lead_from_file(args.start_from, "--from"), _keep_option(args.keep)
            if args.t0 is not None:  # optimise the lead (keep: atoms fixed as well)
                t0 = _fraction_option("--t0", args.t0)
                options = {**options, "t0": t0, "keep": keep}
                make = functools.partial(designer.optimize, lead)
            else:  # grow molecules around the kept atoms
                options = {**options, "keep": (lead, keep)}
                make = designer.generate
        elif args.start_from:
            raise UserError("--from FILE needs --t0 (optimise the lead) or --keep (grow around its atoms)")
        else:
            make = designer.generate
        mols = make(n, target=target, guidance=guidance, **options)
        result = {
            "source": designer.run.source,
            "n_requested": n,
            "n_generated": len(mols),
            "guidance": mols[0].GetProp("molguide_guidance"),
            "metrics": dict(designer.last_metrics),
            "classifiers": _classifier_diagnostics(designer),
        }
        relaxed = None
        if args.relax:  # relaxed copies, judged apart: raw and relaxed numbers are never mixed
            from molguide.api import evaluate, relax
            from molguide.chem.relax import relaxation_summary

            relaxed = relax(mols, args.relax)
            done = [m for m in relaxed if m.GetProp("relaxed") != "none"]  # judged: the relaxed ones only
            result["relaxed_metrics"] = relaxation_summary(relaxed)
            if done:
                judged = evaluate(done, novelty=False)
                keys = ("validity", "validity_strict", "atom_stability", "mol_stability")
                judged = {"n": len(done), **{k: judged[k] for k in keys}}
                result["relaxed_metrics"] = {**judged, **result["relaxed_metrics"]}
        if args.compare_unguided:
            goals, guided = designer.last_goals, designer.last_predictions
            make(n, evaluate=False, **options)
            binnings = {goal.property: designer.run.binning(goal.property) for goal in goals}
            unguided = designer.last_predictions
            result["improvement"] = goal_improvements(goals, guided, unguided, binnings, seed)
    except (ValueError, GenerationError) as err:
        raise UserError(str(err)) from err
    if args.out:
        from molguide.api import write_sdf
        from molguide.data.io import csv_beside, write_csv

        log.info("wrote %d molecules to %s", write_sdf(mols, args.out), args.out)
        write_csv(mols, csv_beside(args.out))  # the table a spreadsheet filters, beside the structures
        if relaxed is not None:
            where = _relaxed_path(args.out)
            log.info("wrote %d relaxed molecules to %s", write_sdf(relaxed, where), where)
            write_csv(relaxed, csv_beside(where))
    if args.json:
        print(json.dumps(result, default=_json_default))
    else:
        _print_generation(result)
    return 0


def _relaxed_path(out: str) -> Path:
    """Where ``--relax`` writes the relaxed copies beside ``--out``."""
    return Path(out).with_name(Path(out).stem + "_relaxed.sdf")


def _keep_option(text: str | None):
    """``--keep``: a SMARTS pattern, or atom indices like ``0,1,2`` (0-based)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if all(p.isdigit() for p in parts):
        return [int(p) for p in parts]
    return text


def _fraction_option(option: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{option} {raw!r}: give a number in (0, 1]") from None
    if not 0 < value <= 1:
        raise UserError(f"{option} {raw!r}: give a number in (0, 1]")
    return value


def _classifier_diagnostics(designer) -> dict[str, dict]:
    """Per goal with a classifier: its held-out CE per noise level (chance: log of the number
    of bins) and the guidance-error estimate it implies (a bound, unless a CFG model gave it)."""
    out = {}
    for goal in designer.last_goals:
        if not designer.run.has("classifier", goal.property):
            continue
        record = designer.run.record("classifier", goal.property)
        rows = record.noise_levels
        out[goal.property] = {
            "n_bins": record.property_target.n_bins,
            "chance_ce": math.log(record.property_target.n_bins),
            "t_high": [row.get("t_high") for row in rows],
            "classifier_ce": [row.get("classifier_ce") for row in rows],
            "guidance_mse_est": [row.get("guidance_mse_est") for row in rows],
            "guidance_mse_kind": sorted({str(row.get("guidance_mse_kind")) for row in rows}),
        }
    return out


def _weight_option(text: str) -> tuple[str, float]:
    kind, eq, weight = text.partition("=")
    try:
        return kind.strip(), float(weight) if eq else 1.0
    except ValueError:
        raise UserError(f"--guidance {text!r}: give KIND=WEIGHT, e.g. classifier=2") from None


def _whole_option(option: str, raw: str, least: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{option}: {raw!r} is not a whole number") from None
    if value < least:
        raise UserError(f"{option}: {value} is below {least}")
    return value


def _print_generation(result: dict) -> None:
    print(f"{result['n_generated']} of {result['n_requested']} molecules from {result['source']}")
    print(f"guidance: {result['guidance']}")
    for prop, diag in result["classifiers"].items():
        ce = ", ".join(f"{v:.2f}" for v in diag["classifier_ce"] if v is not None)
        est = ", ".join(f"{v:.3g}" for v in diag["guidance_mse_est"] if v is not None)
        kind = "/".join(diag["guidance_mse_kind"])
        chance = diag["chance_ce"]
        print(f"  {prop} classifier: held-out CE per noise level, t = 0 to 1 (chance {chance:.2f}): {ce}")
        print(f"  {prop} guidance-error estimate per noise level ({kind}): {est}")
    for key, value in {**result["metrics"], **result.get("improvement", {})}.items():
        if value is not None and not key.endswith(("_ci_low", "_ci_high")):
            low, high = result.get("improvement", {}).get(f"{key}_ci_low"), None
            if low is not None:
                high = result["improvement"][f"{key}_ci_high"]
            interval = f"  (95 % CI {low:.4g} to {high:.4g})" if low is not None else ""
            print(f"  {key:<32} {value:.4g}{interval}")
    if "relaxed_metrics" in result:
        print("relaxed copies (MMFF94; those MMFF could type), judged apart from the raw molecules:")
        for key, value in result["relaxed_metrics"].items():
            if value is not None:
                print(f"  {key:<32} {value:.4g}")


# "module:function" or "module:function:first argument"; a guidance kind's network gets its
# train-<network> command from the registry (molguide.guidance.kinds, imported without torch).
PIPELINES = {
    "quickstart": "molguide.runs.workflow:quickstart",
    "full": "molguide.runs.workflow:full",
    "toy": "molguide.runs.toy:run_toy",
    "train-score": "molguide.runs.train:train_network:score",
    "train-evaluator": "molguide.runs.train:train_network:evaluator",
    **{
        f"train-{k.network}": f"molguide.runs.train:train_network:{k.network}"
        for k in GUIDANCE_KINDS.values()
    },
    "sample": "molguide.runs.sample:sample_and_evaluate",
    "design": "molguide.runs.design:design_from_lead",
    "guide": "molguide.runs.guide:guided_sample",
    "evaluate": "molguide.runs.workflow:evaluate_file",
}


# Pipelines that train one score network and may run data-parallel under torchrun.
DATA_PARALLEL_PIPELINES = ("train-score", "train-reward", "train-cfg")


def _resume_command(args: argparse.Namespace) -> str:
    from molguide.training.distributed import launched_by_torchrun

    parts = ["molguide", "run", args.pipeline]
    if launched_by_torchrun():
        world, local = os.environ["WORLD_SIZE"], os.environ.get("LOCAL_WORLD_SIZE", "")
        launcher = ["--standalone", f"--nproc-per-node={world}"] if world == local else ["<launcher options>"]
        parts = ["torchrun", *launcher, shutil.which("molguide") or "molguide", *parts[1:]]
    if args.config:
        parts += ["-c", args.config]
    for item in args.set:
        parts += ["--set", item]
    return shlex.join(parts)


def _unknown_pipeline(name: str) -> str:
    return f"unknown pipeline {name!r}; choose one of: {', '.join(PIPELINES)}"


def check_pipeline(name: str) -> str:
    """``name`` when it is a pipeline, else UserError listing them (one line, exit status 2)."""
    if name not in PIPELINES:
        raise UserError(_unknown_pipeline(name))
    return name


def resolve_config(args: argparse.Namespace):
    """The config ``molguide run`` and ``molguide config show`` use: the pipeline's own
    defaults (the quickstart's file), then ``-c FILE``, then ``--set`` and ``--overrides``."""
    from molguide.runs.config import load_config
    from molguide.runs.pipeline_help import pipeline_defaults

    check_pipeline(args.pipeline)
    try:
        overrides = [*args.set, *shlex.split(args.overrides or "")]
    except ValueError as err:  # an unclosed quote
        raise UserError(f"--overrides {args.overrides!r}: {err}") from None
    return load_config(args.config or None, overrides, base=pipeline_defaults(args.pipeline))


def run_config_show(args: argparse.Namespace) -> int:
    """``molguide config show PIPELINE``: the resolved config as YAML (what ``run`` would use)."""
    from molguide.runs.config import dump_config

    config = resolve_config(args)
    command = ["molguide", "run", args.pipeline, *(["-c", args.config] if args.config else [])]
    command += [a for item in args.set for a in ("--set", item)]
    command += ["--overrides", args.overrides] if args.overrides else []
    print(f"# the config of: {shlex.join(command)}")
    print(dump_config(config), end="")
    return 0


def run_pipeline(args: argparse.Namespace) -> int:
    """``molguide run PIPELINE``: resolve the config, check the tracking store, run, print the summary."""
    check_pipeline(args.pipeline)  # before the imports below, which cost torch
    from molguide.runs.lock import hold_output_dir
    from molguide.runs.preflight import check_device, check_output_dir
    from molguide.runs.tracking import check_tracking, end_stale_runs, set_output_dir
    from molguide.training import distributed

    config = resolve_config(args)
    uri = check_tracking()  # an unreachable server or unusable store fails here, before any training
    check_output_dir(config.output_dir)
    set_output_dir(config.output_dir)
    if distributed.launched_by_torchrun():
        check_device(config.device)  # before a process group is set up on it
        if args.pipeline not in DATA_PARALLEL_PIPELINES:
            raise UserError(
                f"{args.pipeline} runs in one process; data-parallel (torchrun) pipelines are "
                + ", ".join(DATA_PARALLEL_PIPELINES)
            )
        _, device = distributed.init_from_env(config.device)
        config = config.model_copy(update={"device": device})
    check_device(config.device)
    is_main = distributed.context().is_main
    if not is_main:  # rank 0 speaks for the job (and holds the folder for it)
        logging.getLogger().setLevel(logging.WARNING)
    with hold_output_dir(config.output_dir) if is_main else contextlib.nullcontext() as taken_over:
        if is_main:
            if taken_over is not None:
                log.warning("took over the lock of %s: that process is gone", taken_over.describe())
            for run_id in end_stale_runs(config.output_dir, taken_over):
                log.warning("MLflow run %s was left RUNNING by a process that is gone; marked FAILED", run_id)
        return _run_locked(args, config, uri, is_main)


def _run_locked(args: argparse.Namespace, config, uri: str, is_main: bool) -> int:
    """The pipeline itself, once its output folder is held: run, then print the summary."""
    import importlib

    from molguide.runs.config import dump_config
    from molguide.runs.tracking import ui_command, ui_link
    from molguide.storage.files import StorageError
    from molguide.training import distributed

    module, func, *first = PIPELINES[args.pipeline].split(":")
    log.info("running %s (config %s), tracking to %s", args.pipeline, args.config or "defaults", uri)
    log.debug("resolved config:\n%s", dump_config(config))
    progress = False if args.no_progress else None
    try:
        summary = getattr(importlib.import_module(module), func)(*first, config, progress=progress)
        distributed.shutdown()
    except StorageError:  # a full disk: the last checkpoint is whole, the same command resumes
        print(f"molguide: free some space, then resume with: {_resume_command(args)}", file=sys.stderr)
        raise
    except _one_line_errors():
        raise  # the message says what to do; resuming the same command would meet it again
    except ValueError as err:  # configuration values the schema cannot check (e.g. backbone kwargs)
        raise UserError(str(err)) from err
    except (KeyboardInterrupt, Exception) as err:
        if not is_main or not any(Path(config.output_dir).glob("*/last.pt")):
            raise  # under torchrun, rank 0 alone says how to resume
        if isinstance(err, Terminated):
            what = "terminated (SIGTERM)"
        elif isinstance(err, KeyboardInterrupt):
            what = "interrupted"
        else:
            what = f"failed ({type(err).__name__}: {err})"
        print(
            f"molguide: {args.pipeline} {what}; the MLflow run is marked "
            f"{'KILLED' if isinstance(err, KeyboardInterrupt) else 'FAILED'}, checkpoints are kept in "
            f"{config.output_dir}.\nmolguide: resume with: {_resume_command(args)}",
            file=sys.stderr,
        )
        raise
    if not is_main:
        return 0
    if args.pipeline == "guide" and not args.json:
        from molguide.diagnostics.tables import run_summary_table

        summary["table"] = run_summary_table({"pipeline": "guide", "steps": {"guide": summary}}, config)
        summary["mlflow_ui"] = ui_command(uri)
        summary["mlflow_link"] = ui_link(summary["experiment_id"], summary["run_id"])
    if args.json or "table" not in summary:
        print(json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2, default=str))
    else:
        print(summary["table"])
        print(f"\nMLflow run {summary['run_id']}; open the UI with:\n  {summary['mlflow_ui']}")
        if summary.get("mlflow_link"):
            print(f"then its run (classic model-training view):\n  {summary['mlflow_link']}")
        return 0
    log.info("see the runs with: %s", ui_command(uri))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """``molguide compare``: the runs of the store and their key metrics, as a table or CSV."""
    from molguide.runs.compare import (
        DEFAULT_WIDTH,
        compare_runs,
        metric_name,
        sort_rows,
        to_csv,
        to_table,
        with_metrics,
    )
    from molguide.runs.tracking import tracking_uri

    metrics = [metric_name(m) for m in args.metric]
    sort = metric_name(args.sort) if args.sort else None
    wanted = list(dict.fromkeys([*metrics, *([sort] if sort else [])]))
    max_runs = _whole_option("--max-runs", args.max_runs, 1)
    try:
        rows = compare_runs(args.experiment, include_nested=args.all, max_runs=max_runs, metrics=wanted)
    except ValueError as err:
        raise UserError(str(err)) from err
    rows = with_metrics(rows, metrics)
    if sort is not None:
        if rows and all(r.get(sort) is None for r in rows):
            log.warning("no run listed has the metric %r: nothing to sort by", sort)
        rows = sort_rows(rows, sort, ascending=args.ascending)
    if args.csv:
        print(to_csv(rows), end="")
    elif not rows:
        having = f" with {', '.join(metrics)}" if metrics else ""
        print(f"no runs{having} in {tracking_uri()}" + ("" if args.all else " (--all adds nested runs)"))
    else:
        print(to_table(rows, None if args.wide else DEFAULT_WIDTH, metrics=wanted))
    return 0


def _json_default(value):
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ----------------------------------------------------------------------------- parser


HELP_WIDTH = 100  # help text fits this many columns (fewer on a narrower terminal)


def _help_width() -> int:
    return max(40, min(HELP_WIDTH, shutil.get_terminal_size().columns - 2))


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str, **kwargs) -> None:
        super().__init__(prog, **{"width": _help_width(), **kwargs})


class _RawFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (pipeline lists, config keys), wrapped by the caller."""

    def __init__(self, prog: str, **kwargs) -> None:
        super().__init__(prog, **{"width": _help_width(), **kwargs})


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser (and its subcommands' parsers) whose help fits :data:`HELP_WIDTH`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


class _RunHelp(argparse.Action):
    """``run``'s -h/--help: after a pipeline's name, what that pipeline does and its main
    config keys (``molguide run quickstart --help``); before one, ``run``'s own help."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        pipeline = getattr(namespace, "pipeline", None)
        if pipeline is None:
            parser.print_help()
            parser.exit()
        if pipeline not in PIPELINES:
            print(f"molguide: error: {_unknown_pipeline(pipeline)}", file=sys.stderr)
            parser.exit(2)
        pipeline_parser(pipeline).print_help()
        parser.exit()


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="YAML run configuration (default: the pipeline's defaults)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a value (repeatable)"
    )
    parser.add_argument(
        "--overrides", metavar="TEXT", help="several KEY=VALUE in one string (for MLproject entry points)"
    )


def pipeline_parser(pipeline: str) -> argparse.ArgumentParser:
    """The parser whose help is ``molguide run PIPELINE --help``."""
    from molguide.runs.pipeline_help import describe_pipeline

    parser = _Parser(
        prog=f"molguide run {pipeline}",
        description=describe_pipeline(pipeline, _help_width()),
        formatter_class=_RawFormatter,
    )
    _add_run_options(parser)
    _add_run_output_options(parser)
    return parser


def _add_run_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (default: only on a terminal)"
    )


def build_parser() -> argparse.ArgumentParser:
    from molguide.runs.pipeline_help import pipeline_list

    parser = _Parser(prog="molguide", description="Property-targeted 3D molecule generation, measured.")
    parser.add_argument("--version", action="version", version=f"molguide {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="QM9 sizes, splits, property units and ranges")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--cache", help="cache folder (default: $MOLGUIDE_CACHE or the user cache)")
    info.add_argument("--rebuild", action="store_true", help="rebuild the QM9 cache")

    run = sub.add_parser(
        "run",
        help="run a pipeline and log it to MLflow",
        description=textwrap.fill(
            "Run a pipeline with its config (the pipeline's defaults, then -c FILE, then --set) and "
            "log it to MLflow. molguide run PIPELINE --help: what it does and its main keys.",
            _help_width(),
        ),
        epilog=pipeline_list(PIPELINES, _help_width()),
        formatter_class=_RawFormatter,
        add_help=False,
    )
    run.add_argument("-h", "--help", action=_RunHelp, help="show this help (after PIPELINE: the pipeline's)")
    # Checked by run_pipeline (one `molguide: error:` line for an unknown name), listed in the epilog.
    run.add_argument("pipeline", metavar="PIPELINE", help="which pipeline (listed below)")
    _add_run_options(run)
    _add_run_output_options(run)

    config = sub.add_parser("config", help="run configurations")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser(
        "show",
        help="print a pipeline's resolved config as YAML",
        description="Print the config molguide run PIPELINE would use, as YAML: the pipeline's "
        "defaults, then -c FILE, then --set and --overrides, checked like a run's.",
    )
    show.add_argument("pipeline", metavar="PIPELINE", help=f"one of: {', '.join(PIPELINES)}")
    _add_run_options(show)

    cmp = sub.add_parser(
        "compare",
        help="runs of the MLflow store and their key metrics",
        description="The runs of the MLflow store ($MLFLOW_TRACKING_URI, else ./mlflow.db), newest "
        "first, with their key metrics, in 120 columns (--wide: every column). The store is only "
        "read; a read-only store is read through a temporary copy.",
    )
    cmp.add_argument(
        "--experiment",
        action="append",
        default=[],
        metavar="NAME",
        help="only this experiment (quickstart finds molguide-quickstart; repeatable; default: every "
        "molguide-* experiment)",
    )
    cmp.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME",
        help="only runs that logged this metric, shown as a column (repeatable)",
    )
    cmp.add_argument(
        "--sort", metavar="METRIC", help="sort by this metric, largest first; runs without it last"
    )
    cmp.add_argument("--ascending", action="store_true", help="with --sort: smallest first")
    cmp.add_argument("--wide", action="store_true", help="every key metric, full names and run ids")
    cmp.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    cmp.add_argument("--all", action="store_true", help="include nested runs (steps, sweep settings)")
    cmp.add_argument("--max-runs", default="200", metavar="N", help="read the newest N runs (default: 200)")

    ev = sub.add_parser("evaluate", help="chemistry metrics of molecules in an SDF or XYZ file")
    ev.add_argument("file", help="molecule file: .sdf, .xyz, or .csv/.smi of SMILES")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--no-xtb", action="store_true", help="skip the GFN2-xTB oracle")
    ev.add_argument("--no-novelty", action="store_true", help="skip novelty against QM9 train")
    # Numbers are checked by run_evaluate, so that a bad one is one `molguide: error:` line.
    ev.add_argument("--workers", default=None, help="xTB worker processes, at least 1 (default: cores)")
    ev.add_argument("--xtb-timeout", default="60", help="seconds per molecule for xTB, above 0 (default: 60)")
    ev.add_argument(
        "--max-file-mb",
        default=None,
        help="refuse molecule files larger than this many MB (default: $MOLGUIDE_MAX_FILE_MB, else 1024)",
    )
    ev.add_argument("--out", help="also write the molecules with per-molecule results as SDF tags")
    ev.add_argument(
        "--posebusters",
        action="store_true",
        help="add PoseBusters' molecule checks (about 1 s per molecule: it embeds reference conformers)",
    )

    gen = sub.add_parser(
        "generate",
        help="molecules from a trained run, guided towards one goal per property",
        description="Generate molecules, optionally guided towards several properties at once "
        "(docs/generate.md). Example: molguide generate runs/gap --guidance-from runs/mu "
        "--target gap_eV=high --target mu_D=low --guidance classifier=2 -n 100 --out mols.sdf",
    )
    gen.add_argument("source", help="a run folder, runs:/<run_id>, a saved model or a shipped name (qm9)")
    gen.add_argument("-n", default="100", help="molecules to generate (default: 100)")
    gen.add_argument(
        "--guidance-from",
        action="append",
        default=[],
        metavar="RUN",
        help="add the guidance networks and evaluators of another run (repeat: one per property)",
    )
    gen.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="PROPERTY=GOAL",
        help="a goal: gap_eV=high, mu_D=low, alpha_bohr3=75 (a value), homo_eV=-6.5+-0.2 (a value "
        "with a tolerance), lumo_eV=bin:3; options after commas: mu_D=low,weight=2,t_max=0.8; "
        "repeat for several properties",
    )
    gen.add_argument(
        "--guidance",
        action="append",
        default=[],
        metavar="KIND=WEIGHT",
        help=f"weight of a guidance kind ({', '.join(GUIDANCE_KINDS)}); repeat for several "
        "(default with a target: classifier=1)",
    )
    gen.add_argument("--seed", default="0", help="the same seed gives the same sizes and noise (default: 0)")
    gen.add_argument("--steps", help="sampler steps (default: what the model recommends)")
    gen.add_argument("--method", help="sampler (default: what the model recommends)")
    gen.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    gen.add_argument(
        "--compare-unguided",
        action="store_true",
        help="also generate unguided with the same seed and report each goal's improvement",
    )
    gen.add_argument(
        "--from",
        dest="start_from",
        metavar="FILE",
        help="design from a molecule (the first of an SDF with 3D coordinates): with --t0, variants of it "
        "(a lead to improve); with --keep alone, new molecules around its kept atoms (docs/edit.md)",
    )
    gen.add_argument(
        "--t0", help="with --from: how far the variants move, from 0 (the lead) to 1 (its atom count only)"
    )
    gen.add_argument("--keep", help="with --from: atoms that stay, as a SMARTS pattern or indices like 0,1,2")
    gen.add_argument(
        "--out", help="write the molecules with their properties as SD tags to this SDF (and a CSV beside it)"
    )
    gen.add_argument(
        "--relax",
        choices=["mmff"],
        help="also relax copies with MMFF94 and report their metrics apart (with --out: <name>_relaxed.sdf)",
    )
    gen.add_argument("--json", action="store_true", help="print one JSON object")

    ex = sub.add_parser(
        "export", help="training checkpoints as a trained-run folder (what molguide.load and sampling read)"
    )
    ex.add_argument(
        "source", help="a run's output_dir (every <kind>/last.pt in it) or one train-score checkpoint"
    )
    ex.add_argument(
        "out",
        help="folder to write (molguide_run.json, <kind>/config.json + model.safetensors; may be the "
        "run folder itself); molguide.load(out) reads it",
    )
    ex.add_argument("--card", help="a Markdown model card to copy in as MODEL_CARD.md")
    ex.add_argument(
        "--grid-power",
        type=float,
        help="record the sampler time-grid power the model is meant for (generate's default)",
    )
    ex.add_argument("--sampler", help="record the sampler generate uses by default (e.g. dpmpp2m_sde)")
    ex.add_argument(
        "--sampler-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of that sampler to record (e.g. eta=3); repeat for several",
    )
    return parser


# Errors printed as one `molguide: error:` line (exit status 2), by module: an error can only
# have been raised once its module is imported, so none is imported to catch it (importing
# molguide.storage.checkpoints alone costs torch, over a second).
ONE_LINE_ERRORS = (
    "molguide.data.io:MoleculeFileError",
    "molguide.data.qm9:DataError",
    "molguide.runs.config:ConfigError",
    "molguide.storage.checkpoints:CheckpointError",
    "molguide.runs.tracking:TrackingError",
    "molguide.runs.preflight:PreflightError",
    "molguide.runs.lock:FolderInUseError",
    "molguide.storage.files:StorageError",
)


def _one_line_errors() -> tuple[type[Exception], ...]:
    """:class:`UserError` and the errors of :data:`ONE_LINE_ERRORS` whose modules are loaded."""
    loaded = [spec.split(":") for spec in ONE_LINE_ERRORS if spec.split(":")[0] in sys.modules]
    return (UserError, *(getattr(sys.modules[module], name) for module, name in loaded))


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm, ``docker stop`` and ``kill`` send), handled like Ctrl-C: the training
    loop stops at once, the last checkpoint is kept, the MLflow run is marked KILLED."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the command runs, SIGTERM raises :class:`Terminated` (main thread only; elsewhere,
    or where the signal cannot be caught, the default stays); the old handler comes back after."""

    def handler(signum, frame):
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main thread, or not supported here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``molguide`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="molguide: %(message)s",
        stream=sys.stderr,
    )
    with _sigterm_as_interrupt():
        try:
            return _dispatch(args)
        except BrokenPipeError:  # `molguide compare | head`: the reader has gone, nothing to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141  # 128 + SIGPIPE, as a shell reports it


def _dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; known errors become one line and an exit status."""
    try:
        if args.command == "data" and args.data_command == "info":
            info = data_info(args.cache, args.rebuild)
            if args.json:
                print(json.dumps(info))
            else:
                _print_data_info(info)
            return 0
        if args.command == "evaluate":
            return run_evaluate(args)
        if args.command == "run":
            return run_pipeline(args)
        if args.command == "compare":
            return run_compare(args)
        if args.command == "config" and args.config_command == "show":
            return run_config_show(args)
        if args.command == "generate":
            return run_generate(args)
        if args.command == "export":
            from molguide.storage.files import atomic_write
            from molguide.storage.metadata import RECORDS
            from molguide.storage.trained_run import CARD_FILE, export_checkpoint, write_index

            if args.card and not Path(args.card).is_file():
                raise UserError(f"{args.card}: no such model card")
            card = Path(args.card).read_text() if args.card else None
            if args.grid_power is not None and not args.grid_power > 0:
                raise UserError(f"--grid-power must be > 0, got {args.grid_power}")
            sampler = _export_sampler(args)
            source, folder = Path(args.source), Path(args.out)
            if source.is_dir():
                checkpoints = {
                    p.parent.name: p for p in sorted(source.glob("*/last.pt")) if p.parent.name in RECORDS
                }
            elif source.is_file():
                checkpoints = {"score": source}
            else:
                raise UserError(f"{source}: no such run folder or checkpoint")
            if "score" not in checkpoints:
                raise UserError(
                    f"{source}: no score/last.pt to export (a trained run needs its score network)"
                )
            for kind, checkpoint in checkpoints.items():
                export_checkpoint(
                    checkpoint, kind, folder / kind, sampler=sampler if kind == "score" else None
                )
            if card is not None:
                atomic_write(folder / CARD_FILE, lambda fh: fh.write(card.encode()))
            write_index(folder)
            print(f"wrote {folder}: {', '.join(checkpoints)} (load it with molguide.load({str(folder)!r}))")
            return 0
    except _one_line_errors() as err:  # evaluated only when an exception arrives
        print(f"molguide: error: {err}", file=sys.stderr)
        return 2
    except Terminated:
        print("molguide: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("molguide: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # argparse guarantees a command


if __name__ == "__main__":
    sys.exit(main())

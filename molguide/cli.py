"""The ``molguide`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from molguide import __version__

log = logging.getLogger("molguide")


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- data info


def data_info(cache_dir: str | None = None, rebuild: bool = False) -> dict:
    """Sizes, splits, elements and property units and ranges of QM9 (as ``data info --json``)."""
    import numpy as np

    from molguide.data.qm9 import PROPERTIES, default_cache_dir, load_qm9
    from molguide.data.splits import EDM_SPLIT_SEED, edm_splits
    from molguide.elements import symbol

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


def _print_evaluation(result: dict, path: str, max_errors: int = 20) -> None:
    print(f"{path}: {result['n_evaluated']} of {result['n_input']} records evaluated")
    for key in ("validity", "atom_stability", "mol_stability", "uniqueness", "novelty"):
        print(f"  {key:<16} {_fmt(result[key])}")
    if result["properties"]:
        print(f"  {'property':<22} {'n':>6} {'mean':>10} {'median':>10} {'std':>9}")
        for name, s in result["properties"].items():
            if s["n"]:
                print(f"  {name:<22} {s['n']:>6} {s['mean']:>10.4g} {s['median']:>10.4g} {s['std']:>9.4g}")
    errors = result["errors"]
    if errors:
        print(f"  {len(errors)} record(s) with problems:")
        for e in errors[:max_errors]:
            where = f"record {e['record']}" + (f" (line {e['line']})" if e.get("line") else "")
            print(f"    {where}: {e['reason']}")
        if len(errors) > max_errors:
            print(f"    ... and {len(errors) - max_errors} more (use --json for all)")


def run_evaluate(args: argparse.Namespace) -> int:
    from molguide.chem.evaluate import evaluate, write_annotated_sdf
    from molguide.data.io import read_molecules

    report = read_molecules(args.file)
    if report.errors:
        log.warning("%s", report.summary())
    if not report.molecules:
        raise UserError(f"{args.file}: none of the {report.n_records} records could be read")
    evaluation = evaluate(
        report.molecules,
        reference_smiles=[] if args.no_novelty else None,
        xtb=not args.no_xtb,
        xtb_workers=args.workers,
        xtb_timeout_s=args.xtb_timeout,
        read_errors=report.errors,
        progress=None if not args.json else False,
    )
    result = evaluation.to_dict()
    if args.out:
        write_annotated_sdf(evaluation, report.molecules, args.out)
        log.info("wrote %d annotated molecules to %s", len(report.molecules), args.out)
    if args.json:
        print(json.dumps(result, allow_nan=False, default=_json_default))
    else:
        _print_evaluation(result, args.file)
    return 0


PIPELINES = {
    "train-score": "molguide.pipelines.score:train_score",
    "sample": "molguide.pipelines.score:sample_and_evaluate",
    "train-classifier": "molguide.pipelines.guidance:train_classifier",
    "train-evaluator": "molguide.pipelines.guidance:train_evaluator",
    "train-reward": "molguide.pipelines.guidance:train_reward",
    "train-cfg": "molguide.pipelines.guidance:train_cfg",
    "guide": "molguide.pipelines.guidance:guided_sample",
    "toy": "molguide.pipelines.toy:run_toy",
}


def run_pipeline(args: argparse.Namespace) -> int:
    """``molguide run PIPELINE``: resolve the config, run, print the summary as JSON."""
    import importlib

    from molguide.config import load_config
    from molguide.tracking import tracking_uri

    config = load_config(args.config, args.set)
    module, func = PIPELINES[args.pipeline].split(":")
    log.info(
        "running %s (config %s), tracking to %s", args.pipeline, args.config or "defaults", tracking_uri()
    )
    try:
        summary = getattr(importlib.import_module(module), func)(config)
    except ValueError as err:  # configuration values the schema cannot check (e.g. backbone kwargs)
        raise UserError(str(err)) from err
    print(json.dumps(summary, indent=2, default=str))
    log.info("see the runs with: mlflow ui --backend-store-uri %s", tracking_uri())
    return 0


def _json_default(value):
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="molguide", description="Property-targeted 3D molecule generation, measured."
    )
    parser.add_argument("--version", action="version", version=f"molguide {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="QM9 sizes, splits, property units and ranges")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--cache", help="cache folder (default: $MOLGUIDE_CACHE or the user cache)")
    info.add_argument("--rebuild", action="store_true", help="rebuild the QM9 cache")

    run = sub.add_parser("run", help="run a pipeline and log it to MLflow")
    run.add_argument("pipeline", choices=sorted(PIPELINES), help="which pipeline")
    run.add_argument("-c", "--config", help="YAML run configuration (default: built-in defaults)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set train.steps=200 (repeatable)")  # fmt: skip

    ev = sub.add_parser("evaluate", help="chemistry metrics of molecules in an SDF or XYZ file")
    ev.add_argument("file", help="molecule file: .sdf, .xyz, or .csv/.smi of SMILES")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--no-xtb", action="store_true", help="skip the GFN2-xTB oracle")
    ev.add_argument("--no-novelty", action="store_true", help="skip novelty against QM9 train")
    ev.add_argument("--workers", type=int, default=None, help="xTB worker processes (default: cores)")
    ev.add_argument("--xtb-timeout", type=float, default=60.0, help="seconds per molecule for xTB")
    ev.add_argument("--out", help="also write the molecules with per-molecule results as SDF tags")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``molguide`` console script."""
    from molguide.checkpoint import CheckpointError
    from molguide.config import ConfigError
    from molguide.data.io import MoleculeFileError
    from molguide.data.qm9 import DataError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="molguide: %(message)s",
        stream=sys.stderr,
    )
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
    except (UserError, MoleculeFileError, DataError, ConfigError, CheckpointError) as err:
        print(f"molguide: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("molguide: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # argparse guarantees a command


if __name__ == "__main__":
    sys.exit(main())

"""The ``design`` pipeline: variants of a lead at several start levels, judged and logged.

For each start level t0 of ``design.t0`` and each setting (unguided, and guided with
``design.guidance`` when given) it calls :meth:`molguide.generation.designer.Designer.optimize`
with the same seed, so the settings pair up, and logs one nested MLflow run per (t0,
setting): params ``t0``, ``guidance``, ``keep`` and ``lead``, the metrics of ``optimize``
(improvement over the lead with its interval, Tanimoto, RMSD, scaffold kept, validity), the
variants as SDF and CSV. The parent run holds the table, the curve against t0 and the
config (docs/edit.md).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from molguide.runs.config import RunConfig
from molguide.runs.tracking import describe_run, log_config, log_metrics_batch, mlflow_run

log = logging.getLogger(__name__)

EXPERIMENT = "molguide-design"


def design_from_lead(config: RunConfig, progress: bool | None = None) -> dict:
    """Run the design pipeline of ``config``; returns the rows and the parent run's id."""
    import mlflow

    from molguide.api import write_sdf
    from molguide.data.io import csv_beside, same_file, write_csv
    from molguide.diagnostics.plots import plot_lead_curve
    from molguide.generation.designer import Designer, GenerationError
    from molguide.generation.from_molecules import kept_atoms, lead_from_file

    dc = config.design
    if not dc.lead:
        raise ValueError("design.lead: name an SDF whose first molecule is the lead (3D, with hydrogens)")
    lead = lead_from_file(dc.lead, "design.lead")
    if dc.keep is not None:  # a pattern that does not match is one line, before any MLflow run
        kept_atoms(lead, dc.keep, lead.GetNumAtoms())
    source = dc.model or config.output_dir
    designer = Designer.load(source, config.device)
    settings = [("unguided", None)]
    if any(w > 0 for w in dc.guidance.values()):
        settings.append(("guided", dict(dc.guidance)))
    out_dir = Path(config.output_dir) / "design"
    out_dir.mkdir(parents=True, exist_ok=True)
    for t0 in dc.t0:
        for name, _ in settings:
            target = out_dir / f"t{t0:g}_{name}.sdf"
            if same_file(target, dc.lead) or same_file(csv_beside(target), dc.lead):
                raise ValueError(f"design.lead: {dc.lead} is where this run writes; copy it elsewhere")
    rows = []
    tags = {"molguide.pipeline": "design", "molguide.model": str(source), "molguide.lead": str(dc.lead)}
    with mlflow_run(EXPERIMENT, f"{config.name}-design", tags) as parent:
        log_config(config)
        for t0 in dc.t0:
            for name, weights in settings:
                with mlflow_run(EXPERIMENT, f"t{t0:g}_{name}"):
                    label = ", ".join(f"{k}={w:g}" for k, w in (weights or {}).items()) or "none"
                    params = {"t0": t0, "guidance": label, "keep": str(dc.keep), "lead": str(dc.lead)}
                    mlflow.log_params(params)
                    try:
                        mols = designer.optimize(
                            lead, dc.n, t0, guidance=weights, keep=dc.keep, seed=dc.seed, steps=dc.steps,
                            progress=bool(progress),
                        )  # fmt: skip
                    except GenerationError as err:  # every variant diverged: one line, not a traceback
                        raise ValueError(f"design at t0 {t0:g} ({name}): {err}") from None
                    metrics = {
                        k: float(v)
                        for k, v in designer.last_metrics.items()
                        if v is not None and math.isfinite(float(v))
                    }
                    log_metrics_batch([(k, v, 0) for k, v in metrics.items()])
                    path = out_dir / f"t{t0:g}_{name}.sdf"
                    write_sdf(mols, path)
                    write_csv(mols, csv_beside(path))
                    mlflow.log_artifact(str(path), "molecules")
                    mlflow.log_artifact(str(csv_beside(path)), "molecules")
                gain = next((k for k in metrics if k.endswith("_improvement")), None)
                rows.append(
                    {
                        "t0": t0,
                        "setting": name,
                        "n": len(mols),
                        "improvement": metrics.get(gain) if gain else None,
                        "ci_low": metrics.get(f"{gain}_ci_low") if gain else None,
                        "ci_high": metrics.get(f"{gain}_ci_high") if gain else None,
                        "property": gain.removesuffix("_improvement") if gain else None,
                        **{k: metrics.get(k) for k in ("tanimoto_to_lead", "rmsd_to_lead", "scaffold_kept")},
                        "validity_strict": metrics.get("validity_strict", 0.0),
                    }
                )
                log.info("design t0 %g %s: %s", t0, name, _row_text(rows[-1]))
        table = "\n".join(_row_text(r) for r in rows)
        describe_run(f"molguide design from {dc.lead}", table)
        (out_dir / "summary.txt").write_text(table + "\n")
        prop = next((r["property"] for r in rows if r["property"]), None)
        ylabel = f"{prop} improvement over the lead" if prop else ""
        png = plot_lead_curve(rows, out_dir / "lead_curve.png", ylabel)
        mlflow.log_artifact(str(png), "plots")
        run_id = parent.info.run_id
    print(table)
    return {"rows": rows, "run_id": run_id, "folder": str(out_dir)}


def _row_text(row: dict) -> str:
    def number(value, spec: str = ".2f") -> str:
        return "-" if value is None else format(value, spec)

    gain = "-" if row["improvement"] is None else (
        f"{row['improvement']:+.3g} [{row['ci_low']:+.3g}, {row['ci_high']:+.3g}]"
    )  # fmt: skip
    return (
        f"t0 {row['t0']:<4g} {row['setting']:<9} n {row['n']:<4} improvement {gain:<26} "
        f"Tanimoto {number(row['tanimoto_to_lead'])}  RMSD {number(row['rmsd_to_lead'])}  "
        f"scaffold kept {number(row['scaffold_kept'])}  strict valid {number(row['validity_strict'])}"
    )

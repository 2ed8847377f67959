"""``molguide compare``: runs of the MLflow store side by side with their key metrics."""

from __future__ import annotations

import csv
import io
import math

from molguide.runs.tracking import tracking_uri

KEY_METRICS = (
    "property_improvement",
    "property_improvement_ci_low",
    "property_improvement_ci_high",
    "target_hit_rate",
    "target_hit_rate_unguided",
    "reward_improvement",
    "validity",
    "validity_strict",
    "atom_stability",
    "mol_stability",
    "final_loss",
    "evaluator_mae",
)
EXPERIMENT_PREFIX = "molguide-"


def compare_runs(
    experiment: str | None = None, include_nested: bool = False, max_runs: int = 200
) -> list[dict]:
    """One dict per run (newest first): id, experiment, name, status, pipeline, start, key metrics.

    ``experiment``: one experiment by name (default: every ``molguide-*`` experiment).
    Nested runs (quickstart steps, sweep settings) are left out unless ``include_nested``.
    Raises ValueError naming the experiment when it does not exist.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ValueError(
                f"no experiment {experiment!r} in {tracking_uri()} (there are: {', '.join(names) or 'none'})"
            )
        experiments = [found]
    else:
        experiments = [e for e in client.search_experiments() if e.name.startswith(EXPERIMENT_PREFIX)]
    if not experiments:
        return []
    names = {e.experiment_id: e.name for e in experiments}
    runs = client.search_runs(list(names), order_by=["attributes.start_time DESC"], max_results=max_runs)
    rows = []
    for run in runs:
        tags = run.data.tags
        if "mlflow.parentRunId" in tags and not include_nested:
            continue
        row = {
            "run_id": run.info.run_id,
            "experiment": names[run.info.experiment_id],
            "run_name": run.info.run_name,
            "status": run.info.status,
            "pipeline": tags.get("molguide.pipeline", ""),
            "start": _timestamp(run.info.start_time),
        }
        row.update({k: run.data.metrics.get(k) for k in KEY_METRICS})
        rows.append(row)
    return rows


def _timestamp(ms: int | None) -> str:
    import datetime

    if not ms:
        return ""
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def to_csv(rows: list[dict]) -> str:
    """The rows as CSV (empty cells for missing metrics)."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def to_table(rows: list[dict]) -> str:
    """A fixed-width text table; metric columns that no run has are dropped."""
    if not rows:
        return "no runs"
    columns = ["run_id", "experiment", "run_name", "status", "start"]
    columns += [k for k in KEY_METRICS if any(r.get(k) is not None for r in rows)]
    short = {"property_improvement_ci_low": "ci_low", "property_improvement_ci_high": "ci_high"}

    def cell(key: str, value) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "-"
        if key == "run_id":
            return value[:8]
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    table = [[short.get(c, c) for c in columns]] + [[cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in table)

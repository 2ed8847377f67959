"""``molguide compare``: runs of the MLflow store side by side with their key metrics.

The store is only read. One that does not exist is named, never created (MLflow would
create an empty ``mlflow.db``). A SQLite store this user cannot write (a read-only file or
folder: a teammate's store, an archived project) or whose schema is older than this
MLflow's is read through a temporary copy (SQLite's backup API; a plain file copy when
SQLite cannot open the file in place, e.g. a WAL store in a read-only folder), which
MLflow may migrate: the store itself is left as it was.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from molguide.runs.tracking import HEADLINE_TAG, TrackingError, check_tracking, tracking_uri

log = logging.getLogger("molguide")

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
DEFAULT_WIDTH = 120
INFO_COLUMNS = ("run_id", "experiment", "run_name", "status", "start")

# The default table's headers; --wide and --csv use the full names.
SHORT_NAMES = {
    "run_id": "run",
    "experiment": "exp",
    "run_name": "name",
    "start": "started",
    "property_improvement": "impr",
    "property_improvement_ci": "impr_ci",
    "target_hit_rate": "hit",
    "target_hit_rate_unguided": "hit_ung",
    "reward_improvement": "rew_impr",
    "validity": "valid",
    "validity_strict": "strict",
    "atom_stability": "atom_st",
    "mol_stability": "mol_st",
    "final_loss": "loss",
    "evaluator_mae": "eval_mae",
}
# Which metric columns the default table keeps first when not all fit
# (property_improvement_ci: the interval's two ends in one column).
NARROW_PRIORITY = (
    "property_improvement",
    "property_improvement_ci",
    "validity_strict",
    "target_hit_rate",
    "validity",
    "mol_stability",
    "reward_improvement",
    "target_hit_rate_unguided",
    "final_loss",
    "evaluator_mae",
    "atom_stability",
)
_NAME_WIDTH = 20  # run names longer than this are cut in the default table


# ----------------------------------------------------------------------------- the store


def _sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:`` URI (None: another kind of store, or an in-memory one)."""
    if not uri.lower().startswith("sqlite"):
        return None
    where = uri.split("?", 1)[0].split("://", 1)[-1]  # sqlite+pysqlite:///x too
    if where in ("", "/", "/:memory:"):
        return None
    return Path(where[1:] if where.startswith("/") else where).absolute()  # sqlite:///rel, ////abs


def _local_folder(uri: str) -> Path | None:
    """The folder of a local folder store (``./mlruns``, ``file:///x``; None: not one)."""
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file://") if uri.startswith("file://") else uri.removeprefix("file:"))
    if "://" in uri or ":" in uri.split("/", 1)[0] or uri in ("databricks", "databricks-uc", "uc"):
        return None
    return Path(uri)


def _named(uri: str) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return f"MLFLOW_TRACKING_URI={uri}"
    return f"the default store {uri} (set MLFLOW_TRACKING_URI to read another)"


def _no_store(uri: str, path: Path) -> TrackingError:
    return TrackingError(
        f"{_named(uri)}: no MLflow store there ({path} does not exist); run compare in the folder "
        "where molguide run ran, or point MLFLOW_TRACKING_URI at the store"
    )


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def _connect(path: Path) -> sqlite3.Connection:
    """A connection that only reads: read-only where the store is; on a writable WAL store a
    plain one, which removes the -wal and -shm files it opens on closing (a read-only
    connection would leave them beside the store)."""
    if _writable(path):
        return sqlite3.connect(path, timeout=10)
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)


def _copy_sqlite(path: Path, folder: Path) -> Path:
    """A consistent copy of the SQLite store ``path`` in ``folder``, written only there."""
    copy = folder / path.name
    try:
        source = _connect(path)
        with contextlib.closing(source), contextlib.closing(sqlite3.connect(copy)) as target:
            source.backup(target)
    except sqlite3.OperationalError:
        # A WAL store whose folder is read-only cannot be opened in place (SQLite needs its
        # -shm file), nor one with a hot journal: copy the files, and SQLite recovers the copy
        # from its -wal or rolls the journal back there.
        copy.unlink(missing_ok=True)
        for suffix in ("", "-wal", "-journal"):
            if Path(f"{path}{suffix}").is_file():
                shutil.copyfile(f"{path}{suffix}", f"{copy}{suffix}")
    return copy


def _sound_copy(copy: Path) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(copy, timeout=10)) as db:
            return db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        return False


def _schema_is_current(path: Path) -> bool:
    """The store's schema is the one this MLflow writes: MLflow opens it without migrating
    it (it migrates an older store, or one missing a table, in place)."""
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        with contextlib.closing(_connect(path)) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        return row is not None and row[0] == _get_latest_schema_revision()
    except Exception:  # noqa: BLE001 (any doubt: read a copy)
        return False


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _client(uri: str, upgrade: bool = False):
    """An MLflow client whose store has been opened (a schema problem shows here);
    ``upgrade``: migrate the schema first when it is not this MLflow's (only ever done to a
    temporary copy). TrackingError when MLflow cannot read the store."""
    import mlflow

    try:
        if upgrade:
            from mlflow.store.db.utils import _upgrade_db, create_sqlalchemy_engine

            engine = create_sqlalchemy_engine(uri)
            try:
                _upgrade_db(engine)
            finally:
                engine.dispose()
        client = mlflow.MlflowClient(uri)
        client.search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 (MLflow's, SQLAlchemy's and alembic's errors alike)
        raise TrackingError(
            f"MLflow {mlflow.__version__} cannot read this store: {_first_line(err)}"
        ) from None
    return client


@contextlib.contextmanager
def read_store(uri: str | None = None) -> Iterator:
    """An MLflow client that reads the store at ``uri`` (default: :func:`tracking_uri`)
    without writing it (see the module's docstring); TrackingError when there is no
    usable store there."""
    uri = uri or tracking_uri()
    path = _sqlite_file(uri)
    if path is None:
        folder = _local_folder(uri)
        if folder is not None and not folder.exists():
            raise _no_store(uri, folder.absolute())
        check_tracking(uri, read_only=True)
        yield _opened(uri, uri)
        return
    if not path.exists():
        raise _no_store(uri, path)
    try:
        check_tracking(uri, read_only=True)  # a folder, unreadable, not a database, damaged: one line
    except TrackingError:
        if _writable(path) or not (path.is_file() and os.access(path, os.R_OK)):
            raise
        # e.g. a WAL store in a read-only folder: SQLite cannot open it in place; its copy can
    if not _writable(path):
        reason = "it is read-only"
    elif not _schema_is_current(path):
        reason = "its schema is not this MLflow's, which would migrate it"
    else:
        yield _opened(uri, uri)
        return
    with tempfile.TemporaryDirectory(prefix="molguide-compare-") as tmp:
        try:
            copy = _copy_sqlite(path, Path(tmp))
        except (OSError, sqlite3.Error) as err:
            raise TrackingError(f"{_named(uri)}: cannot read {path} ({err})") from None
        if not _sound_copy(copy):
            raise TrackingError(f"{_named(uri)}: {path} is not a usable SQLite database")
        log.info("reading %s through a temporary copy (%s); the store is left as it was", path, reason)
        yield _opened(uri, f"sqlite:///{copy}", upgrade=True)


def _opened(uri: str, store: str, upgrade: bool = False):
    try:
        return _client(store, upgrade)
    except TrackingError as err:
        raise TrackingError(f"{_named(uri)}: {err}") from None


# ----------------------------------------------------------------------------- the runs


def _experiments(client, names: Sequence[str], uri: str) -> list:
    """The experiments named (``quickstart`` finds ``molguide-quickstart`` too); default:
    every ``molguide-*`` experiment. ValueError naming the store for an unknown name."""
    if not names:
        return [e for e in client.search_experiments() if e.name.startswith(EXPERIMENT_PREFIX)]
    found = []
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None and not name.startswith(EXPERIMENT_PREFIX):
            experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + name)
        if experiment is None:
            known = sorted(e.name for e in client.search_experiments())
            raise ValueError(f"no experiment {name!r} in {uri} (there are: {', '.join(known) or 'none'})")
        found.append(experiment)
    return list({e.experiment_id: e for e in found}.values())


def compare_runs(
    experiment: str | Sequence[str] | None = None,
    include_nested: bool = False,
    max_runs: int = 200,
    metrics: Sequence[str] = (),
    uri: str | None = None,
) -> list[dict]:
    """One dict per run (newest first): id, experiment, name, status, pipeline, start, the
    key metrics and ``metrics`` (None where a run has not logged one).

    ``experiment``: one name or several (default: every ``molguide-*`` experiment).
    Nested runs (quickstart steps, sweep settings) are left out unless ``include_nested``.
    Raises ValueError naming the experiment when it does not exist, TrackingError when
    there is no store at ``uri`` (default: :func:`tracking_uri`).
    """
    uri = uri or tracking_uri()
    names = [experiment] if isinstance(experiment, str) else list(experiment or ())
    wanted = list(dict.fromkeys([*KEY_METRICS, *metrics]))
    with read_store(uri) as client:
        experiments = _experiments(client, names, uri)
        if not experiments:
            return []
        by_id = {e.experiment_id: e.name for e in experiments}
        runs = client.search_runs(list(by_id), order_by=["attributes.start_time DESC"], max_results=max_runs)
    rows = []
    for run in runs:
        tags = run.data.tags
        if "mlflow.parentRunId" in tags and not include_nested:
            continue
        row = {
            "run_id": run.info.run_id,
            "experiment": by_id[run.info.experiment_id],
            "run_name": run.info.run_name,
            "status": run.info.status,
            "pipeline": tags.get("molguide.pipeline", ""),
            "start": _timestamp(run.info.start_time),
        }
        # A parent run names each setting's metrics after it: its row shows its headline setting's.
        setting = tags.get(HEADLINE_TAG)
        metrics = run.data.metrics
        row["setting"] = setting or ""
        row.update({k: metrics.get(k, metrics.get(f"{setting}.{k}") if setting else None) for k in wanted})
        rows.append(row)
    return rows


def _number(value) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def metric_name(name: str) -> str:
    """A metric's full name from itself or its short header (``impr``, ``strict``)."""
    full = {short: key for key, short in SHORT_NAMES.items() if key in KEY_METRICS}
    return full.get(name, name)


def with_metrics(rows: list[dict], metrics: Sequence[str]) -> list[dict]:
    """The rows that logged every one of ``metrics``."""
    return [r for r in rows if all(_number(r.get(m)) is not None for m in metrics)]


def sort_rows(rows: list[dict], metric: str, ascending: bool = False) -> list[dict]:
    """The rows by ``metric`` (largest first unless ``ascending``); rows without it last,
    newest first as before."""
    have = [r for r in rows if _number(r.get(metric)) is not None]
    have.sort(key=lambda r: r[metric], reverse=not ascending)
    return have + [r for r in rows if _number(r.get(metric)) is None]


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


def _cell(key: str, row: dict, wide: bool, name_width: int = _NAME_WIDTH) -> str:
    if key == "property_improvement_ci":
        low, high = _number(row.get(f"{key}_low")), _number(row.get(f"{key}_high"))
        return "-" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"
    value = row.get(key)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if key == "run_id":
        return value if wide else value[:8]
    if not wide:
        if key == "experiment":
            return value.removeprefix(EXPERIMENT_PREFIX)
        if key == "start":
            return value[5:]  # MM-DD HH:MM (the year in --wide and --csv)
        if key == "run_name" and len(value) > name_width:
            return value[: name_width - 2] + ".."
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _render(
    columns: list[str], headers: list[str], rows: list[dict], wide: bool, name_width: int = _NAME_WIDTH
) -> list[str]:
    table = [headers] + [[_cell(c, r, wide, name_width) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in table]


def to_table(rows: list[dict], width: int | None = None, metrics: Sequence[str] = ()) -> str:
    """A fixed-width text table; metric columns that no run has are dropped.

    ``width`` None (``--wide``): every key metric and ``metrics``, full names and run ids.
    Else the table fits ``width`` characters: short headers (a legend under the table names
    them), the run id's first 8 characters, and the metric columns that fit, ``metrics``
    first, then :data:`NARROW_PRIORITY`.
    """
    if not rows:
        return "no runs"
    extra = [m for m in metrics if m not in KEY_METRICS]
    present = [k for k in (*KEY_METRICS, *extra) if any(_number(r.get(k)) is not None for r in rows)]
    info = _info_columns(rows)
    if width is None:
        columns = [*info, *present]
        return "\n".join(_render(columns, columns, rows, wide=True))

    if "property_improvement_ci_low" in present:
        present.append("property_improvement_ci")
    asked = ["property_improvement_ci" if m in KEY_METRICS[1:3] else m for m in metrics]
    priority = [m for m in dict.fromkeys([*asked, *NARROW_PRIORITY, *extra]) if m in present]
    shown: list[str] = []
    for metric in priority:  # keep the columns that fit, most wanted first
        columns = _narrow_columns([*shown, metric], extra, info)
        lines = _render(columns, [SHORT_NAMES.get(c, c) for c in columns], rows, wide=False)
        if max(len(line) for line in lines) <= width:
            shown.append(metric)
    columns = _narrow_columns(shown, extra, info)
    headers = [SHORT_NAMES.get(c, c) for c in columns]
    lines = _render(columns, headers, rows, wide=False)
    spare = width - max(len(line) for line in lines)
    if spare > 0:  # room left: longer run names
        lines = _render(columns, headers, rows, wide=False, name_width=_NAME_WIDTH + spare)
    legend = _legend(columns, len(priority) - len(shown), width)
    if any(r.get("setting") for r in rows):
        legend.append("setting = the sampling setting a parent run's metrics come from (its headline).")
    return "\n".join([*lines, *([""] + legend if legend else [])])


def _info_columns(rows: Sequence[dict]) -> tuple[str, ...]:
    """The run columns; ``setting`` (where a parent run's metrics come from) when any row has one."""
    if any(r.get("setting") for r in rows):
        return (*INFO_COLUMNS[:3], "setting", *INFO_COLUMNS[3:])
    return INFO_COLUMNS


def _narrow_columns(
    metrics: Sequence[str], extra: Sequence[str], info: Sequence[str] = INFO_COLUMNS
) -> list[str]:
    """The default table's columns for ``metrics``, in the key metrics' order (the
    improvement's interval beside it), other metrics after."""
    order = [*KEY_METRICS[:1], "property_improvement_ci", *KEY_METRICS[3:], *extra]
    return [*info, *[m for m in order if m in metrics]]


def _legend(columns: list[str], left_out: int, width: int) -> list[str]:
    """What the short headers stand for, and how many metric columns did not fit."""
    names = []
    for column in columns:
        if column == "property_improvement_ci":
            names.append("impr_ci = its 95 % interval")
        elif column in SHORT_NAMES and column not in INFO_COLUMNS:
            names.append(f"{SHORT_NAMES[column]} = {column}")
    parts = [f"{name};" for name in names[:-1]] + [f"{name}." for name in names[-1:]]
    if left_out:
        parts.append(f"{left_out} more metric column{'s' if left_out > 1 else ''} with --wide.")
    lines: list[str] = []
    for part in parts:  # whole entries per line: a name is never cut
        if lines and len(lines[-1]) + 1 + len(part) <= width:
            lines[-1] += " " + part
        else:
            lines.append(part)
    return lines

"""MLflow glue: where runs go, batched metric logging, artifacts."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from molguide.runs.lock import Holder

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
HEADLINE_TAG = "molguide.headline_setting"  # the setting whose metrics a parent run leads with

# What every run of this process is tagged with, so a later run can tell a run whose
# process is gone (kill -9, a lost machine) from one that is still going.
_RUN_CONTEXT: dict[str, str] = {}


def set_output_dir(output_dir: str | Path) -> None:
    """Tag this process's runs with the run folder they write to (see :func:`end_stale_runs`)."""
    _RUN_CONTEXT["molguide.output_dir"] = str(Path(output_dir).resolve())


def _process_tags() -> dict[str, str]:
    import socket

    return {"molguide.host": socket.gethostname(), "molguide.pid": str(os.getpid()), **_RUN_CONTEXT}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def end_stale_runs(output_dir: str | Path, taken_over: Holder | None = None) -> list[str]:
    """Mark FAILED the molguide runs still RUNNING whose process has ended; returns their ids.

    A run is stale when it was started on this host by a process that no longer exists
    (kill -9, a crash the run could not record), or when it is the run of ``taken_over``,
    the holder of ``output_dir``'s lock whose lock was free when this run took the
    folder (a lost machine on a shared folder). A run of another host that merely names
    the same path is left alone: its folder may be another disk, and its process cannot
    be checked from here. Each run ended gets the tag ``molguide.note`` saying why, so
    the store shows no ghosts.
    """
    import socket

    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("molguide-")]
    if not experiments:
        return []
    host, folder = socket.gethostname(), str(Path(output_dir).resolve())
    ended = []
    for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        pid = tags.get("molguide.pid", "")
        here = tags.get("molguide.host") == host
        dead_here = here and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))
        lost_there = (
            not here
            and taken_over is not None
            and tags.get("molguide.host") == taken_over.host
            and pid == str(taken_over.pid)
            and tags.get("molguide.output_dir") == folder
        )
        if dead_here or lost_there:
            why = "its process had ended" if dead_here else f"its machine ({tags['molguide.host']}) was lost"
            note = f"was still RUNNING when {folder} was run again on {host}: {why} (kill -9 or a crash)"
            client.set_tag(run.info.run_id, "molguide.note", note)
            client.set_terminated(run.info.run_id, status="FAILED")
            ended.append(run.info.run_id)
    return ended


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else ./mlflow.db (MLflow 3 has no file store by default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_link(experiment_id: str, run_id: str | None = None, address: str = UI_ADDRESS) -> str:
    """The UI address of an experiment's runs table (or of one run), in MLflow's classic
    model-training view: MLflow 3.17 opens experiments in its GenAI view unless the
    link says ``workflowType=machine_learning`` (the experiment tag alone does not)."""
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{address}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def ui_command(uri: str | None = None) -> str:
    """The command that opens the MLflow UI on this store (SQLite paths made absolute)."""
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return f"mlflow ui --backend-store-uri {uri}"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b": "value"} params (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)[:6000]
    return flat


class TrackingError(RuntimeError):
    """The tracking store cannot be used (e.g. a server that does not answer)."""


# Tracking URI schemes MLflow 3 has stores for ("" and file: a local folder), when its
# registry (which also holds plugins' schemes) cannot be asked.
KNOWN_SCHEMES = ("", "file", "sqlite", "http", "https", "databricks", "databricks-uc", "uc",
                 "postgresql", "mysql", "mssql")  # fmt: skip


def _known_schemes() -> tuple[str, ...]:
    try:  # a private registry: fall back to the list above if it moves
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return (*KNOWN_SCHEMES, *_tracking_store_registry._registry)
    except (ImportError, AttributeError):
        return KNOWN_SCHEMES


def check_tracking(uri: str | None = None, timeout_s: float = 5.0, read_only: bool = False) -> str:
    """Fail fast, before any training, when the tracking store cannot be used: an HTTP
    server that does not answer, a SQLite file that cannot be written or is not a
    database, an unknown URI scheme. Returns the URI. ``read_only`` (``molguide
    compare``): a SQLite store only has to exist and be readable.
    """
    import urllib.error
    import urllib.request

    uri = uri or tracking_uri()
    has_scheme = "://" in uri or uri.startswith("sqlite:")
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if has_scheme else ""
    if scheme not in _known_schemes():
        raise TrackingError(
            f"MLFLOW_TRACKING_URI={uri}: unknown scheme {scheme!r}; use sqlite:///FILE.db, "
            "http(s)://SERVER, postgresql://..., mysql://... or a folder"
        )
    if scheme == "sqlite":
        _check_sqlite(uri, read_only)
        return uri
    if scheme not in ("http", "https"):
        return uri
    base = uri.rstrip("/")
    try:
        with urllib.request.urlopen(base + "/health", timeout=timeout_s) as reply:  # noqa: S310 (the user's URI)
            if reply.status != 200:
                raise TrackingError(f"MLflow tracking server {uri} answered {reply.status} on /health")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is not reachable: {reason}. "
            "Start it, or unset MLFLOW_TRACKING_URI to log to ./mlflow.db"
        ) from None
    _check_api(uri, timeout_s)
    return uri


def _check_sqlite(uri: str, read_only: bool = False) -> None:
    """The SQLite file of ``uri`` can be opened for writing (for reading: ``read_only``)
    and is a sound database.

    MLflow would otherwise retry for minutes on a read-only file and print a traceback
    for a file that is not a database.
    """
    import sqlite3

    where = uri.split("?", 1)[0].split("://", 1)[-1]  # sqlite+pysqlite:///x too
    if where in ("", "/", "/:memory:"):
        return
    path = Path(where[1:] if where.startswith("/") else where).absolute()  # sqlite:///rel, ////abs
    if os.environ.get("MLFLOW_TRACKING_URI"):
        named = f"MLFLOW_TRACKING_URI={uri}"
    else:
        named = f"the default store {uri} (set MLFLOW_TRACKING_URI to choose another)"
    folder = path.parent
    if not folder.is_dir():
        raise TrackingError(f"{named}: the folder {folder} does not exist; create it or choose another file")
    if not read_only and not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(f"{named}: the folder {folder} is not writable (SQLite writes its journal there)")
    if not path.exists():
        if read_only:
            raise TrackingError(f"{named}: {path} does not exist (no runs recorded there yet)")
        return  # MLflow creates it
    if path.is_dir():
        raise TrackingError(f"{named}: {path} is a folder, not a database file")
    if read_only and not os.access(path, os.R_OK):
        raise TrackingError(f"{named}: {path} cannot be read; make it readable or choose another file")
    if not read_only and not os.access(path, os.R_OK | os.W_OK):
        raise TrackingError(f"{named}: {path} is read-only; make it writable or choose another file")
    try:
        with contextlib.closing(sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, timeout=5)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            return  # another process is writing: MLflow waits for it like any client
        raise TrackingError(f"{named}: cannot read {path} ({err})") from None
    except sqlite3.DatabaseError as err:  # "file is not a database", "database disk image is malformed"
        why = f"{path} is not a usable SQLite database ({err}); move it away"
        raise TrackingError(f"{named}: {why}") from None
    if verdict != "ok":
        raise TrackingError(f"{named}: {path} is a damaged SQLite database ({verdict}); move it away")


def _check_api(uri: str, timeout_s: float) -> None:
    """One API call the way MLflow makes them (credentials, TLS settings from the environment).

    /health answers even when the API refuses this client (a host name missing from the
    server's --allowed-hosts, missing or wrong credentials).
    """
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        reply = http_request(
            get_default_host_creds(uri),
            "/api/2.0/mlflow/experiments/get-by-name",
            "GET",
            params={"experiment_name": "Default"},
            max_retries=0,
            timeout=timeout_s,
            raise_on_status=False,
        )
    except Exception as err:  # noqa: BLE001 (any transport failure is the same message)
        raise TrackingError(
            f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) failed an API call: {err}"
        ) from None
    if reply.status_code in (200, 404):  # 404: no experiment of that name, the API answered
        return
    hint = {
        403: " (this host name is not in the server's --allowed-hosts, or the user lacks rights)",
        401: " (check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN)",
    }.get(reply.status_code, "")
    detail = reply.text[:300].strip()
    raise TrackingError(
        f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) refuses requests: "
        f"{reply.status_code} {detail}{hint}"
    )


@contextmanager
def mlflow_run(experiment: str, run_name: str, tags: Mapping[str, str] | None = None, nested: bool = False):
    """Start an MLflow run with the git commit as a tag; yields the active run.

    Inside another run (a quickstart step, a sweep setting) the run is nested under it
    and stays in the parent's experiment. Under ``mlflow run`` (``MLFLOW_RUN_ID`` set)
    the outermost run is the one MLflow created for the project. A crash marks the run
    FAILED, Ctrl-C marks it KILLED (MLflow's own end_run states).
    """
    import mlflow

    # stdout carries molguide's summary (or its --json); MLflow would print run URLs there.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Registering a model downloads it back; a progress bar per network is noise in the log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking_uri())
    parent = mlflow.active_run()
    nested = nested or parent is not None
    # The experiment id goes to start_run explicitly: when another worker creates the experiment
    # at the same moment, MLflow 3.17's set_experiment returns it without making it active.
    experiment_id = None
    if parent is not None:
        experiment_id = parent.info.experiment_id
    elif not nested and not os.environ.get("MLFLOW_RUN_ID"):
        found = mlflow.set_experiment(experiment)
        experiment_id = found.experiment_id
        if EXPERIMENT_KIND_TAG not in found.tags:  # what the UI would ask; 3.17 reads the link's workflowType
            _tag_experiment_kind(mlflow.MlflowClient(), experiment_id)
    all_tags = {"molguide.git_commit": _git_commit() or "unknown", **_process_tags(), **(tags or {})}
    run = mlflow.start_run(run_name=run_name, nested=nested, tags=all_tags, experiment_id=experiment_id)
    try:
        yield run
    except KeyboardInterrupt:
        _end_run_anyway("KILLED")
        raise
    except BaseException:
        _end_run_anyway("FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def _first_line(err: BaseException) -> str:
    """The first line of an error's message (MLflow's carry whole server responses)."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _tag_experiment_kind(client: Any, experiment_id: str) -> None:
    """Mark a new experiment as model development (a cosmetic UI tag). Two workers that created
    the experiment together both set it, and a SQL store may refuse the second insert: the tag
    is then there already, so a refusal is logged, never raised."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    except MlflowException as err:
        logging.getLogger("molguide").debug("experiment kind tag not set: %s", _first_line(err))


def _end_run_anyway(status: str) -> None:
    """End the active run with ``status`` while an error is on its way out; a store that
    cannot record it (the full disk that caused the error) must not hide that error."""
    import mlflow

    try:
        mlflow.end_run(status=status)
    except Exception as err:  # noqa: BLE001 (the error being raised is the one to report)
        log = logging.getLogger("molguide")
        log.warning("could not mark the MLflow run %s: %s", status, _first_line(err))


DESCRIPTION_TAG = "mlflow.note.content"  # what MLflow's UI shows as a run's description


def describe_run(title: str, table: str) -> None:
    """Set the active run's description (Markdown): ``title`` and the fixed-width
    ``table`` as a code block, so its columns line up in the UI."""
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.set_tag(DESCRIPTION_TAG, f"**{title}**\n\n```text\n{table.strip()}\n```\n")


def log_dataset(molecules, name: str, context: str, source: str) -> str:
    """Log a set of molecules as the active run's input (MLflow's Dataset column): its
    ``name`` (data set and split), ``source`` (the folder it was read from), a digest of
    its content (atoms and coordinates, so two runs on the same molecules show the same
    digest), its size (rows = molecules) and ``context`` ("training", "validation",
    "evaluation"); returns the digest."""
    import hashlib
    import warnings

    import mlflow
    import numpy as np

    digest = hashlib.sha256()
    for part in (molecules.atomic_numbers, molecules.positions, molecules.offsets):
        digest.update(np.ascontiguousarray(part).tobytes())
    short = digest.hexdigest()[:16]
    if mlflow.active_run() is None:
        return short
    with warnings.catch_warnings():  # a path as source: MLflow warns it could mean several kinds
        warnings.simplefilter("ignore")
        dataset = mlflow.data.from_numpy(
            np.asarray(molecules.num_atoms, dtype=np.int64), source=source, name=name, digest=short
        )
        _log_input_once(dataset, context, {"molecules": str(len(molecules))})
    return short


def _log_input_once(dataset, context: str, tags: dict[str, str]) -> None:
    """``mlflow.log_input``, safe when another worker logs the same data set at the same moment:
    a SQL store then refuses the second insert of the data set row (measured with two workers
    on one server); by then the row exists, so one more try only links it to this run. A
    data set that still cannot be logged is a warning: the training it describes goes on."""
    import mlflow
    from mlflow.exceptions import MlflowException

    for attempt in range(2):
        try:
            mlflow.log_input(dataset, context=context, tags=tags)
            return
        except MlflowException as err:
            if attempt == 1:
                log = logging.getLogger("molguide")
                log.warning("could not log data set %s with the run: %s", dataset.name, _first_line(err))


def log_config(config) -> None:
    """Log a RunConfig as flat params plus the resolved YAML (artifact ``config.yaml``)."""
    import mlflow

    from molguide.runs.config import dump_config

    mlflow.log_params(flatten(config.model_dump()))
    mlflow.log_text(dump_config(config), "config.yaml")


def log_metrics_batch(rows: Iterable[tuple[str, float, int]]) -> None:
    """Log (name, value, step) rows in one call (single log_metric calls cost ~7 ms each)."""
    import mlflow
    from mlflow.entities import Metric

    run = mlflow.active_run()
    if run is None:
        return
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, int(s)) for k, v, s in rows if v is not None]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics[start : start + 1000])

"""The command line as people expect it (issue 26): help per pipeline, ``config show``,
one-line errors, and ``compare`` that fits 120 columns, sorts, and only ever reads its store
(none is created where there is none; a read-only store is read through a copy).

Every command runs as a real process (``python -m molguide.cli``), as a user would run it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

from molguide.cli import PIPELINES
from molguide.runs.compare import KEY_METRICS, sort_rows, to_table, with_metrics

SETPRIV = shutil.which("setpriv")


def molguide(*args: str, cwd: Path | None = None, env: dict | None = None, as_nobody: bool = False):
    """``molguide ARGS`` in a process of its own; ``as_nobody``: as a user who may not write
    the store (root may write anything, so root runs it as ``nobody``)."""
    command = [sys.executable, "-m", "molguide.cli", *args]
    if as_nobody and os.geteuid() == 0:
        command = [SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    environment = {**os.environ, "COLUMNS": "200", **(env or {})}
    environment = {k: v for k, v in environment.items() if v is not None}
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("molguide: error:"), proc.stderr
    return lines[0]


# ----------------------------------------------------------------------------- help and config


def test_run_pipeline_help_says_what_the_pipeline_does_and_its_keys():
    proc = molguide("run", "quickstart", "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("usage: molguide run quickstart")
    assert "shipped QM9 generator" in text and "molguide-quickstart" in text  # what it does, where
    keys = dict(line.split(None, 1) for line in text.split("main config keys")[1].splitlines()[1:16])
    assert keys["target.property"] == "gap_eV" and keys["guide.n_samples"] == "500"
    assert keys["classifier.train.steps"] == "800"  # the quickstart's file, not the schema's 2000
    assert "pipelines (molguide run PIPELINE" not in text  # not the generic `run --help`
    assert max(len(line) for line in text.splitlines()) <= 100

    generic = molguide("run", "--help")
    assert generic.returncode == 0
    for name in PIPELINES:  # one line each, with what it does
        assert any(
            line.split()[:1] == [name] and len(line.split()) > 2 for line in generic.stdout.splitlines()
        )
    assert max(len(line) for line in generic.stdout.splitlines()) <= 100


def test_every_pipeline_help_fits_and_shows_the_values_run_would_use():
    """The help reads declared defaults (no torch); run validates them: the same values."""
    from molguide.runs.config import load_config
    from molguide.runs.pipeline_help import (
        describe_pipeline,
        lookup,
        main_keys,
        pipeline_defaults,
        show_value,
    )

    for pipeline in PIPELINES:
        text = describe_pipeline(pipeline, 100)
        assert max(len(line) for line in text.splitlines()) <= 100, pipeline
        resolved = load_config(None, [], base=pipeline_defaults(pipeline)).model_dump()
        for key in main_keys(pipeline):
            keys = text.split("main config keys")[1].splitlines()[1:]
            line = next(x for x in keys if x.split()[:1] == [key])
            assert line.split(None, 1)[1] == show_value(lookup(resolved, key)), (pipeline, key)


def test_help_and_version_import_no_torch_mlflow_or_rdkit():
    code = textwrap.dedent(
        """
        import sys
        from molguide.cli import PIPELINES, build_parser, pipeline_parser
        build_parser().format_help()
        for name in PIPELINES:
            pipeline_parser(name).format_help()
        print([m for m in ("torch", "mlflow", "rdkit") if m in sys.modules])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_registered_guidance_kind_gets_its_training_pipeline_help():
    code = textwrap.dedent(
        """
        from molguide.guidance.kinds import ClassifierRecord, GuidanceKind, register_guidance_kind
        register_guidance_kind(GuidanceKind(
            "pull", network="puller", record=ClassifierRecord, summary="a test kind",
            default_weight=0.0, build=lambda request: None))
        from molguide.cli import pipeline_parser
        print(pipeline_parser("train-puller").format_help())
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pull guidance uses (a test kind)" in proc.stdout
    assert "puller.train.steps" in proc.stdout and "puller.backbone" in proc.stdout


def test_config_show_prints_the_resolved_config_as_yaml(tmp_path):
    layer = tmp_path / "layer.yaml"
    layer.write_text("guide:\n  steps: 30\n")
    proc = molguide("config", "show", "quickstart", "-c", str(layer), "--set", "guide.n_samples=42")
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    assert config["guide"]["n_samples"] == 42 and config["guide"]["steps"] == 30  # --set, then -c
    assert config["target"]["property"] == "gap_eV" and config["model"]["pretrained"] == "qm9"
    assert config["classifier"]["train"]["steps"] == 800  # the quickstart's own defaults below
    assert proc.stdout.startswith("# the config of: molguide run quickstart -c ")


def test_bad_pipeline_or_setting_is_one_line_and_status_2():
    assert "unknown pipeline 'quickstrat'" in one_line_error(molguide("config", "show", "quickstrat"))
    assert "expected key.path=value" in one_line_error(molguide("config", "show", "toy", "--set", "toy"))
    assert "unknown pipeline 'nope'" in one_line_error(molguide("run", "nope", "--help"))
    assert "choose one of: quickstart, full" in one_line_error(molguide("run", "nope"))


# ----------------------------------------------------------------------------- compare


def test_compare_where_there_is_no_store_names_it_and_creates_nothing(tmp_path):
    proc = molguide("compare", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": None})
    line = one_line_error(proc)
    assert "sqlite:///mlflow.db" in line and "no MLflow store there" in line
    assert str(tmp_path / "mlflow.db") in line
    assert list(tmp_path.iterdir()) == []


STORE_SCRIPT = """
import json, sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
experiment = mlflow.set_experiment("molguide-quickstart").experiment_id
ids = {}
for name, improvement in (("alpha", 0.10), ("beta", 0.36), ("gamma", None),
                          ("a-rather-long-run-name-for-the-width-check", 0.2)):
    with mlflow.start_run(run_name=name, experiment_id=experiment) as run:
        metrics = {key: 0.5 for key in sys.argv[2].split(",")}
        metrics["property_improvement"] = improvement
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
        ids[name] = run.info.run_id
print(json.dumps(ids))
"""


def _make_store(folder: Path, wal: bool = False) -> dict[str, str]:
    """A SQLite store with four real runs of molguide-quickstart, one without the improvement."""
    env = {**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-c", STORE_SCRIPT, uri, ",".join(KEY_METRICS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    if wal:  # the hard case: SQLite cannot open a WAL store in a read-only folder in place
        import sqlite3

        with contextlib.closing(sqlite3.connect(folder / "mlflow.db")) as db:
            assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def read_only_store():
    """(uri, run ids by name, store folder, a folder to run in) of a WAL store in a folder
    that neither the file nor the folder may be written; outside pytest's 0700 tmp folders,
    so that ``nobody`` may read it."""
    if os.geteuid() == 0 and SETPRIV is None:
        pytest.skip("root ignores file permissions and setpriv is missing to drop them")
    base = Path(tempfile.mkdtemp(prefix="molguide-readonly-"))
    base.chmod(0o755)
    store = base / "store"
    store.mkdir()
    try:
        ids = _make_store(store, wal=True)
        (store / "mlflow.db").chmod(0o444)
        store.chmod(0o555)
        yield f"sqlite:///{store / 'mlflow.db'}", ids, store, base
    finally:
        store.chmod(0o755)
        shutil.rmtree(base)


def test_compare_reads_a_read_only_store_and_fits_120_columns(read_only_store):
    uri, ids, store, base = read_only_store
    before = _fingerprint(store)
    proc = molguide("compare", cwd=base, env={"MLFLOW_TRACKING_URI": uri}, as_nobody=True)
    assert proc.returncode == 0, proc.stderr
    assert "temporary copy" in proc.stderr and "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert lines[0].split()[:5] == ["run", "exp", "name", "status", "started"]
    for name, run_id in ids.items():
        row = next(line for line in lines if line.startswith(run_id[:8]))
        assert row.split()[1] == "quickstart" and name[:18] in row
    assert "impr = property_improvement" in proc.stdout and "with --wide" in proc.stdout  # the legend
    assert _fingerprint(store) == before  # not a byte written, no journal or -shm left


def test_compare_wide_shows_every_column_and_sort_puts_runs_without_the_metric_last(read_only_store):
    uri, ids, _, base = read_only_store
    proc = molguide(
        "compare", "--wide", "--sort", "property_improvement", cwd=base, env={"MLFLOW_TRACKING_URI": uri}
    )
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["run_id", "experiment", "run_name", "status", "start", *KEY_METRICS]
    assert len(header) > 120
    order = [row.split()[0] for row in rows]
    long_name = "a-rather-long-run-name-for-the-width-check"
    assert order == [ids["beta"], ids[long_name], ids["alpha"], ids["gamma"]]  # full ids, largest first


# Pure table functions: the narrow layout with more metrics than fit.


def _rows() -> list[dict]:
    rows = []
    for k, improvement in enumerate((0.1, None, 0.3)):
        row = {"run_id": f"{k}" * 32, "experiment": "molguide-guidance", "run_name": f"run-{k}" * 6}
        row.update(status="FINISHED", pipeline="guide", start=f"2026-01-0{k + 1} 10:00")
        row.update({m: 0.5 + k for m in KEY_METRICS}, property_improvement=improvement, custom_metric=k)
        rows.append(row)
    return rows


def test_narrow_table_keeps_the_columns_that_fit_and_names_them():
    rows = _rows()
    table = to_table(rows, width=120)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 120
    header = lines[0].split()
    assert header[:7] == ["run", "exp", "name", "status", "started", "impr", "impr_ci"]
    assert "strict" in header and "validity_strict" not in header  # short headers ...
    assert "strict = validity_strict" in table  # ... named under the table
    assert to_table(rows).splitlines()[0].split()[5:] == list(KEY_METRICS)  # wide: every key metric
    # an asked-for metric comes first among the columns that fit, under its own name
    assert "custom_metric" in to_table(rows, width=120, metrics=["custom_metric"]).splitlines()[0]


def test_sort_and_metric_filter():
    rows = _rows()
    assert [r["run_id"][0] for r in sort_rows(rows, "property_improvement")] == ["2", "0", "1"]
    assert [r["run_id"][0] for r in sort_rows(rows, "property_improvement", ascending=True)] == [
        "0",
        "2",
        "1",
    ]
    assert [r["run_id"][0] for r in with_metrics(rows, ["property_improvement"])] == ["0", "2"]


DOWNGRADE_SCRIPT = """
import sys
from alembic import command
from mlflow.store.db.utils import _get_alembic_config, create_sqlalchemy_engine
engine = create_sqlalchemy_engine(sys.argv[1])
config = _get_alembic_config(sys.argv[1])
with engine.begin() as connection:
    config.attributes["connection"] = connection
    command.downgrade(config, "-1")
"""


@pytest.mark.slow
def test_compare_reads_an_older_store_without_migrating_it(read_only_store, tmp_path):
    """MLflow migrates a store of an older schema in place when it opens it; compare reads an
    upgraded temporary copy instead (MLflow's last migration undone to make an older store)."""
    import sqlite3

    uri, ids, store, _ = read_only_store
    shutil.copyfile(store / "mlflow.db", tmp_path / "mlflow.db")
    (tmp_path / "mlflow.db").chmod(0o644)
    older = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-c", DOWNGRADE_SCRIPT, older], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    def revision():
        with contextlib.closing(sqlite3.connect(tmp_path / "mlflow.db")) as db:  # closed: no -wal left
            return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]

    before, old = _fingerprint(tmp_path), revision()
    proc = molguide("compare", "--csv", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": older})
    assert proc.returncode == 0, proc.stderr
    assert "temporary copy" in proc.stderr
    assert {row.split(",")[0] for row in proc.stdout.splitlines()[1:]} == set(ids.values())
    assert revision() == old and _fingerprint(tmp_path) == before

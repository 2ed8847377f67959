"""MLflow's UI as a user opens it (headless Chromium from the distribution's packages):
the quickstart's parent run shows its description, a registered model is listed and the
compare view of the sampling settings has their params. Slow (a quickstart and a
browser): ``python -m pytest -m slow tests/test_mlflow_ui.py``; needs
``apt-get install chromium`` and ``pip install -e '.[ui]'``."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_run_reads_at_a_glance_in_the_mlflow_ui(tmp_path, monkeypatch, molguide_cache):
    pytest.importorskip("playwright", reason="pip install -e '.[ui]'")
    chromium = os.environ.get("MOLGUIDE_CHROMIUM", "/usr/bin/chromium")
    if not shutil.which(chromium):
        pytest.skip(f"no Chromium at {chromium} (apt-get install chromium)")
    from tests.test_workflow import run_tiny_quickstart

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_id, _ = run_tiny_quickstart(tmp_path / "runs")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from mlflow_ui_check import check_run
    finally:
        sys.path.pop(0)
    found = check_run(uri, run_id, tmp_path)
    assert found["description"], found
    assert found["registered_model"], found
    assert found["compare_params"] and found["settings"] == 3, found
    assert (tmp_path / "mlflow_run.png").stat().st_size > 10_000

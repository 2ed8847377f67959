"""Open a molguide run in MLflow's UI with headless Chromium: check what a user should
find there and take screenshots for the docs.

    python scripts/mlflow_ui_check.py --store sqlite:///$PWD/mlflow.db --run RUN_ID \
        --screenshots docs/img

Needs Chromium from the distribution (``apt-get install chromium``) and Playwright
(``pip install -e '.[ui]'``; its own browser downloads are not used). Starts
``mlflow ui`` on a free port, opens the run (parent of a quickstart) in the classic
model-training view, and checks: the run's description (its summary table), a
registered model, and the compare view of its sampling settings with their params.
Prints one JSON line with what it found; exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# Offline and as root: no sandbox, no background traffic (it would be refused anyway).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHROMIUM = os.environ.get("MOLGUIDE_CHROMIUM", "/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(store: str, timeout_s: float = 90.0):
    """``mlflow ui`` on a free local port for ``store``; yields its address."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(address + "/health", timeout=2) as reply:  # noqa: S310 (local)
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"mlflow ui did not start on {address} within {timeout_s:.0f} s")
            time.sleep(0.5)
        yield address
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def _settings(store: str, run_id: str) -> tuple[str, list[str]]:
    """The experiment id and the ids of the sampling-setting runs under ``run_id``."""
    import mlflow

    client = mlflow.MlflowClient(store)
    parent = client.get_run(run_id)
    experiment = parent.info.experiment_id
    queue, settings = [run_id], []
    while queue:
        children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{queue.pop()}'")
        for child in children:
            if "weight" in child.data.params:
                settings.append(child.info.run_id)
            queue.append(child.info.run_id)
    return experiment, settings


def check_run(store: str, run_id: str, screenshots: Path | None = None) -> dict:
    """Open the run, the model registry and the compare view; returns what was found."""
    from playwright.sync_api import sync_playwright

    from molguide.runs.tracking import ui_link

    experiment, settings = _settings(store, run_id)
    found: dict = {"run_id": run_id, "settings": len(settings)}
    with mlflow_ui(store) as address, sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 900}
        )
        page = browser.new_page()
        page.goto(ui_link(experiment, run_id, address))
        page.get_by_text("molguide quickstart", exact=False).first.wait_for(timeout=60_000)
        found["description"] = page.get_by_text("improvement", exact=False).count() > 0
        if screenshots:
            page.screenshot(path=str(screenshots / "mlflow_run.png"), full_page=False)
        page.goto(f"{address}/#/models?workflowType=machine_learning")
        model = page.get_by_text("molguide-quickstart-classifier", exact=False).first
        model.wait_for(timeout=60_000)
        found["registered_model"] = model.is_visible()
        ids = json.dumps(settings)
        compare = f"{address}/#/compare-runs?runs={ids}&experiments={json.dumps([experiment])}"
        page.goto(compare + "&workflowType=machine_learning")
        page.get_by_text("weight", exact=True).first.wait_for(timeout=60_000)
        with contextlib.suppress(Exception):  # the plot is for the screenshot; the check reads the table
            page.wait_for_selector(".js-plotly-plot", timeout=30_000)
            page.wait_for_load_state("networkidle", timeout=30_000)
        found["compare_params"] = all(
            page.get_by_text(name, exact=True).count() > 0 for name in ("weight", "guidance", "t_max")
        )
        if screenshots:
            page.screenshot(path=str(screenshots / "mlflow_compare.png"), full_page=False)
        browser.close()
    found["ok"] = bool(found["description"] and found["registered_model"] and found["compare_params"])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="the tracking URI, e.g. sqlite:///$PWD/mlflow.db")
    parser.add_argument("--run", required=True, help="the run id of a quickstart's parent run")
    parser.add_argument("--screenshots", type=Path, help="folder for mlflow_run.png and mlflow_compare.png")
    args = parser.parse_args(argv)
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    found = check_run(args.store, args.run, args.screenshots)
    print(json.dumps(found))
    return 0 if found["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

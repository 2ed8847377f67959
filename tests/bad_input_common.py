"""What every bad-input case shares: the case record and the helpers that write its input.

The cases themselves live by area (``bad_input_molecules``, ``bad_input_models``,
``bad_input_runs``); ``test_bad_input.py`` runs them all.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from molecule_files import zinc_style_sdf

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes through read-only modes


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], list[str]]  # writes what the case needs, returns the arguments
    status: int
    culprit: str  # text the one line must contain (the file, key or value at fault)
    evaluated: str | None = None  # "k of n records evaluated" when good records remain


@dataclass(frozen=True)
class ApiCase:
    """A bad call of the Python API: it raises ``error`` whose message contains ``message``
    (the argument, file or record at fault), never an unrelated exception from deep inside."""

    name: str
    call: Callable[[Path], object]  # makes what it needs under the folder and calls the API
    error: type[Exception]
    message: str


def zinc(folder: Path) -> str:
    return zinc_style_sdf(folder / "zinc.sdf").read_text()


def write(folder: Path, name: str, content: str | bytes) -> str:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def evaluate_args(*args: str) -> list[str]:
    return ["evaluate", *args, "--no-xtb", "--no-novelty"]


def run_args(folder: Path, *sets: str, pipeline: str = "train-score") -> list[str]:
    settings = [f"output_dir={folder / 'run'}", "data.max_molecules=16", *sets]
    return ["run", pipeline, "--no-progress", *[a for s in settings for a in ("--set", s)]]


def checkpoint_args(folder: Path, content: bytes) -> list[str]:
    (folder / "run" / "score").mkdir(parents=True)
    (folder / "run" / "score" / "last.pt").write_bytes(content)
    return run_args(folder, "model.backbone_kwargs={hidden: 8, num_layers: 1}", "train.steps=1")


def store_args(folder: Path, uri: str) -> list[str]:
    os.environ["MLFLOW_TRACKING_URI"] = uri  # restored by the test's monkeypatch
    return run_args(folder, "train.steps=1")


def malformed_db(folder: Path) -> str:
    path = folder / "malformed.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    data = bytearray(path.read_bytes())
    data[4096 + 8 : 4096 + 200] = b"\xff" * 192  # scribble over the second page's header
    path.write_bytes(bytes(data))
    return str(path)


def read_only(path: Path) -> Path:
    path.chmod(0o555 if path.is_dir() else 0o444)
    return path


def locked_folder(folder: Path) -> Path:
    (folder / "locked").mkdir()
    return read_only(folder / "locked")

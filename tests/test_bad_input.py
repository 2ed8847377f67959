"""The bad-input suite: files, configs, checkpoints and stores a demanding user may hand over.

Every case runs the real command line and asserts the exit status, one ``molguide:`` line
naming the culprit (no traceback: an uncaught exception fails the test), and, where a
file also holds good records, that every good record is still processed.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from molecule_files import zinc_style_sdf

from molguide.cli import main

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes through read-only modes


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], list[str]]  # writes what the case needs, returns the arguments
    status: int
    culprit: str  # text the one line must contain (the file, key or value at fault)
    evaluated: str | None = None  # "k of n records evaluated" when good records remain


def _zinc(folder: Path) -> str:
    return zinc_style_sdf(folder / "zinc.sdf").read_text()


def _write(folder: Path, name: str, content: str | bytes) -> str:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _evaluate(*args: str) -> list[str]:
    return ["evaluate", *args, "--no-xtb", "--no-novelty"]


def _run(folder: Path, *sets: str, pipeline: str = "train-score") -> list[str]:
    settings = [f"output_dir={folder / 'run'}", "data.max_molecules=16", *sets]
    return ["run", pipeline, "--no-progress", *[a for s in settings for a in ("--set", s)]]


def _checkpoint(folder: Path, content: bytes) -> list[str]:
    (folder / "run" / "score").mkdir(parents=True)
    (folder / "run" / "score" / "last.pt").write_bytes(content)
    return _run(folder, "model.backbone_kwargs={hidden: 8, num_layers: 1}", "train.steps=1")


def _store(folder: Path, uri: str) -> list[str]:
    os.environ["MLFLOW_TRACKING_URI"] = uri  # restored by the test's monkeypatch
    return _run(folder, "train.steps=1")


def _malformed_db(folder: Path) -> str:
    path = folder / "malformed.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    data = bytearray(path.read_bytes())
    data[4096 + 8 : 4096 + 200] = b"\xff" * 192  # scribble over the second page's header
    path.write_bytes(bytes(data))
    return str(path)


def _read_only(path: Path) -> Path:
    path.chmod(0o555 if path.is_dir() else 0o444)
    return path


def _locked_folder(folder: Path) -> Path:
    (folder / "locked").mkdir()
    return _read_only(folder / "locked")


CASES = [
    # ------------------------------------------------------------------ molecule files
    Case("no such file", lambda d: _evaluate(str(d / "none.sdf")), 2, "none.sdf: no such file"),
    Case("empty file", lambda d: _evaluate(_write(d, "e.sdf", "")), 2, "e.sdf: file is empty"),
    Case("a folder", lambda d: _evaluate(str(d)), 2, "is a folder"),
    Case("binary", lambda d: _evaluate(_write(d, "b.xyz", b"\x00\x01")), 2, "b.xyz: not a text file"),
    Case("unknown type", lambda d: _evaluate(_write(d, "m.pdb", "ATOM")), 2, "m.pdb: unknown file type"),
    Case(
        "csv without SMILES", lambda d: _evaluate(_write(d, "m.csv", "name,x\na,1\n")), 2, "no SMILES column"
    ),
    Case(
        "no record loads",
        lambda d: _evaluate(_write(d, "bad.xyz", "1\nx\nQ 0 0 0\n")),
        2,
        "bad.xyz: none of the 1 records could be read",
    ),
    Case(
        "missing $$$$",
        lambda d: _evaluate(_write(d, "m.sdf", _zinc(d).replace("$$$$\n", "", 1))),
        0,
        "record 1 (line 1): no '$$$$' line",
        "2 of 3",
    ),
    Case(
        "one title not UTF-8",
        lambda d: _evaluate(
            _write(d, "l.sdf", _zinc(d).encode().replace(b"ZINC000000000003\n", b"caf\xe9\n", 1))
        ),
        0,
        "byte 0xE9 is not UTF-8",
        "2 of 3",
    ),
    Case(
        "2D XYZ record",
        lambda d: _evaluate(
            _write(
                d,
                "f.xyz",
                "5\nflat\nC 0 0 0\nH 1 0 0\nH -1 0 0\nH 0 1 0\nH 0 -1 0\n2\nok\nH 0 0 0\nH 0 0 0.74\n",
            )
        ),
        0,
        "coordinates are 2D",
        "1 of 2",
    ),
    Case(
        "absurd coordinate",
        lambda d: _evaluate(_write(d, "a.xyz", "2\nfar\nH 0 0 0\nH 0 0 1e300\n2\nok\nH 0 0 0\nH 0 0 0.74\n")),
        0,
        "out of range",
        "1 of 2",
    ),
    Case(
        "--out is the input",
        lambda d: _evaluate(p := _write(d, "z.sdf", _zinc(d)), "--out", p),
        2,
        "is the input file",
    ),
    Case(
        "--out is a folder",
        lambda d: _evaluate(_write(d, "z.sdf", _zinc(d)), "--out", str(d)),
        2,
        "is a folder",
    ),
    Case(
        "--out cannot be written",
        lambda d: _evaluate(_write(d, "z.sdf", _zinc(d)), "--out", "/proc/molguide/out.sdf"),
        2,
        "/proc/molguide: cannot write there",
    ),
    # ------------------------------------------------------------------ configs
    Case(
        "duplicate YAML key",
        lambda d: ["run", "train-score", "-c", _write(d, "c.yaml", "name: a\nname: b\n")],
        2,
        "key 'name' appears twice",
    ),
    Case("unknown key", lambda d: _run(d, "train.stesp=3"), 2, "train.stesp: Extra inputs are not permitted"),
    Case(
        "zero width",
        lambda d: _run(d, "model.backbone_kwargs={hidden: 0, num_layers: 2}"),
        2,
        "model.backbone_kwargs: hidden must be a whole number of at least 1, not 0",
    ),
    Case(
        "negative depth",
        lambda d: _run(
            d, "classifier.backbone_kwargs={hidden: 8, num_layers: -1}", pipeline="train-classifier"
        ),
        2,
        "classifier.backbone_kwargs: num_layers must be a whole number of at least 1, not -1",
    ),
    Case(
        "a switch that is not true or false",
        lambda d: _run(
            d,
            "classifier.backbone_kwargs={hidden: 8, num_layers: 2, coordinate_updates: no_thanks}",
            pipeline="train-classifier",
        ),
        2,
        "classifier.backbone_kwargs: coordinate_updates must be true or false, not 'no_thanks'",
    ),
    Case(
        "a score network without coordinate updates",
        lambda d: _run(d, "model.backbone_kwargs={hidden: 8, num_layers: 2, coordinate_updates: false}"),
        2,
        "model.backbone_kwargs: coordinate_updates: false is for classifiers and evaluators",
    ),
    Case(
        "a misspelt size of the reward's correction network",
        lambda d: _run(d, "reward.correction={hiden: 32}", pipeline="train-reward"),
        2,
        "correction: unknown EGNN setting(s) ['hiden']",
    ),
    Case("unknown device", lambda d: _run(d, "device=tpu"), 2, "device=tpu: not a device name"),
    Case(
        "empty guidance window",
        lambda d: _run(d, "guide.t_min=0.9", "guide.t_max=0.1", pipeline="guide"),
        2,
        "guide: t_min (0.9) must be below t_max (0.1)",
    ),
    Case(
        "negative sweep weight", lambda d: _run(d, "guide.sweep=[1, -2]"), 2, "guide.sweep.1: Input should be"
    ),
    Case(
        "no sampling steps", lambda d: _run(d, "sample.steps=[]", pipeline="sample"), 2, "sample.steps: List"
    ),
    Case(
        "output_dir is a file",
        lambda d: _run(d, f"output_dir={_write(d, 'f', 'x')}"),
        2,
        "is a file, not a folder",
    ),
    Case(
        "output_dir under /proc",
        lambda d: _run(d, "output_dir=/proc/molguide"),
        2,
        "output_dir=/proc/molguide",
    ),
    # ------------------------------------------------------------------ checkpoints
    Case("empty checkpoint", lambda d: _checkpoint(d, b""), 2, "last.pt: the checkpoint file is empty"),
    Case(
        "text as checkpoint", lambda d: _checkpoint(d, b"weights\n"), 2, "last.pt: not a PyTorch checkpoint"
    ),
    Case(
        "export of a non-checkpoint",
        lambda d: ["export", _write(d, "x.pt", b"PK\x03\x04broken"), str(d / "model")],
        2,
        "x.pt: not a PyTorch checkpoint",
    ),
    # ------------------------------------------------------------------ tracking stores
    Case(
        "SQLite folder missing",
        lambda d: _store(d, f"sqlite:///{d / 'nowhere' / 'mlflow.db'}"),
        2,
        "the folder {d}/nowhere does not exist",
    ),
    Case(
        "not a database",
        lambda d: _store(d, f"sqlite:///{_write(d, 'notes.db', 'my notes, not a database' * 100)}"),
        2,
        "notes.db is not a usable SQLite database (file is not a database)",
    ),
    Case("malformed database", lambda d: _store(d, f"sqlite:///{_malformed_db(d)}"), 2, "malformed.db"),
    Case("unknown scheme", lambda d: _store(d, "sqlit:///mlflow.db"), 2, "unknown scheme 'sqlit'"),
]

if not ROOT_USER:  # permissions only bind other users
    CASES += [
        Case(
            "read-only SQLite file",
            lambda d: _store(d, f"sqlite:///{_read_only(Path(_write(d, 'ro.db', b'')))}"),
            2,
            "ro.db is read-only",
        ),
        Case(
            "read-only output_dir",
            lambda d: _run(d, f"output_dir={_locked_folder(d)}"),
            2,
            "locked: cannot write there",
        ),
    ]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_naming_the_culprit(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = case.make(tmp_path)
    status = main(args)
    out, err = capsys.readouterr()
    culprit = case.culprit.replace("{d}", str(tmp_path))
    assert status == case.status, err
    assert "Traceback" not in err
    if case.status:
        errors = [line for line in err.splitlines() if line.startswith("molguide: error:")]
        assert len(errors) == 1 and culprit in errors[0], err
        assert not (tmp_path / "run" / "score" / "last.pt").exists() or "checkpoint" in case.name
    else:
        assert f"{case.evaluated} records evaluated" in out and culprit in out, out


def test_sqlite_uris_that_are_fine_pass_the_check(tmp_path, monkeypatch):
    from molguide.runs.tracking import TrackingError, check_tracking

    monkeypatch.chdir(tmp_path)
    for uri in (
        "sqlite:///mlflow.db",
        f"sqlite:///{tmp_path}/a.db",
        "sqlite+pysqlite:///b.db",
        "sqlite:///:memory:",
    ):
        assert check_tracking(uri) == uri
    (tmp_path / "p%41").mkdir()
    with sqlite3.connect(tmp_path / "p%41" / "m.db") as db:
        db.execute("CREATE TABLE t (x)")
    assert check_tracking(f"sqlite:///{tmp_path}/p%41/m.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(
        TrackingError, match="the default store sqlite:///nowhere/m.db .*set MLFLOW_TRACKING_URI"
    ):
        check_tracking("sqlite:///nowhere/m.db")

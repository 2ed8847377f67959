"""Bad-input cases: output folders, tracking stores and runs."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from bad_input_common import (
    ROOT_USER,
    Case,
    locked_folder,
    malformed_db,
    read_only,
    run_args,
    store_args,
    write,
)

_HELD = []  # lock holders kept open until the test process ends (the "other run")


def held_by_another_run(folder: Path, pipeline: str = "train-score") -> list[str]:
    """Hold ``folder/run``'s lock as a live run would (a separate open file: flock conflicts)."""
    from molguide.runs.lock import hold_output_dir

    (folder / "run").mkdir(exist_ok=True)
    holder = hold_output_dir(folder / "run", command="molguide run train-score (the first run)")
    holder.__enter__()
    _HELD.append(holder)
    return run_args(folder, "train.steps=1", pipeline=pipeline)


CASES = [
    Case(
        "output_dir used by a live run",
        held_by_another_run,
        2,
        f"output_dir={{d}}/run is in use by pid {os.getpid()} on {socket.gethostname()}",
    ),
    Case(
        "output_dir used by a live run, sampling",
        lambda d: held_by_another_run(d, "sample"),
        2,
        "(the first run); wait for it to finish, or choose another with --set output_dir=FOLDER",
    ),
    Case(
        "output_dir is a file",
        lambda d: run_args(d, f"output_dir={write(d, 'f', 'x')}"),
        2,
        "is a file, not a folder",
    ),
    Case(
        "output_dir under /proc",
        lambda d: run_args(d, "output_dir=/proc/molguide"),
        2,
        "output_dir=/proc/molguide",
    ),
    # ------------------------------------------------------------------ tracking stores
    Case(
        "SQLite folder missing",
        lambda d: store_args(d, f"sqlite:///{d / 'nowhere' / 'mlflow.db'}"),
        2,
        "the folder {d}/nowhere does not exist",
    ),
    Case(
        "not a database",
        lambda d: store_args(d, f"sqlite:///{write(d, 'notes.db', 'my notes, not a database' * 100)}"),
        2,
        "notes.db is not a usable SQLite database (file is not a database)",
    ),
    Case("malformed database", lambda d: store_args(d, f"sqlite:///{malformed_db(d)}"), 2, "malformed.db"),
    Case("unknown scheme", lambda d: store_args(d, "sqlit:///mlflow.db"), 2, "unknown scheme 'sqlit'"),
]

if not ROOT_USER:  # permissions only bind other users
    CASES += [
        Case(
            "read-only SQLite file",
            lambda d: store_args(d, f"sqlite:///{read_only(Path(write(d, 'ro.db', b'')))}"),
            2,
            "ro.db is read-only",
        ),
        Case(
            "read-only output_dir",
            lambda d: run_args(d, f"output_dir={locked_folder(d)}"),
            2,
            "locked: cannot write there",
        ),
    ]

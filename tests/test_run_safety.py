"""A run's folder and files under pressure: a second run on the same folder, a stale lock,
a full disk, a private or linked output file, a read-only store."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from molguide.cli import main
from molguide.runs.lock import LOCK_NAME, FolderInUseError, hold_output_dir
from molguide.storage.files import StorageError, atomic_write

TINY = ["model.backbone_kwargs={hidden: 8, num_layers: 1}", "data.max_molecules=16", "train.steps=2"]


def _sets(settings: list[str]) -> list[str]:
    return [a for s in settings for a in ("--set", s)]


def test_a_second_holder_is_refused_and_a_clean_end_leaves_no_holder(tmp_path):
    with hold_output_dir(tmp_path, command="first") as stale:
        assert stale is None
        with pytest.raises(FolderInUseError, match=f"in use by pid {os.getpid()} on .*: first"):
            with hold_output_dir(tmp_path, command="second"):
                pass
    assert (tmp_path / LOCK_NAME).read_bytes() == b""
    with hold_output_dir(tmp_path) as stale:  # free again, nothing stale to report
        assert stale is None


def test_a_stale_lock_of_a_lost_machine_is_taken_over_and_only_its_run_marked_failed(
    tmp_path, monkeypatch, caplog
):
    """The folder's lock names a run of another host whose lock is free (that machine is
    gone): the new run takes the folder over, says so, and marks that run FAILED; a live run
    of a third host that merely uses the same path string is left RUNNING."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    folder = (tmp_path / "run").resolve()
    folder.mkdir()
    lost = {"host": "lost-node", "pid": 4242, "command": "molguide run train-score", "since": "yesterday"}
    (folder / LOCK_NAME).write_text(json.dumps(lost))
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("molguide-score")
    tags = {"molguide.output_dir": str(folder)}
    ghost = client.create_run(experiment, tags={**tags, "molguide.host": "lost-node", "molguide.pid": "4242"})
    other = client.create_run(experiment, tags={**tags, "molguide.host": "busy-node", "molguide.pid": "7"})

    args = ["run", "train-score", "--json", "--no-progress", *_sets([f"output_dir={folder}", *TINY])]
    assert main(args) == 0
    assert "took over the lock of pid 4242 on lost-node, since yesterday" in caplog.text
    ghost, other = client.get_run(ghost.info.run_id), client.get_run(other.info.run_id)
    assert ghost.info.status == "FAILED" and "lost-node) was lost" in ghost.data.tags["molguide.note"]
    assert other.info.status == "RUNNING"
    assert (folder / LOCK_NAME).read_bytes() == b""


def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_previous_checkpoint_survives(tmp_path):
    """A file-size limit (what a full disk looks like to the writer; Python ignores SIGXFSZ)
    stops the second checkpoint: one line naming the file and the cause, the first checkpoint
    whole, a resume hint. Run in a child process so the limit binds only there."""
    program = textwrap.dedent(
        f"""
        import resource, sys
        from molguide.cli import main
        sets = ["output_dir={tmp_path / "run"}", "data.max_molecules=16", "train.checkpoint_every=1",
                "model.backbone_kwargs={{hidden: 8, num_layers: 1}}", "train.steps=1"]
        args = ["run", "train-score", "--no-progress"] + [a for s in sets for a in ("--set", s)]
        assert main(args) == 0
        # Room for the store and logs (under 2 MB), not for the checkpoint of a wide network.
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, resource.RLIM_INFINITY))
        sets[-2:] = ["model.backbone_kwargs={{hidden: 256, num_layers: 4}}", "train.steps=2"]
        sets[0] = "output_dir={tmp_path / "big"}"
        sys.exit(main(["run", "train-score", "--no-progress"] + [a for s in sets for a in ("--set", s)]))
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("molguide: error:")]
    assert len(errors) == 1 and "last.pt: could not be written (file size limit exceeded)" in errors[0]
    assert "any previous version is kept" in errors[0]
    assert "resume with: molguide run train-score" in out.stderr
    assert not list((tmp_path / "big" / "score").glob(".last.pt-*.tmp"))  # no half-written file left


def test_an_existing_file_keeps_its_permissions_and_a_link_is_written_through(tmp_path):
    private = tmp_path / "private.sdf"
    private.write_text("old")
    private.chmod(0o600)
    atomic_write(private, lambda fh: fh.write(b"new"))
    assert private.read_text() == "new" and stat.S_IMODE(private.stat().st_mode) == 0o600

    target = tmp_path / "results" / "out.sdf"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "out.sdf"
    link.symlink_to(target)
    atomic_write(link, lambda fh: fh.write(b"new"))
    assert link.is_symlink() and target.read_text() == "new"


def test_a_write_that_fails_for_another_reason_is_not_called_a_full_disk(tmp_path):
    def broken(fh):
        raise ValueError("not a storage problem")

    with pytest.raises(ValueError, match="not a storage problem"):
        atomic_write(tmp_path / "x", broken)
    with pytest.raises(StorageError, match="x: could not be written \\(no space left on device\\)"):
        atomic_write(tmp_path / "x", lambda fh: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_compare_reads_a_read_only_store(tmp_path, monkeypatch, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    client = mlflow.MlflowClient(uri)
    client.set_terminated(client.create_run(client.create_experiment("molguide-score")).info.run_id)
    (tmp_path / "store" / "mlflow.db").chmod(0o444)
    (tmp_path / "store").chmod(0o555)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        assert main(["compare", "--csv"]) == 0
        assert "molguide-score" in capsys.readouterr().out
    finally:
        (tmp_path / "store").chmod(0o755)

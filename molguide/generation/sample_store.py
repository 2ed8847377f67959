"""Generated molecules stored batch by batch, so an interrupted sampling run continues.

Used by EDM's protocol (:mod:`molguide.runs.protocol`), whose settings sample
10,000 molecules each: every batch has its own seed (:func:`batch_seed`), so a resumed
run makes exactly the molecules an uninterrupted run would have made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from molguide.data.molecules import Molecule
from molguide.storage.files import as_json, atomic_write, read_json, write_json

log = logging.getLogger(__name__)


def batch_seed(seed: int, batch: int) -> int:
    """The sampling seed of one batch: batches are independent, so a resumed run repeats them."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class BatchedSamples:
    """One sampling setting's molecules, stored batch by batch so that a rerun continues.

    Every batch is a compressed ``batch_<k>.npz`` (atoms, positions, offsets, which
    samples were lost and why, seconds), written atomically. ``meta.json`` holds the
    signature of what made them; when it changes (another score checkpoint, other
    sampling settings), the old batches are discarded with a warning.
    """

    def __init__(self, folder: Path, signature: dict, n: int, batch_size: int) -> None:
        self.folder, self.n, self.batch_size = Path(folder), n, batch_size
        signature = as_json({**signature, "n": n, "batch_size": batch_size})
        meta = self.folder / "meta.json"
        old = read_json(meta)
        if old != signature:
            stale = sorted(self.folder.glob("batch_*.npz"))
            if stale:
                log.warning("%s: sampling inputs changed; discarding %d old batches", self.folder, len(stale))
                for path in stale:
                    path.unlink()
            write_json(meta, signature)

    def _path(self, k: int) -> Path:
        return self.folder / f"batch_{k:05d}.npz"

    @property
    def ranges(self) -> list[tuple[int, int, int]]:
        """(batch index, first sample, end) of every batch."""
        starts = range(0, self.n, self.batch_size)
        return [(k, s, min(s + self.batch_size, self.n)) for k, s in enumerate(starts)]

    def fill(
        self,
        sample_batch: Callable[[int, int, int], tuple[list[Molecule | None], dict[int, str]]],
        desc: str,
        progress: bool,
    ) -> None:
        """Sample every missing batch with ``sample_batch(k, start, end)`` -> (molecules, failures)."""
        from tqdm.auto import tqdm

        todo = [r for r in self.ranges if not self._path(r[0]).exists()]
        if not todo:
            return
        done = self.n - sum(end - start for _, start, end in todo)
        if done:
            log.info("%s: resuming at %d of %d molecules", desc, done, self.n)
        with tqdm(total=self.n, initial=done, desc=desc, unit="mol", disable=not progress) as bar:
            for k, start, end in todo:
                t0 = time.perf_counter()
                mols, failures = sample_batch(k, start, end)
                self._save(k, mols, failures, time.perf_counter() - t0)
                bar.update(end - start)
                if not progress:
                    log.info("%s: %d of %d molecules", desc, end, self.n)

    def _save(self, k: int, mols: list[Molecule | None], failures: dict[int, str], seconds: float) -> None:
        present = [i for i, m in enumerate(mols) if m is not None]
        counts = np.array([mols[i].num_atoms for i in present], dtype=np.int64)
        arrays = {
            "index": np.array(present, dtype=np.int64),
            "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "atomic_numbers": np.concatenate(
                [mols[i].atomic_numbers for i in present] or [np.zeros(0)]
            ).astype(np.int8),
            "positions": np.concatenate([mols[i].positions for i in present] or [np.zeros((0, 3))]).astype(
                np.float32
            ),
            "failed": np.array(sorted(failures), dtype=np.int64),
            "reasons": np.array([failures[i] for i in sorted(failures)], dtype=str),
            "seconds": np.array(seconds),
        }
        atomic_write(self._path(k), lambda fh: np.savez_compressed(fh, **arrays))

    def load(self) -> tuple[list[Molecule | None], dict[int, str], float]:
        """(molecule or None per sample, failures by sample index, sampling seconds) of all batches."""
        mols: list[Molecule | None] = [None] * self.n
        failures: dict[int, str] = {}
        seconds = 0.0
        for k, start, _ in self.ranges:
            with np.load(self._path(k)) as npz:
                z = {key: npz[key] for key in npz.files}  # each npz[key] access decompresses again
            offsets = z["offsets"]
            for j, i in enumerate(z["index"].tolist()):
                a, b = offsets[j], offsets[j + 1]
                mols[start + i] = Molecule(
                    z["atomic_numbers"][a:b], z["positions"][a:b], name=f"sample_{start + i}"
                )
            failures.update({start + int(i): str(r) for i, r in zip(z["failed"], z["reasons"])})
            seconds += float(z["seconds"])
        return mols, failures, seconds

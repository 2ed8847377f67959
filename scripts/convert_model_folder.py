"""Convert a saved model folder of format 1 (config.json + model.safetensors of one score
network, ``molguide-score-model``) into a trained-run folder of format 2
(molguide_run.json + score/config.json + score/model.safetensors), weights unchanged.

    python scripts/convert_model_folder.py molguide/weights/qm9            # in place
    python scripts/convert_model_folder.py old_folder new_folder

molguide reads format 1 as it is; converting is for folders that ship or are shared.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from molguide.storage.trained_run import CONFIG_FILE, WEIGHTS_FILE, TrainedRun


def convert(source: Path, target: Path) -> Path:
    run = TrainedRun.from_pretrained(source)
    with tempfile.TemporaryDirectory(dir=target.parent if target.parent.exists() else None) as tmp:
        staged = run.save_pretrained(Path(tmp) / "run")
        if target == source:  # the old files leave once the new ones are written
            (source / CONFIG_FILE).unlink()
            (source / WEIGHTS_FILE).unlink()
        target.mkdir(parents=True, exist_ok=True)
        for item in staged.iterdir():
            shutil.move(str(item), str(target / item.name))
    return target


if __name__ == "__main__":
    src = Path(sys.argv[1])
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else src
    print(f"wrote {convert(src, dst)}")

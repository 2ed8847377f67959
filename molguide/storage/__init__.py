"""Files on disk: atomic writes, pickle-free checkpoints, trained networks saved and loaded."""

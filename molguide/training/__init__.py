"""The training loop (Trainer, EMA, checkpoints, time box) and data-parallel training."""

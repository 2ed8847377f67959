"""Pipelines: thin compositions of data, models, diffusion and evaluation, tracked in MLflow."""

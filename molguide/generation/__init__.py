"""Sampling molecules: the design pipeline, the designer (molguide.load), resumable sample stores."""

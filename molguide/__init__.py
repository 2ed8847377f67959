"""molguide."""

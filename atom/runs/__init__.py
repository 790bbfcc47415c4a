"""atom/runs."""

"""atom/workflow."""

"""atom/store."""

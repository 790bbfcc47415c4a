"""atom/observe."""

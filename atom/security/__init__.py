"""atom/security."""

"""atom/alerts."""

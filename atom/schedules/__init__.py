"""atom/schedules."""

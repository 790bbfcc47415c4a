"""Backup and restore of a tenant's (or every tenant's) configuration: one archive."""

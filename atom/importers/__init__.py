"""Workflows from other tools (n8n exports, AuraOS documents) as ATOM definitions."""

"""Shared infrastructure: settings, Temporal client, database."""

"""Ingest of device drop files: landing zone, parsing, validation, loading."""

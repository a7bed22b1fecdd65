"""The HTTP API: devices push readings with their own keys; see emps.api.app."""

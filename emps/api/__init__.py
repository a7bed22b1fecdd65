"""The HTTP API (issue 28): devices push readings with their own keys; see emps.api.app."""

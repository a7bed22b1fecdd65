"""`python -m emps.api`: serve the HTTP API on 127.0.0.1 (EMPS_API_PORT)."""

from emps.api.app import run

if __name__ == "__main__":
    run()

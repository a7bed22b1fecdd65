"""Serve the event-triggered alert deployment from this process (tests, bench, a dev shell).

`emps up` registers prefect.yaml with `prefect deploy --all` and runs a worker; this does the same
for the one deployment with a Runner, reading its triggers from prefect.yaml so there is only one
declaration. Run: `python -m emps.flows.serving` (PREFECT_API_URL must point at a server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from emps.flows.alerts import process_prediction_alerts
from emps.settings import PROJECT_ROOT

DEPLOYMENT = "process-prediction-alerts"


def deployment_spec(name: str = DEPLOYMENT, path: Path | None = None) -> dict[str, Any]:
    """One deployment's entry in prefect.yaml."""
    spec = yaml.safe_load((path or PROJECT_ROOT / "prefect.yaml").read_text())
    for deployment in spec.get("deployments") or []:
        if deployment["name"] == name:
            return deployment
    raise LookupError(f"prefect.yaml declares no deployment named {name!r}")


def triggers_for(name: str = DEPLOYMENT, path: Path | None = None) -> list:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    triggers = []
    for trigger in deployment_spec(name, path).get("triggers") or []:
        fields = {k: v for k, v in trigger.items() if k != "type"}
        if trigger.get("type", "event") != "event":
            raise ValueError(f"{name}: only event triggers are served here, not {trigger['type']}")
        triggers.append(DeploymentEventTrigger(**fields))
    return triggers


def serve_alert_deployment(limit: int = 4) -> None:
    """Block serving process-prediction-alerts with its prefect.yaml triggers until interrupted."""
    process_prediction_alerts.serve(
        name=DEPLOYMENT, triggers=triggers_for(), limit=limit, pause_on_shutdown=False
    )


if __name__ == "__main__":
    serve_alert_deployment()

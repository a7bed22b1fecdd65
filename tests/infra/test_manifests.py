"""The production manifests in infra/ only name images, commands and settings that exist."""

from __future__ import annotations

import re

import pytest
import yaml
from typer.main import get_command

from emps.cli import app
from emps.settings import PROJECT_ROOT, Settings

INFRA = PROJECT_ROOT / "infra"
OUR_IMAGE = "emps:latest"
THIRD_PARTY_COMMANDS = {"prefect", "mlflow", "streamlit"}


def containers() -> list[tuple[str, dict]]:
    """(where, container spec) for every container in the compose file and the k8s manifests."""
    found = []
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        found.append((f"compose:{name}", service))
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec", {})
            pod = spec.get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                found.append((f"{path.name}:{doc['metadata']['name']}", container))
    return found


def env_names(where: str, spec: dict) -> set[str]:
    env = spec.get("environment") or spec.get("env") or {}
    if isinstance(env, list):
        return {item["name"] for item in env}
    return set(env)


def test_our_image_is_built_from_a_dockerfile_in_the_repo():
    """Every service on the emps image can be built: infra/Dockerfile exists and installs the lock."""
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "uv sync --frozen" in dockerfile
    assert any(spec.get("image") == OUR_IMAGE for _, spec in containers())


@pytest.mark.parametrize(
    ("where", "spec"), containers(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_commands_exist(where: str, spec: dict):
    """A container on our image runs an `emps` subcommand that exists or a bundled server."""
    if spec.get("image") != OUR_IMAGE:
        return
    command = spec["command"]
    if command[0] == "emps":
        group = get_command(app)
        for word in command[1:]:
            if word.startswith("-"):
                break
            group = group.commands.get(word) if hasattr(group, "commands") else None
            assert group is not None, f"{where}: `{' '.join(command)}` is not an emps command"
    else:
        assert command[0] in THIRD_PARTY_COMMANDS, f"{where}: unknown program {command[0]}"
    for arg in command:
        if arg.endswith(".py"):
            assert (PROJECT_ROOT / arg).exists(), f"{where}: {arg} is not in the repository"


def test_every_emps_variable_is_a_setting():
    """An EMPS_* variable in the manifests maps to a field of Settings (no typo goes unnoticed)."""
    fields = {f"EMPS_{name.upper()}" for name in Settings.model_fields}
    used = set()
    for where, spec in containers():
        used |= {name for name in env_names(where, spec) if name.startswith("EMPS_")}
    for path in [INFRA / "docker-compose.yml", *sorted((INFRA / "k8s").glob("*.yaml"))]:
        used |= set(re.findall(r"\b(EMPS_[A-Z_]+)\s*:", path.read_text()))
    used -= {"EMPS_PROJECT_ROOT", "EMPS_PUBLIC_HOST"}  # build / proxy variables, not settings
    unknown = sorted(used - fields)
    assert not unknown, f"not settings: {unknown}"


def test_prefect_worker_pool_matches_prefect_yaml():
    """Workers in the manifests poll the work pool the deployments in prefect.yaml target."""
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    pool = spec["definitions"]["work_pool"]["name"]
    workers = [s for _, s in containers() if "worker" in s.get("command", [])]
    assert workers
    for worker in workers:
        assert worker["command"][worker["command"].index("--pool") + 1] == pool

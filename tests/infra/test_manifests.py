"""The production manifests in infra/ only name images, commands and settings that exist."""

from __future__ import annotations

import re

import pytest
import yaml
from typer.main import get_command

from emps.cli import app
from emps.settings import PROJECT_ROOT, variables

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
    fields = {variable.name for variable in variables()}
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


def _k8s_docs() -> list[dict]:
    return [
        doc
        for path in sorted((INFRA / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _caddy_sites() -> dict[str, str]:
    """Each site block of the Caddyfile: its address line -> its body."""
    sites, current, depth = {}, None, 0
    for line in (INFRA / "Caddyfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if depth == 0 and stripped.endswith("{"):
            current = stripped[:-1].strip()
            sites[current] = ""
        elif current is not None:
            sites[current] += stripped + "\n"
        depth += stripped.count("{") - stripped.count("}")
    return sites


def test_only_the_dashboard_and_the_api_are_published_without_the_proxys_sign_in():
    """Compose publishes ports only through the proxy; the proxy's public site reaches only the
    dashboard and, under /api/ alone (never its /metrics or /docs), the key-checked HTTP API,
    and the Prefect and MLflow sites require its sign-in; in Kubernetes the only Ingress without
    single sign-on routes to the dashboard and the API's /api/, and nothing is reachable unless a
    network policy admits it."""
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())["services"]
    assert [name for name, s in compose.items() if s.get("ports")] == ["proxy"]
    sites = _caddy_sites()
    public = sites.pop("{$EMPS_PUBLIC_HOST}")
    assert re.findall(r"handle (\S*)\s*\{\s*reverse_proxy (\S+)", public) == [
        ("/api/*", "api:8000"),
        ("", "streamlit:8501"),
    ]
    assert {re.findall(r"reverse_proxy (\S+)", body)[0] for body in sites.values()} == {
        "prefect-server:4200",
        "mlflow:5000",
    }
    assert all("basic_auth" in body or "forward_auth" in body for body in sites.values())
    ingresses = [d for d in _k8s_docs() if d["kind"] == "Ingress"]
    for ingress in ingresses:
        backends = {
            p["backend"]["service"]["name"]
            for rule in ingress["spec"]["rules"]
            for p in rule["http"]["paths"]
        }
        signed = "nginx.ingress.kubernetes.io/auth-url" in ingress["metadata"]["annotations"]
        api_paths = {
            p["path"]
            for rule in ingress["spec"]["rules"]
            for p in rule["http"]["paths"]
            if p["backend"]["service"]["name"] == "api"
        }
        assert signed or backends <= {"streamlit", "api"}, ingress["metadata"]["name"]
        assert signed or api_paths <= {"/api/"}, ingress["metadata"]["name"]
    deny = [
        d for d in _k8s_docs() if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"] == {}
    ]
    assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"]


def test_the_dashboard_runs_for_users_with_read_and_operator_urls_only():
    """Everywhere the dashboard runs: viewer mode with the cookie route as `emps up` starts it,
    and only the reader's and operator's database URLs, never the owner's or a writer's."""
    from emps.supervisor import streamlit_command

    local = streamlit_command(8501)[1:]  # after the program
    local[1] = "src/emps/dashboard/serve.py"
    flags = dict(zip(local[2::2], local[3::2], strict=True))
    for where, spec in containers():
        if "streamlit" not in spec.get("command", []):
            continue
        command = spec["command"]
        assert command[1:3] == ["run", "src/emps/dashboard/serve.py"], where
        given = dict(zip(command[3::2], command[4::2], strict=True))
        for flag in ("--client.toolbarMode", "--client.showErrorDetails", "--server.headless"):
            assert given.get(flag) == flags[flag], (where, flag)
        names = env_names(where, spec)
        assert {"EMPS_READER_URL", "EMPS_OPERATOR_URL"} <= names, where
        assert not names & {
            "EMPS_DATABASE_URL",
            "EMPS_WRITER_URL",
            "EMPS_INGEST_URL",
            "EMPS_SCORING_URL",
            "EMPS_ALERTING_URL",
        }, where


def test_prefect_requires_its_auth_string_and_csrf_and_mlflow_its_host_names():
    """The Prefect server is started with its auth string, CSRF protection and no CORS wildcard,
    and every Prefect client is given the auth string; MLflow answers only named hosts."""
    k8s_config = {d["metadata"]["name"]: d["data"] for d in _k8s_docs() if d["kind"] == "ConfigMap"}
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())["services"]
    server_env = compose["prefect-server"]["environment"]
    assert "PREFECT_SERVER_API_AUTH_STRING" in server_env
    assert server_env["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"] == "true"
    assert "*" not in server_env["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"]
    assert k8s_config["prefect-server-config"]["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"] == "true"
    assert "*" not in k8s_config["prefect-server-config"]["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"]
    for where, spec in containers():
        command = spec.get("command", [])
        if command[:3] == ["prefect", "server", "start"]:
            assert "PREFECT_SERVER_API_AUTH_STRING" in env_names(where, spec), where
        if command[:2] == ["prefect", "worker"]:
            names = env_names(where, spec)
            if isinstance(spec.get("environment"), dict):
                names |= set(spec["environment"])
            assert "PREFECT_API_AUTH_STRING" in names, where
        if command[:2] == ["mlflow", "server"]:
            hosts = command[command.index("--allowed-hosts") + 1]
            assert "*" not in hosts, where


def test_the_api_runs_with_its_own_role_and_writes_where_the_workers_ingest():
    """Everywhere the HTTP API runs: `emps api` with only the API role's database URL, and the
    landing volume the workers read mounted where it writes its drop files."""
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())["services"]
    found = [(w, s) for w, s in containers() if s.get("command", [])[:2] == ["emps", "api"]]
    assert {w.split(":")[0] for w, _ in found} == {"compose", "emps.yaml"}
    for where, spec in found:
        assert {n for n in env_names(where, spec) if n.endswith("_URL")} == {"EMPS_API_URL"}
    assert compose["api"]["volumes"] == compose["prefect-worker"]["volumes"]
    k8s = {d["metadata"]["name"]: d for d in _k8s_docs() if d["kind"] == "Deployment"}
    mounts = [
        k8s[name]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        for name in ("api", "prefect-worker")
    ]
    assert mounts[0] == mounts[1]

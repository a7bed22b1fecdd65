"""The MLflow server `emps up` runs: it answers only with the platform's credential, and only to
its own host names."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import httpx
import pytest

from emps.credentials import basic_auth_header, load_secrets
from emps.processes import free_port, serving
from emps.settings import PROJECT_ROOT


@pytest.fixture(scope="module")
def mlflow_server(test_home, mlflow_store) -> Iterator[str]:
    port = free_port()
    with serving(
        "the MLflow server",
        [sys.executable, "-m", "emps.cli", "model", "server", "--port", str(port)],
        port,
        "/health",
        test_home / f"mlflow-server-{port}.log",
        env={
            **os.environ,
            "EMPS_MLFLOW_TRACKING_URI": str(mlflow_store["mlflow_tracking_uri"]),
            "EMPS_MLFLOW_ARTIFACT_ROOT": str(mlflow_store["mlflow_artifact_root"]),
        },
        cwd=PROJECT_ROOT,
    ) as server:
        yield server.url


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_mlflow_refuses_requests_without_the_credential(mlflow_server, settings):
    """Without the credential (or with a wrong one) the API answers 401 and asks for it; with
    it, the API works; the health check needs none."""
    assert httpx.get(f"{mlflow_server}/health", timeout=10).status_code == 200
    anonymous = httpx.get(mlflow_server + SEARCH, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    wrong = httpx.get(
        mlflow_server + SEARCH,
        headers={"Authorization": basic_auth_header("emps:guess")},
        timeout=10,
    )
    assert wrong.status_code == 401
    assert (
        httpx.post(
            f"{mlflow_server}/api/2.0/mlflow/experiments/create", json={"name": "x"}, timeout=10
        ).status_code
        == 401
    )
    good = {"Authorization": basic_auth_header(load_secrets(settings).mlflow_auth)}
    assert httpx.get(mlflow_server + SEARCH, headers=good, timeout=10).status_code == 200


def test_mlflow_answers_only_its_own_host_names(mlflow_server, settings):
    """A request naming another host, even a private address MLflow allows by default, is
    refused even with the credential (--allowed-hosts: 127.0.0.1 and localhost, this port)."""
    good = {"Authorization": basic_auth_header(load_secrets(settings).mlflow_auth)}
    port = mlflow_server.rsplit(":", 1)[1]
    for host in ("attacker.example", f"192.168.1.20:{port}", f"127.0.0.1:{int(port) + 1}"):
        rebound = httpx.get(mlflow_server + SEARCH, headers={**good, "Host": host}, timeout=10)
        assert rebound.status_code == 403, host
    own = httpx.get(
        mlflow_server + SEARCH, headers={**good, "Host": f"localhost:{port}"}, timeout=10
    )
    assert own.status_code == 200

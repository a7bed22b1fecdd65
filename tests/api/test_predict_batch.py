"""Batch prediction against the real service: many equipment in one call, the whole fleet a page
at a time, per-equipment refusals, and `emps predict` through the API or, failing it, in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from api_support import API_ENV

from emps.commands.predict import save_token
from emps.db import Role, connect
from emps.ml import synthetic
from emps.processes import free_port
from emps.settings import Settings
from emps.users import add_user, mint_token

V1 = "/api/v1"
PREDICT = f"{V1}/predictions/predict"
NO_FEATURES = "APIBATCH-NEW"


@dataclass
class Scored:
    settings: Settings
    token: str
    ids: list[str]  # registered, with features, in id order


@pytest.fixture
def scored(api, db, champion) -> Scored:
    """The champion's 30 synthetic equipment with their last day of features, one more
    registered equipment without any, and a Viewer's token."""
    settings, examples = champion
    tail = examples[examples["ts"] > examples["ts"].max() - pd.Timedelta(days=1)]
    synthetic.load_examples(tail, settings, settings.ml.features_relation)
    with connect(Role.OWNER, db, autocommit=True) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site) "
            "select %s, equipment_type, site from raw.equipment limit 1",
            (NO_FEATURES,),
        )
        viewer = add_user(
            conn, f"batch-{uuid.uuid4().hex[:8]}", "Viewer", "a long enough password", rounds=4
        )
        token = mint_token(conn, viewer.username, "batch test", 1)[0]
    return Scored(settings, token, sorted(tail["equipment_id"].unique()))


def _what_if(settings: Settings) -> dict[str, float]:
    """An override of the model's first feature, far from its usual values."""
    from emps.ml.predict import load_champion

    return {load_champion(settings).model.feature_names[0]: 1e6}


def test_many_ids_are_scored_in_one_call_as_one_at_a_time(api, scored):
    """One request scores many equipment, in the order asked, each with the figures of a
    one-equipment prediction (what-if included); unknown and feature-less ids are reported
    per id without failing the others."""
    from emps.ml.predict import predict_equipment

    asked = [*reversed(scored.ids), "NOPE-1", NO_FEATURES, scored.ids[0]]
    what_if = _what_if(scored.settings)
    with api.client(scored.token) as client:
        plain = client.post(PREDICT, json={"equipment_ids": asked})
        changed = client.post(PREDICT, json={"equipment_ids": asked, "overrides": what_if})
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert [p["equipment_id"] for p in body["predictions"]] == list(reversed(scored.ids))
    assert [(n["equipment_id"], n["reason"]) for n in body["not_scored"]] == [
        ("NOPE-1", "not_registered"),
        (NO_FEATURES, "no_features"),
    ]
    assert all(n["equipment_id"] in n["detail"] for n in body["not_scored"])
    assert changed.status_code == 200, changed.text
    for answer, other in zip(body["predictions"], changed.json()["predictions"], strict=True):
        expected = predict_equipment(answer["equipment_id"], settings=scored.settings)
        assert answer["failure_probability"] == pytest.approx(expected["failure_probability"])
        assert answer["severity"] == expected["severity"]
        assert answer["explanation"] == expected["explanation"]
        assert answer["ts"] == expected["ts"]
        if_changed = predict_equipment(answer["equipment_id"], what_if, scored.settings)
        assert other["what_if"] == what_if
        assert other["failure_probability"] == pytest.approx(if_changed["failure_probability"])
    assert len({p["failure_probability"] for p in body["predictions"]}) > 1


def test_requests_arriving_together_each_get_their_own_answer(api, scored):
    """Many clients asking at once (the server makes their predictions in shared calls) each
    get the predictions of the ids they asked, in their order, with their own refusals, and
    the figures a request alone gets."""
    from concurrent.futures import ThreadPoolExecutor

    asks = [
        [scored.ids[k % len(scored.ids)], scored.ids[(3 * k + 1) % len(scored.ids)]]
        for k in range(24)
    ]
    asks[5] = [scored.ids[2], "NOPE-5"]
    asks[9] = ["NOPE-9"]

    def ask(ids: list[str]) -> tuple[int, dict]:
        with api.client(scored.token) as client:
            answer = client.post(PREDICT, json={"equipment_ids": ids})
        return answer.status_code, answer.json()

    with api.client(scored.token) as client:
        alone = {
            i: client.post(PREDICT, json={"equipment_ids": [i]}).json()["predictions"][0]
            for i in scored.ids
        }
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, asks))
    for ids, (status, body) in zip(asks, answers, strict=True):
        if ids == ["NOPE-9"]:
            assert status == 404 and [n["equipment_id"] for n in body["not_scored"]] == ids
            continue
        assert status == 200, body
        known = [i for i in dict.fromkeys(ids) if i in alone]
        assert [p["equipment_id"] for p in body["predictions"]] == known
        assert [n["equipment_id"] for n in body["not_scored"]] == [i for i in ids if i not in alone]
        for prediction in body["predictions"]:
            expected = alone[prediction["equipment_id"]]
            assert prediction["failure_probability"] == expected["failure_probability"]
            assert prediction["explanation"] == expected["explanation"]


def test_all_pages_through_every_registered_equipment(api, scored):
    """`all` scores every registered equipment once, a page of `limit` at a time until
    next_offset is null, and names the one without features."""
    seen, missing, offset, pages = [], [], 0, 0
    with api.client(scored.token) as client:
        while offset is not None:
            answer = client.post(PREDICT, json={"all": True, "limit": 7, "offset": offset})
            assert answer.status_code == 200, answer.text
            page = answer.json()
            assert len(page["predictions"]) + len(page["not_scored"]) <= 7
            seen += [p["equipment_id"] for p in page["predictions"]]
            missing += [n["equipment_id"] for n in page["not_scored"]]
            offset, pages = page["next_offset"], pages + 1
    assert seen == scored.ids
    assert missing == [NO_FEATURES]
    assert pages == -(-(len(scored.ids) + 1) // 7)


def test_a_batch_nothing_of_which_can_be_scored_is_refused_with_the_reasons(api, scored):
    """Only unknown ids: 404; only an id without features: 409; both name each id; more ids
    than the limit, or ids and `all` together, are 422 naming the field."""
    with api.client(scored.token) as client:
        unknown = client.post(PREDICT, json={"equipment_ids": ["NOPE-1", "NOPE-2"]})
        waiting = client.post(PREDICT, json={"equipment_ids": [NO_FEATURES, "NOPE-1"]})
        too_many = client.post(PREDICT, json={"equipment_ids": [f"X-{i}" for i in range(501)]})
        both = client.post(PREDICT, json={"equipment_ids": scored.ids[:1], "all": True})
    assert unknown.status_code == 404
    assert [n["equipment_id"] for n in unknown.json()["not_scored"]] == ["NOPE-1", "NOPE-2"]
    assert "NOPE-2" in unknown.json()["detail"]
    assert waiting.status_code == 409 and NO_FEATURES in waiting.json()["detail"]
    assert {n["reason"] for n in waiting.json()["not_scored"]} == {"no_features", "not_registered"}
    assert too_many.status_code == 422 and "'equipment_ids'" in too_many.json()["detail"]
    assert both.status_code == 422 and "'equipment_ids'" in both.json()["detail"]


def _emps(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("emps")), "predict", *args],
        env={**os.environ, **API_ENV, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_emps_predict_goes_through_the_api(api, scored, tmp_path):
    """`emps predict` with a saved token asks the API (it works with no model registry of its
    own), prints the in-process figures, pages --all, names unknown ids, never shows the
    token, and refuses a token the API refuses instead of scoring elsewhere."""
    from emps.ml.predict import predict_many

    token_file = tmp_path / "token"
    save_token(scored.token, scored.settings.replace(api={"token_file": token_file}))
    assert token_file.stat().st_mode & 0o777 == 0o600
    env = {
        "EMPS_API_BASE_URL": api.url,
        "EMPS_API_TOKEN_FILE": str(token_file),
        # Scoring in this process would fail: the answers can only come from the API.
        "EMPS_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}",
        "EMPS_API_PREDICT_MAX": "7",
    }
    named = _emps([*scored.ids[:3], "NOPE-1", "--json"], env)
    every = _emps(["--all", "--json"], env)
    refused = _emps([scored.ids[0]], {**env, "EMPS_API_TOKEN": "emps_not-a-token"})
    text = _emps([scored.ids[0]], env)

    expected = {
        p["equipment_id"]: p for p in predict_many(scored.ids, settings=scored.settings).predictions
    }
    assert named.returncode == 1, named.stderr
    answers = _lines(named.stdout)
    assert [a["equipment_id"] for a in answers] == scored.ids[:3]
    for answer in answers:
        assert (
            answer["failure_probability"] == expected[answer["equipment_id"]]["failure_probability"]
        )
    assert "NOPE-1 is not registered" in named.stderr
    assert "in this process" not in named.stderr

    assert every.returncode == 0, every.stderr
    assert [a["equipment_id"] for a in _lines(every.stdout)] == scored.ids
    assert NO_FEATURES in every.stderr

    assert refused.returncode == 1 and "refused the token" in refused.stderr
    assert refused.stdout == ""

    assert text.returncode == 0, text.stderr
    assert scored.ids[0] in text.stdout and "what pushes the risk up" in text.stdout
    for result in (named, every, refused, text):
        assert scored.token not in result.stdout + result.stderr


# What scoring in-process needs and a call through the API must not wait for: importing them
# took longer than the whole call (bench/predict_cli.py).
HEAVY = ("psycopg", "pandas", "numpy", "sklearn", "mlflow", "prefect", "dbt", "great_expectations")
REPORT_IMPORTS = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('imported:', *sorted(sys.modules), file=sys.stderr))\n"
    "from emps.cli import app\n"
    "app()\n"
)


def test_emps_predict_through_the_api_starts_without_the_heavy_libraries(api, scored, tmp_path):
    """`emps predict ID --json` answered by the API imports neither the database driver nor
    the data and ML stack: a shell user waits for a process start and one request."""
    token_file = tmp_path / "token"
    save_token(scored.token, scored.settings.replace(api={"token_file": token_file}))
    done = subprocess.run(
        [sys.executable, "-c", REPORT_IMPORTS, "predict", scored.ids[0], "--json"],
        env={
            **os.environ,
            **API_ENV,
            "EMPS_API_BASE_URL": api.url,
            "EMPS_API_TOKEN_FILE": str(token_file),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout)[0]["equipment_id"] == scored.ids[0]
    assert "in this process" not in done.stderr
    report = next(line for line in done.stderr.splitlines() if line.startswith("imported:"))
    imported = {name.split(".")[0] for name in report.split()[1:]}
    assert "emps" in imported and "typer" in imported
    assert not imported & set(HEAVY), f"imported {sorted(imported & set(HEAVY))}"


def test_emps_predict_scores_in_process_when_the_api_does_not_answer(api, scored, tmp_path):
    """With the API down, `emps predict` says so on stderr and gives the same figures from its
    own process; a token file others can read is not used."""
    from emps.ml.predict import predict_many

    loose = tmp_path / "token"
    loose.write_text(scored.token)
    loose.chmod(0o644)
    env = {"EMPS_API_BASE_URL": f"http://127.0.0.1:{free_port()}", "EMPS_API_TOKEN": scored.token}
    down = _emps([*scored.ids[:2], "--json"], env)
    unsafe = _emps(
        [scored.ids[0], "--json"],
        {"EMPS_API_BASE_URL": api.url, "EMPS_API_TOKEN_FILE": str(loose)},
    )
    expected = predict_many(scored.ids[:2], settings=scored.settings).predictions
    assert down.returncode == 0, down.stderr
    assert "did not answer" in down.stderr and "scoring in this process" in down.stderr
    assert [a["failure_probability"] for a in _lines(down.stdout)] == [
        p["failure_probability"] for p in expected
    ]
    assert unsafe.returncode == 0, unsafe.stderr
    assert "not using the token file" in unsafe.stderr and "chmod 600" in unsafe.stderr
    assert _lines(unsafe.stdout)[0]["failure_probability"] == expected[0]["failure_probability"]

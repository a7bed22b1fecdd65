"""The dbt project's documentation as `emps dbt docs` shows it: every mart column described, and
the dashboard, the API and the model listed as exposures of the marts they read."""

from __future__ import annotations

import json
import re

import pytest
from dbt.cli.main import dbtRunner

from emps import transform
from emps.catalog import load_catalog
from emps.queries import DASHBOARD_MARTS
from emps.settings import Settings

# A column listed once for every catalog channel, sensor or feature window
# (mart_sensor_readings.yml, fct_equipment_features.yml).
PLACEHOLDERS = ("<channel>", "<sensor>", "<k>")


def documented(columns: dict, settings: Settings) -> list[tuple[re.Pattern, str]]:
    """(name pattern, description) per column a model's yml lists: exact names, and the names
    of the installed catalog's channels, sensors and windows for `<channel>`, `<sensor>` and
    `<k>`."""
    catalog = load_catalog(settings.catalog_path)
    values = {
        "<channel>": "|".join(re.escape(c) for c in catalog.channel_names),
        "<sensor>": "|".join(re.escape(s) for s in catalog.sensor_names),
        "<k>": "|".join(str(k) for k in range(1, catalog.window_count + 1)),
    }
    patterns = []
    for name, column in columns.items():
        regex = re.escape(name.lower())
        for placeholder in PLACEHOLDERS:
            regex = regex.replace(re.escape(placeholder), f"(?:{values[placeholder]})")
        patterns.append((re.compile(regex), column.get("description", "").strip()))
    return patterns


@pytest.fixture
def docs(writer, db):
    """The manifest and catalog of `emps dbt docs` over freshly built marts."""
    summary = transform.run_dbt(
        transform.dbt_args(["run"], db, select=["+marts"], full_refresh=True), db
    )
    assert summary.success, summary.describe_failures()
    transform.docs(db)
    target = transform.dbt_paths(db)[0]
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    catalog = json.loads((target / "catalog.json").read_text(encoding="utf-8"))
    return manifest, catalog


def marts(manifest: dict) -> dict[str, dict]:
    return {
        node["name"]: node
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["fqn"][1] == "marts"
    }


def test_every_column_of_every_mart_has_a_description(docs, db):
    """Each column the database holds for a mart (the docs catalog) has a one-line description
    in its model's yml, and each mart has a description of its own."""
    manifest, catalog = docs
    models = marts(manifest)
    assert set(DASHBOARD_MARTS) <= set(models)
    undocumented = []
    for unique_id, node in manifest["nodes"].items():
        if node["name"] not in models:
            continue
        assert node["description"].strip(), f"{node['name']} has no description"
        known = documented(node["columns"], db)
        built = catalog["nodes"][unique_id]["columns"]
        assert built, f"{node['name']} has no columns in the docs catalog"
        for name in built:
            descriptions = [text for pattern, text in known if pattern.fullmatch(name.lower())]
            if not any(descriptions):
                undocumented.append(f"{node['name']}.{name}")
    assert not undocumented, "columns without a description: " + ", ".join(undocumented)


def test_exposures_list_the_dashboard_the_api_and_the_model(db):
    """`dbt ls --resource-type exposure` lists the dashboard, the HTTP API and the failure model,
    each depending on the marts it reads; those marts sit in the folder of their consumer."""
    args = transform.dbt_args(
        ["ls"],
        db,
        extra=["--resource-type", "exposure", "--output", "json", "--output-keys", "name"],
    )
    result = dbtRunner().invoke(args)
    assert result.success, result.exception
    names = {json.loads(line)["name"] for line in result.result}
    assert {"dashboard", "http_api", "failure_model"} <= names

    manifest = json.loads((transform.dbt_paths(db)[0] / "manifest.json").read_text("utf-8"))
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    assert exposures["dashboard"]["type"] == "dashboard"
    assert exposures["http_api"]["type"] == "application"
    assert exposures["failure_model"]["type"] == "ml"

    def reads(exposure: str) -> set[str]:
        return {node.split(".")[-1] for node in exposures[exposure]["depends_on"]["nodes"]}

    features = db.ml.features_relation.split(".")[-1]
    examples = db.ml.examples_relation.split(".")[-1]
    assert {"mart_equipment_health", "mart_maintenance_schedule"} <= reads("dashboard")
    assert {"mart_equipment_health", "mart_equipment_latest_prediction"} <= reads("http_api")
    assert {features, examples} <= reads("failure_model")
    folders = {name: node["fqn"][2] for name, node in marts(manifest).items()}
    assert {folders[name] for name in DASHBOARD_MARTS} == {"dashboard"}
    assert folders[features] == folders[examples] == "ml"

"""Great Expectations Data Docs for the ingest validations (`emps quality docs`).

Ingest runs keep each batch's validation result as JSON under <home>/gx/results (pruned to the
last `ingest_keep_validations`); this builds a file-backed GX project beside them, adds the suite
and those results to it, and renders the static Data Docs site.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from emps.catalog import load_catalog
from emps.ingest.validate import SUITE_NAME, load_suite
from emps.settings import Settings, get_settings


def build_data_docs(settings: Settings | None = None) -> tuple[Path, int]:
    """Render Data Docs; returns the site's index.html and how many validation results it shows."""
    settings = settings or get_settings()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResultSchema,
    )
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    root = settings.home / "gx"
    results_dir = root / "results"
    root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=root)

    suite = load_suite(load_catalog(settings.catalog_path))
    existing = {s.name for s in context.suites.all()}
    if SUITE_NAME in existing:
        context.suites.delete(SUITE_NAME)
    context.suites.add(
        gx.ExpectationSuite(
            name=SUITE_NAME, expectations=suite["expectations"], meta=suite.get("meta")
        )
    )

    schema = ExpectationSuiteValidationResultSchema()
    count = 0
    for path in sorted(results_dir.glob("*.json")) if results_dir.exists() else []:
        result = schema.load(json.loads(path.read_text(encoding="utf-8")))
        run_time = datetime.strptime(path.stem.split("-")[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=SUITE_NAME),
            run_id=RunIdentifier(run_name="ingest", run_time=run_time),
            batch_identifier=path.stem,
        )
        context.validation_results_store.set(key, result)
        count += 1
    sites = context.build_data_docs()
    url = next(iter(sites.values()))
    return Path(url.removeprefix("file://")), count

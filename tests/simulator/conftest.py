"""Fixtures of the simulator tests: the default catalog and small seeded fleets."""

from __future__ import annotations

import pytest

from emps.catalog import Catalog, load_catalog
from emps.settings import Settings


@pytest.fixture
def catalog(settings: Settings) -> Catalog:
    return load_catalog(settings.catalog_path)

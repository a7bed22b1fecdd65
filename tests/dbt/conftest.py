"""dbt fixtures: a connection to write readings straight into raw tables."""

from __future__ import annotations

import pytest

from emps.db import Role, connect
from emps.settings import Settings


@pytest.fixture
def writer(db: Settings):
    """An autocommitting owner connection on the emptied session database."""
    with connect(Role.OWNER, db, autocommit=True) as conn:
        yield conn

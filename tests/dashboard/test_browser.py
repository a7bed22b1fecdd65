"""The dashboard in a real browser: Playwright driving Debian's chromium against `streamlit run`."""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from emps.db import Role, connect
from emps.processes import free_port, serving
from emps.settings import PROJECT_ROOT

pytestmark = pytest.mark.browser
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "dashboard"
REPLAY_TIMEOUT_MS = 240_000  # a first replay, model load included, on a slow loaded machine
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def _serving(log_path: Path, **env: str) -> Iterator[str]:
    """The dashboard as `emps up` serves it (src/emps/dashboard/serve.py, viewer mode) on a free
    port, against the seeded test database; yields its URL."""
    from emps.supervisor import streamlit_command

    port = free_port()
    with serving(
        "streamlit",
        streamlit_command(port),
        port,
        "/_stcore/health",
        log_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},  # EMPS_*: the test database
        timeout_s=90,
        cwd=PROJECT_ROOT,
    ) as server:
        yield server.url


@pytest.fixture
def dashboard(fleet, tmp_path: Path) -> Iterator[str]:
    with _serving(tmp_path / "streamlit.log") as url:
        yield url


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            viewport={"width": 1400, "height": 1800}, accept_downloads=True
        )
        context.set_default_timeout(60_000)
        yield context
        browser.close()


def _sign_in(page, url: str, path: str, password: str, username: str = "admin") -> None:
    page.goto(f"{url}{path}")
    page.get_by_text("EMPS — sign in").wait_for()
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Streamlit draws a grey skeleton while a widget's code loads (seconds on a busy machine):
    # a screenshot taken then shows placeholders instead of figures, tables and charts.
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0"
    )
    page.wait_for_timeout(1500)  # let charts finish drawing before the screenshot
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _open(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title if title != "Admin" else "Administration").wait_for()


def test_browser_walkthrough(dashboard, browser_page, fleet):
    """Sign in, overview, into an equipment, acknowledge an alert, download a CSV, every page."""
    page = browser_page.new_page()
    _sign_in(page, dashboard, "/", fleet.password)
    page.get_by_role("heading", name="Fleet overview").wait_for()
    page.get_by_text("Health by site").wait_for()
    _shot(page, "01-overview")

    page.get_by_role("button", name="Open detail").click()  # the most at-risk equipment
    page.get_by_role("heading", name="Sensor trends").wait_for()
    assert "equipment=GEN-0001" in page.url
    page.get_by_text("CRITICAL").first.wait_for()
    _shot(page, "02-equipment")

    _open(page, "Alerts")
    page.get_by_text("Act on an alert").wait_for()
    page.get_by_label("Note").fill("crew on the way")
    page.get_by_role("button", name="Acknowledge", exact=True).click()
    page.get_by_text(f"Alert #{fleet.critical_alert} acknowledged.").wait_for()
    with connect(Role.OWNER) as conn:
        status, by = conn.execute(
            "select status, acknowledged_by from ops.alerts where id = %s", (fleet.critical_alert,)
        ).fetchone()
    assert (status, by) == ("acknowledged", "admin")
    _shot(page, "03-alerts")

    for number, title in enumerate(["Maintenance", "Analytics", "Data quality", "Admin"], start=4):
        _open(page, title)
        _shot(page, f"{number:02d}-{title.lower().replace(' ', '-')}")
        assert page.locator("#xss").count() == 0  # the seeded HTML note never becomes markup

    _open(page, "Reports")
    page.get_by_role("button", name="Generate report").click()
    page.get_by_role("button", name="Download CSV").wait_for()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert sorted(r["equipment_id"] for r in rows) == [
        "GEN-0001",
        "GEN-0002",
        "PMP-0001",
        "RAD-0001",
        "VEH-0001",
    ]
    _shot(page, "08-reports")


def test_browser_shows_the_backtest_chart_and_the_bands_preview(
    replay_champion, fleet, browser_page, tmp_path
):
    """Analytics draws the champion's backtest per week; the Admin page says what lower bands
    would have done over the last weeks next to the bands in force, before anything is saved."""
    expected = replay_champion
    with _serving(tmp_path / "streamlit.log") as url:
        page = browser_page.new_page()
        _sign_in(page, url, "/", fleet.password)
        page.get_by_role("heading", name="Fleet overview").wait_for()
        _open(page, "Analytics")
        page.get_by_text("Backtest: the champion replayed over this range").wait_for()
        # The first replay loads scikit-learn and the champion into the app's process, which
        # takes over a minute on a slow machine; then the figure, or why there is none.
        warned = page.get_by_test_id("stMetric").filter(has_text="Failures warned")
        no_backtest = page.get_by_text("No backtest:")
        warned.or_(no_backtest).first.wait_for(timeout=REPLAY_TIMEOUT_MS)
        assert no_backtest.count() == 0, no_backtest.first.inner_text()
        value = warned.get_by_test_id("stMetricValue").inner_text()
        assert value == f"{expected.warned} of {expected.failures}"
        for title in ("Alert episodes per week", "Failures per week: warned, late, missed"):
            page.get_by_test_id("stVegaLiteChart").filter(has_text=title).wait_for()
        _shot(page, "10-analytics-backtest")

        _open(page, "Admin")
        current = f"{expected.alerts} alerts, {expected.warned} of {expected.failures} failures"
        # Another range: a replay of its own
        page.get_by_text(f"With the current bands, last 8 weeks: {current}").wait_for(
            timeout=REPLAY_TIMEOUT_MS
        )
        for label, value in (
            ("severity medium", expected.lower_medium),
            ("severity high", expected.lower_high),
        ):
            field = page.get_by_role("spinbutton", name=label)
            field.fill(str(value))
            field.press("Enter")
        lower = f"{expected.alerts_lower_high} alerts, {expected.warned} of {expected.failures}"
        page.get_by_text(f"With these bands, last 8 weeks: {lower}").wait_for()
        _shot(page, "11-admin-bands-preview")
    with connect(Role.OWNER) as conn:
        saved = conn.execute("select count(*) from ops.audit_log where action = 'threshold.update'")
        assert saved.fetchone()[0] == 0


def test_browser_deep_link_survives_sign_in(dashboard, browser_page, fleet):
    """A shared link to an equipment asks for sign-in, then opens that equipment."""
    page = browser_page.new_page()
    _sign_in(page, dashboard, "/?equipment=RAD-0001", fleet.password, username="viewer")
    page.get_by_role("heading", name="Sensor trends").wait_for()
    assert "equipment=RAD-0001" in page.url
    page.get_by_text("HIGH").first.wait_for()
    _open(page, "Alerts")
    assert page.get_by_role("button", name="Acknowledge", exact=True).is_disabled()
    assert page.get_by_test_id("stSidebarNav").get_by_text("Admin", exact=True).count() == 0


IDLE_S = 12  # EMPS_SESSION_IDLE_S of the session test's dashboard


def test_browser_session_survives_a_reload_follows_the_role_and_ends_when_idle(
    fleet, browser_page, tmp_path
):
    """A sign-in survives a reload (the HttpOnly session cookie); an admin demoted meanwhile has
    no Admin page at the next page load; left idle longer than EMPS_SESSION_IDLE_S the session
    ends. The page is in viewer mode: no Deploy button or developer menu."""
    with _serving(tmp_path / "streamlit.log", EMPS_SESSION_IDLE_S=str(IDLE_S)) as url:
        page = browser_page.new_page()
        nav = page.get_by_test_id("stSidebarNav")
        _sign_in(page, url, "/", fleet.password)
        page.get_by_role("heading", name="Fleet overview").wait_for()
        nav.get_by_text("Admin", exact=True).wait_for()
        assert page.get_by_role("button", name="Deploy").count() == 0
        assert page.get_by_test_id("stMainMenu").count() == 0 or not _has_developer_items(page)

        def session_cookie() -> dict | None:
            return next((c for c in browser_page.cookies() if c["name"] == "emps_session"), None)

        deadline = time.monotonic() + 30
        while session_cookie() is None and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        cookie = session_cookie()
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        page.reload()
        page.get_by_role("heading", name="Fleet overview").wait_for()
        assert page.get_by_text("EMPS — sign in").count() == 0
        nav.get_by_text("Admin", exact=True).wait_for()

        with connect(Role.OWNER, autocommit=True) as conn:
            conn.execute("update ops.users set role = 'Technician' where username = 'admin'")
        nav.get_by_text("Alerts", exact=True).click()  # the next page load
        page.get_by_role("heading", name="Alerts").wait_for()
        assert nav.get_by_text("Admin", exact=True).count() == 0

        page.wait_for_timeout((IDLE_S + 2) * 1000)
        page.reload()
        page.get_by_text("EMPS — sign in").wait_for()


def _has_developer_items(page) -> bool:
    """Whether the app menu offers developer entries (rerun, clear cache, deploy)."""
    page.get_by_test_id("stMainMenu").click()
    found = any(
        page.get_by_text(label, exact=True).count()
        for label in ("Rerun", "Clear cache", "Deploy this app")
    )
    page.keyboard.press("Escape")
    return found


def test_browser_first_sign_in_with_a_temporary_password_asks_for_a_new_one(
    dashboard, browser_page, fleet
):
    """A user whose password an admin set must choose their own before seeing anything."""
    from emps.db import Role, connect
    from emps.users import set_password

    with connect(Role.OWNER, autocommit=True) as conn:
        set_password(conn, "viewer", "temporary-pass-1", must_change_password=True)
    page = browser_page.new_page()
    _sign_in(page, dashboard, "/", "temporary-pass-1", username="viewer")
    page.get_by_role("heading", name="Choose your password").wait_for()
    assert page.get_by_test_id("stSidebarNav").count() == 0
    page.get_by_label("Current password").fill("temporary-pass-1")
    page.get_by_label("New password", exact=True).fill("the-viewers-own-1")
    page.get_by_label("New password again").fill("the-viewers-own-1")
    page.get_by_role("button", name="Change password").click()
    page.get_by_role("heading", name="Fleet overview").wait_for()

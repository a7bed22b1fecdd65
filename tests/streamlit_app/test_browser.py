"""The dashboard in a real browser: Playwright driving Debian's chromium against `streamlit run`."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ports import free_port

from emps.db import Role, connect
from emps.settings import PROJECT_ROOT

ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def dashboard(fleet, tmp_path: Path) -> Iterator[str]:
    """`streamlit run` on a free port against the seeded test database; yields its URL."""
    port = free_port()
    log = (tmp_path / "streamlit.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(PROJECT_ROOT / "streamlit_app" / "streamlit_app.py"),
            "--server.headless=true",
            f"--server.port={port}",
            "--server.address=127.0.0.1",
            "--server.fileWatcherType=none",
            "--browser.gatherUsageStats=false",
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # EMPS_* point at the test database
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=PROJECT_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "streamlit.log").read_text()
            assert time.monotonic() < deadline, "streamlit did not start within 90 s"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


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

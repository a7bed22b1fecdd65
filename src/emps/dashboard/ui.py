"""Shared pieces of the dashboard pages: the signed-in user, filters, colours, safe text."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import altair as alt
import streamlit as st

from emps import actions
from emps.dashboard import data
from emps.domain import Severity
from emps.users import MIN_PASSWORD_LENGTH, User, UserError, change_password

SEVERITY_ORDER = [s.value for s in Severity]
SEVERITY_COLORS = [s.color for s in Severity]
SEVERITY_SCALE = alt.Scale(domain=SEVERITY_ORDER, range=SEVERITY_COLORS)
RANGES = {"Last 24 hours": 1, "Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90}
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def plain(text: object) -> str:
    """Text from users or devices made inert for Streamlit's markdown (no links, HTML or styling)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def current_user() -> User | None:
    """The user the router found for this run (emps.dashboard.session asks the database)."""
    return st.session_state.get("user")


def require_user() -> User:
    user = current_user()
    if user is None:  # pages only run behind the sign-in gate; this guards direct imports
        st.stop()
    return user


def change_password_form(user: User, client: str) -> None:
    """The signed-in user's own new password (their other sessions end)."""
    with st.form("change_password", clear_on_submit=True):
        current = st.text_input("Current password", type="password")
        new = st.text_input(
            "New password", type="password", help=f"At least {MIN_PASSWORD_LENGTH} characters"
        )
        again = st.text_input("New password again", type="password")
        submitted = st.form_submit_button("Change password")
    if not submitted:
        return
    if new != again:
        st.error("The two new passwords differ.")
        return
    try:
        change_password(user, current, new, client)
    except UserError as exc:
        st.error(plain(exc))
        return
    flash("Password changed; your other sessions were signed out.")
    st.rerun()


def pick_range(key: str, default: str = "Last 7 days") -> tuple[datetime, datetime]:
    """A time-range picker: presets or custom dates, returned as UTC datetimes."""
    options = [*RANGES, "Custom dates"]
    choice = st.selectbox("Time range", options, index=options.index(default), key=f"{key}_range")
    # Whole minutes, so reruns within a minute hit the cache.
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    if choice != "Custom dates":
        return now - timedelta(days=RANGES[choice]), now
    today = now.date()
    picked = st.date_input(
        "From / to", (today - timedelta(days=7), today), max_value=today, key=f"{key}_dates"
    )
    start, end = picked if isinstance(picked, tuple) and len(picked) == 2 else (today, today)
    return _utc(start), _utc(end) + timedelta(days=1)


def _utc(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def as_of(value: Any) -> str:
    """A refresh time for captions: "27 Nov 14:05 UTC", or "never" before the first refresh."""
    if value is None or value != value:  # None, NaT or NaN
        return "never"
    return f"{value.astimezone(UTC):%d %b %H:%M} UTC"


def empty_note(what: str) -> None:
    st.info(f"No {what} yet.")


def flash(message: str) -> None:
    """A success message shown once, after the rerun that follows a write."""
    st.session_state["flash"] = message


def show_flash() -> None:
    if message := st.session_state.pop("flash", None):
        st.success(message)


def run_action(action: Callable[[], object], done: str) -> None:
    """Run a dashboard write; on success forget the cached reads and rerun with `done` shown,
    else say why it was refused."""
    try:
        action()
    except (actions.NotAllowed, actions.ActionFailed) as exc:
        st.error(plain(exc))
    else:
        data.clear()
        flash(done)
        st.rerun()

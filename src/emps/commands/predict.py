"""`emps predict ID [ID ...] | --all`: failure risk now, from each equipment's latest features.

Through the HTTP API when it answers and a user token is at hand (EMPS_API_TOKEN, or the token
file `emps user token USER --save` writes): the API keeps the champion loaded, so a call costs a
process start and one request. Otherwise in this process, which first loads the model
(seconds). This module imports nothing heavy: the in-process path imports emps.ml.predict when used,
and rich is imported only to show a table or a message (`--json` through the API prints without it).
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import typer

from emps.settings import Settings, get_settings

if TYPE_CHECKING:
    from rich.console import Console

PREDICT_ROUTE = "/api/v1/predictions/predict"
TOKEN_HINT = "set EMPS_API_TOKEN, or save one with `emps user token USER --save`"


class Unreachable(Exception):
    """The API did not answer (not running, wrong address): predict in this process."""


class Refused(Exception):
    """The API answered with an error that scoring here would not cure."""


@dataclass
class Answer:
    predictions: list[dict[str, Any]] = field(default_factory=list)
    not_scored: list[dict[str, str]] = field(default_factory=list)


@cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    return Console(stderr=stderr)


def _fail(message: str) -> typer.Exit:
    _console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


def _note(message: str) -> None:
    _console(stderr=True).print(
        f"[yellow]note:[/yellow] {message}", highlight=False, soft_wrap=True
    )


def read_token(settings: Settings) -> str | None:
    """The user token for the API: EMPS_API_TOKEN, else the token file when only its owner can
    read it (a token others could read is not used, as ssh treats keys), else None."""
    if settings.api.token is not None:
        return settings.api.token.get_secret_value().strip() or None
    path = settings.api_token_path
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        _note(f"cannot read the token file {path} ({exc.strerror}); {TOKEN_HINT}")
        return None
    with os.fdopen(fd, encoding="utf-8") as handle:
        info = os.fstat(handle.fileno())
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or info.st_uid != os.getuid():
            _note(
                f"not using the token file {path}: others can read it or it is not yours; "
                f"`chmod 600 {path}` if it is yours, else mint a new token"
            )
            return None
        return handle.read().strip() or None


def save_token(token: str, settings: Settings) -> str:
    """Write the token file (mode 0600, replaced atomically); returns its path."""
    path = settings.api_token_path
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return str(path)


def _post(settings: Settings, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST the body to the predict route: (status, JSON answer); Unreachable when no answer."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        settings.api.endpoint + PREDICT_ROUTE,
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "emps-cli",
        },
        method="POST",
    )
    # No proxy: the token goes to the API's address and nowhere else.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as answer:
        try:
            return answer.code, json.loads(answer.read())
        except ValueError:
            return answer.code, {"detail": f"HTTP {answer.code} {answer.reason}"}
        finally:
            answer.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"{settings.api.endpoint} did not answer ({reason})") from None
    except ValueError as exc:  # an answer that is not JSON: not this API
        raise Unreachable(f"{settings.api.endpoint} is not the EMPS API ({exc})") from None


def predict_through_api(
    settings: Settings,
    token: str,
    equipment_ids: list[str] | None,
    overrides: dict[str, float],
) -> Answer:
    """Predictions from the API: the named equipment in pages of the API's limit, or every
    registered equipment page after page."""
    answer = Answer()
    if equipment_ids is None:
        bodies: Iterator[dict[str, Any]] = iter(())  # pages follow next_offset
        offset: int | None = 0
    else:
        step = settings.api.predict_max
        pages = [equipment_ids[i : i + step] for i in range(0, len(equipment_ids), step)]
        bodies = iter({"equipment_ids": page, "overrides": overrides} for page in pages)
        offset = None
    while True:
        if offset is not None:
            body: dict[str, Any] = {"all": True, "offset": offset, "overrides": overrides}
        else:
            page = next(bodies, None)
            if page is None:
                return answer
            body = page
        status, payload = _post(settings, token, body)
        if status == 401:
            raise Refused(
                f"the API at {settings.api.endpoint} refused the token (unknown, expired or "
                f"revoked); {TOKEN_HINT}, or score here with --local"
            )
        if status in (404, 409) and "not_scored" in payload:
            answer.not_scored.extend(payload["not_scored"])
        elif status != 200:
            raise Refused(f"the API answered {status}: {payload.get('detail', payload)}")
        else:
            answer.predictions.extend(payload["predictions"])
            answer.not_scored.extend(payload["not_scored"])
        if offset is not None:
            offset = payload.get("next_offset")
            if offset is None:
                return answer


def predict_here(
    settings: Settings, equipment_ids: list[str] | None, overrides: dict[str, float]
) -> Answer:
    """Predictions computed in this process (loads the champion: seconds)."""
    from emps.ml.predict import NoChampion, RegistryUnavailable, predict_many

    try:
        batch = predict_many(equipment_ids, overrides, settings)
    except (ValueError, NoChampion, RegistryUnavailable) as error:
        raise Refused(str(error)) from None
    return Answer(batch.predictions, batch.not_scored())


def _overrides(items: list[str] | None) -> dict[str, float]:
    overrides = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            sep = ""
        if not sep or not math.isfinite(number) or not name.strip():
            raise _fail(f"--set {item!r}: expected FEATURE=NUMBER, e.g. vibration=9.5")
        overrides[name.strip()] = number
    return overrides


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.0f}"


def _show_one(result: dict[str, Any]) -> None:
    from rich.table import Table

    from emps.domain import assessment_words, remaining_life_words

    life = remaining_life_words(
        result["remaining_life"], result["life_unit"], result["remaining_life_beyond"]
    )
    _console(stderr=False).print(
        f"[bold]{result['equipment_id']}[/bold] at {result['ts']}: failure probability "
        f"{result['failure_probability']:.2f} within {result['horizon']}, "
        f"severity [bold]{result['severity']}[/bold], health {result['health_score']}"
        + (f", remaining life {life}" if life else "")
        + f" (model v{result['model_version']})"
    )
    if result["assessment"] != "ok":
        _console(stderr=False).print(
            "[yellow]"
            + assessment_words(result["assessment"], result["assessment_reason"])
            + "[/yellow]"
        )
    table = Table(title="what pushes the risk up")
    for column in ("feature", "value", "contribution"):
        table.add_column(column)
    for item in result["explanation"]:
        table.add_row(item["label"], _fmt(item["value"]), f"{item['contribution']:+.3f}")
    _console(stderr=False).print(table)


def _show_many(predictions: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from emps.domain import remaining_life_words

    table = Table(title=f"failure risk now, {len(predictions)} equipment")
    for column in ("equipment", "as of", "probability", "severity", "health", "remaining life"):
        table.add_column(column, no_wrap=True)
    table.add_column("assessment")
    table.add_column("pushed up most by")
    for result in predictions:
        life = remaining_life_words(
            result["remaining_life"], result["life_unit"], result["remaining_life_beyond"]
        )
        top = result["explanation"][0]["label"] if result["explanation"] else ""
        table.add_row(
            result["equipment_id"],
            result["ts"][:16].replace("T", " "),
            f"{result['failure_probability']:.2f}",
            result["severity"],
            str(result["health_score"]),
            life or "",
            result["assessment"],
            top,
        )
    _console(stderr=False).print(table)


def predict(
    equipment_ids: list[str] = typer.Argument(
        None, metavar="EQUIPMENT_ID", help="Equipment ids, e.g. EQ-0042 EQ-0043"
    ),
    equipment: list[str] = typer.Option(
        None, "--equipment", help="An equipment id (repeatable; the same as the arguments)"
    ),
    all_: bool = typer.Option(False, "--all", help="Every registered equipment"),
    set_: list[str] = typer.Option(
        None, "--set", help="What if: FEATURE=VALUE, e.g. --set vibration=9.5 (repeatable)"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print each prediction as one JSON object per line"
    ),
    local: bool = typer.Option(
        False, "--local", help="Score in this process even when the API answers"
    ),
) -> None:
    """Predict failure risk now from the latest features (nothing stored): through the HTTP
    API when it answers and a user token is set (EMPS_API_TOKEN or `emps user token USER
    --save`), else in this process. Exits 1 when a named equipment could not be scored."""
    ids = list(dict.fromkeys([*(equipment_ids or []), *(equipment or [])]))
    if all_ == bool(ids):
        raise _fail("name equipment ids (e.g. `emps predict EQ-0042`), or give --all")
    overrides = _overrides(set_)
    settings = get_settings()
    wanted = None if all_ else ids
    answer = None
    if not local:
        token = read_token(settings)
        if token is None:
            _note(f"no API token ({TOKEN_HINT}); scoring in this process")
        else:
            try:
                answer = predict_through_api(settings, token, wanted, overrides)
            except Unreachable as exc:
                _note(f"the API at {exc}; scoring in this process")
            except Refused as exc:
                raise _fail(str(exc)) from None
    if answer is None:
        try:
            answer = predict_here(settings, wanted, overrides)
        except Refused as exc:
            raise _fail(str(exc)) from None
    for result in answer.predictions:
        if as_json:
            print(json.dumps(result, default=str))
    if not as_json and answer.predictions:
        if len(ids) == 1:
            _show_one(answer.predictions[0])
        else:
            _show_many(answer.predictions)
    sys.stdout.flush()
    for item in answer.not_scored:
        if all_:
            _note(f"{item['equipment_id']}: not scored: {item['detail']}")
        else:
            _console(stderr=True).print(f"[red]error:[/red] {item['detail']}", highlight=False)
    if answer.not_scored and not all_:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    """Add the top-level `emps predict`."""
    root.command("predict")(predict)

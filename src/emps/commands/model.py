"""`emps model train|evaluate|backtest|promote|list`: the failure model from the shell."""

from __future__ import annotations

import getpass
import json
import math

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from emps.settings import get_settings

app = typer.Typer(
    help="The failure model: train, evaluate on held-out data, promote, list versions.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

# (key, label); {lead} {unit} and {fleet} are filled from the catalog, settings and figures.
METRIC_ROWS = (
    ("failures_warned_share", "failures warned >= {lead} {unit}s ahead (at the HIGH band)"),
    ("failures_evaluated", "held-out failures evaluated"),
    ("failures_alerted_share", "failures with any alert in the 3 H before them"),
    ("median_lead", "median lead ({unit}s, look-back 3 H, missed = 0)"),
    ("lead_p25", "lead, lower quartile ({unit}s)"),
    ("lead_p75", "lead, upper quartile ({unit}s)"),
    (
        "false_alert_episodes_per_100_equipment_months",
        "false alert episodes per 100 equipment-months",
    ),
    ("false_alert_episodes", "false alert episodes"),
    ("alert_episodes", "alert episodes"),
    ("alerts_per_week", "alerts per week for the fleet of {fleet}"),
    ("rul_mae_displayed", "remaining-life MAE as shown ({unit}s, capped)"),
    ("rul_mae_naive", "naive baseline's MAE ({unit}s, a constant)"),
    ("rul_rmse", "remaining-life RMSE, uncapped ({unit}s)"),
    ("rul_mae_within_horizon", "remaining-life MAE within one horizon ({unit}s)"),
    ("rul_rows", "rows with a remaining life shown"),
    ("rul_rows_censored", "... of them censored (failure not yet known)"),
    ("test_units", "test units (cut before failing, true remaining life known)"),
    ("test_units_rul_mae_displayed", "... their remaining-life MAE as shown ({unit}s, capped)"),
    ("test_units_rul_mae_naive", "... the naive baseline's MAE on them ({unit}s)"),
    ("test_units_rul_rmse_displayed", "... their remaining-life RMSE as shown ({unit}s, capped)"),
    ("test_units_rul_rmse", "... their remaining-life RMSE, uncapped truth ({unit}s)"),
    ("pr_auc", "PR-AUC per row"),
    ("roc_auc", "ROC-AUC per row"),
    ("brier", "Brier score"),
    ("brier_skill", "Brier skill over the base rate"),
    ("heldout_rows", "held-out rows"),
    ("heldout_positive_rate", "held-out rows within the horizon of a failure"),
)


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _metrics_table(
    title: str,
    metrics: dict[str, float],
    other: dict[str, float] | None = None,
    settings=None,
):
    from emps.catalog import load_catalog
    from emps.ml.evaluate import life_unit

    settings = settings or get_settings()
    words = {
        "lead": settings.alerting.inspection_within_days,
        "unit": life_unit(load_catalog(settings.catalog_path)),
        "fleet": f"{metrics.get('equipment_evaluated', float('nan')):.0f} held out",
    }
    if "alerts_per_week" in metrics and "fleet_equipment" in metrics:
        words["fleet"] = f"{metrics['fleet_equipment']:.0f}"
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    intervals = any(key.endswith("_ci95_low") for key in metrics)
    if intervals:
        table.add_column("95 % interval", justify="right")
    if other is not None:
        table.add_column("champion", justify="right")
    for key, label in METRIC_ROWS:
        if key not in metrics:
            continue
        cells = [label.format(**words), _fmt(metrics[key])]
        if intervals:
            low, high = metrics.get(f"{key}_ci95_low"), metrics.get(f"{key}_ci95_high")
            if low is None or high is None:
                cells.append("")
            elif math.isnan(low):
                cells.append("too few to tell")
            else:
                cells.append(f"{_fmt(low)} to {_fmt(high)}")
        if other is not None:
            cells.append(_fmt(other.get(key, float("nan"))))
        table.add_row(*cells)
    if intervals:
        table.caption = (
            "intervals: Clopper-Pearson over failures for the warned share; the held-out "
            "equipment resampled for the rest"
        )
    return table


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.0f}"


def _stages():
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


@app.command()
def train(
    promote: bool = typer.Option(True, help="Run the promotion gate after registering"),
    actor: str = typer.Option(None, help="Recorded as promoter [default: your user name]"),
) -> None:
    """Train a model on the dbt training examples, log it to MLflow as `challenger`, run the gate."""
    from emps.bootstrap import step_progress
    from emps.ml.evaluate import NotEnoughData
    from emps.ml.train import retrain, training_steps

    settings = get_settings()
    steps = training_steps(settings) + (2 if promote else 1)
    with step_progress("training", steps, on=err) as on_step:
        try:
            result, decision = retrain(_actor(actor), settings, on_step, promote)
        except NotEnoughData as error:
            raise _fail(str(error)) from None
    console.print(_metrics_table(f"version {result.version} on held-out data", result.metrics))
    if decision is not None:
        console.print(("[green]" if decision.promoted else "[yellow]") + decision.reason)


@app.command()
def evaluate(
    version: str | None = typer.Option(None, help="Model version [default: the champion]"),
    alias: str = typer.Option("champion", help="Alias to evaluate when no version is given"),
    as_json: bool = typer.Option(False, "--json", help="Last line: the headline figures as JSON"),
) -> None:
    """Evaluate a model version on the report slice (held-out equipment no model learnt from and
    no gate compared on) at the alerting band; log the figures to MLflow."""
    import mlflow

    from emps.ml import registry
    from emps.ml.dataset import (
        read_failure_events,
        read_test_units,
        read_training_examples,
        with_admin_thresholds,
    )
    from emps.ml.evaluate import (
        NotEnoughData,
        evaluate_model,
        figures_on_test_units,
        headline,
        split_examples,
    )

    settings = with_admin_thresholds(get_settings())
    version = version or registry.alias_version(alias, settings)
    if version is None:
        raise _fail(
            f"no '{alias}' version of model '{settings.ml.model_name}': train one with `emps model "
            "train` or give --version"
        )
    with _stages() as progress:
        step = progress.add_task("reading training examples and the model", total=None)
        examples = read_training_examples(settings)
        failures = read_failure_events(settings)
        try:
            model, _ = registry.load_version(
                version, settings, registry.recorded_digest(version, settings)
            )
        except registry.ModelIntegrityError as error:
            raise _fail(str(error)) from None
        try:
            split = split_examples(examples, settings)
        except NotEnoughData as error:
            raise _fail(str(error)) from None
        progress.update(step, description=f"evaluating version {version}")
        fleet = int(examples["equipment_id"].nunique())
        metrics = evaluate_model(model, split.report, failures, settings, fleet_equipment=fleet)
        metrics |= figures_on_test_units(model, read_test_units(settings))
        with mlflow.start_run(
            experiment_id=registry.ensure_experiment(settings), run_name=f"evaluate-v{version}"
        ):
            mlflow.set_tags({"model_version": version, "kind": "evaluation"})
            mlflow.set_tags({f"window.{k}": str(v) for k, v in split.windows.items()})
            mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        progress.update(step, total=1)
        progress.advance(step)
    console.print(_metrics_table(f"version {version} on the report slice", metrics))
    period = (
        f", {split.windows['test_start'][:10]} to {split.windows['test_end'][:10]}"
        if "test_start" in split.windows
        else ", their whole histories"
    )
    console.print(
        f"report slice: {split.windows['report_equipment']} equipment never trained on and "
        f"never used by the promotion gate{period}; alerts at the HIGH band "
        f"({settings.thresholds.severity_high:g})"
    )
    if as_json:
        print(json.dumps(headline(metrics)))


@app.command()
def promote(
    version: str | None = typer.Option(None, help="Version to promote [default: the challenger]"),
    force: bool = typer.Option(False, help="Skip the gate (recorded as forced)"),
    actor: str = typer.Option(None, help="Recorded as promoter [default: your user name]"),
) -> None:
    """Make a version champion if it beats the current champion on the same held-out rows."""
    from emps.ml import registry
    from emps.ml.evaluate import NotEnoughData

    settings = get_settings()
    version = version or registry.alias_version(registry.CHALLENGER, settings)
    if version is None:
        raise _fail("no challenger to promote: train one with `emps model train` or give --version")
    try:
        decision = registry.run_gate(version, _actor(actor), settings, force=force)
    except NotEnoughData as error:
        raise _fail(str(error)) from None
    if decision.challenger_metrics:
        console.print(
            _metrics_table(
                f"challenger v{version} vs champion v{decision.champion}",
                decision.challenger_metrics,
                decision.champion_metrics,
            )
        )
    console.print(("[green]" if decision.promoted else "[yellow]") + decision.reason)
    if not decision.promoted and decision.reason != "already the champion":
        raise typer.Exit(2)


def _date(value: str, option: str):
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise _fail(
            f"{option} {value!r}: give a date (2026-03-01) or a time with its offset"
        ) from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _backtest_table(backtest) -> Table:
    """Per week and in total: alerts, failures warned, late, missed, leads, false alerts."""
    unit = backtest.life_unit
    lead = f"{backtest.inspection_lead:g}"
    table = Table(
        title=f"backtest of version {backtest.model_version}, "
        f"{backtest.start:%Y-%m-%d} to {backtest.end:%Y-%m-%d}"
    )
    table.add_column("week of", no_wrap=True)
    for column in (
        "alerts",
        "false",
        "too recent",
        "failures",
        f"warned >= {lead} {unit}s",
        "late",
        "missed",
        f"median lead ({unit}s)",
    ):
        table.add_column(column, justify="right", no_wrap=True)

    def cells(figures) -> list[str]:
        median = figures.median_lead
        return [
            str(figures.alerts),
            str(figures.false_alerts),
            str(figures.undetermined_alerts),
            str(figures.failures),
            str(figures.warned),
            str(figures.late),
            str(figures.missed),
            "—" if median is None else f"{median:.1f}",
        ]

    for week in backtest.weeks:
        table.add_row(f"{week.week_start:%Y-%m-%d}", *cells(week))
    table.add_section()
    table.add_row("total", *cells(backtest.total), style="bold")
    bands = backtest.bands
    table.caption = (
        f"bands MEDIUM {bands['severity_medium']:g}, HIGH {bands['severity_high']:g}, "
        f"CRITICAL {bands['severity_critical']:g}; alerts: episodes at HIGH or above; false: no "
        f"failure followed within 3 horizons; too recent: the history ends before that is "
        f"known; late: alerted less than {lead} {unit}s ahead; {backtest.equipment} equipment, "
        f"one row per {backtest.step_minutes} min. Equipment the model learnt from are "
        "replayed too: `emps model evaluate` gives held-out figures."
    )
    return table


@app.command()
def backtest(
    start: str = typer.Option(..., "--from", help="First day replayed (UTC), e.g. 2026-03-01"),
    end: str = typer.Option(None, "--to", help="Day after the last one replayed [default: now]"),
    model: str = typer.Option("champion", "--model", help="Version number, champion or challenger"),
    bands: str = typer.Option(
        None,
        "--bands",
        help="Severity bands to try: MEDIUM,HIGH,CRITICAL (0.3,0.5,0.85) or by name (high=0.5) "
        "[default: the bands in force, set on the Admin page]",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the backtest as JSON"),
) -> None:
    """Replay stored history with a model and severity bands: per week, the alerts it would have
    raised, the failures it would have warned and how early, and the false alerts."""
    from datetime import UTC, datetime

    from rich.progress import BarColumn, MofNCompleteColumn

    from emps.ml import registry
    from emps.ml.backtest import NoModel, parse_bands, run_backtest

    settings = get_settings()
    first = _date(start, "--from")
    last = _date(end, "--to") if end else _date(datetime.now(UTC).isoformat(), "--to")
    if last <= first:
        raise _fail(f"--to ({last:%Y-%m-%d}) must come after --from ({first:%Y-%m-%d})")
    try:
        tried = parse_bands(bands) if bands else None
    except ValueError as error:
        raise _fail(str(error)) from None
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        step = progress.add_task(f"reading the history and the {model} model", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(step, description="scoring equipment", completed=done, total=total)

        try:
            result = run_backtest(first, last, model, tried, settings, on_progress)
        except (NoModel, ValueError, registry.ModelIntegrityError) as error:
            raise _fail(str(error)) from None
    if as_json:
        print(json.dumps(result.as_dict()))
        return
    if result.rows == 0:
        err.print(
            f"[yellow]no feature rows from {first:%Y-%m-%d} to {last:%Y-%m-%d}:[/yellow] nothing "
            "to replay; `emps dbt build` builds the features of the readings stored"
        )
    console.print(_backtest_table(result))
    console.print(f"{result.summary()}; {result.alerts_per_week:.1f} alerts per week")


@app.command()
def server(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
    port: int = typer.Option(None, help="Port (default: EMPS_MLFLOW_PORT)"),
    allowed_hosts: str = typer.Option(
        None,
        "--allowed-hosts",
        help="Comma-separated Host header values to answer (default: 127.0.0.1 and localhost "
        "with the port)",
    ),
) -> None:
    """The MLflow tracking server and UI in one process (`emps up` runs it): experiments, runs
    and the model registry of EMPS_MLFLOW_TRACKING_URI, behind the platform's MLflow credential
    (`emps secrets show`)."""
    from emps.ml.server import serve

    settings = get_settings()
    hosts = [h.strip() for h in allowed_hosts.split(",") if h.strip()] if allowed_hosts else None
    serve(host, port or settings.services.mlflow_port, settings, allowed_hosts=hosts)


@app.command("list")
def list_versions() -> None:
    """Registered versions, their aliases and figures on held-out equipment."""
    from datetime import UTC, datetime

    from emps.ml import registry

    settings = get_settings()
    table = Table(title=f"model '{settings.ml.model_name}'")
    columns = {
        "failures_warned_share": "warned",
        "false_alert_episodes_per_100_equipment_months": "false /100 mo",
        "rul_mae_displayed": "life MAE",
        "pr_auc": "PR-AUC",
    }
    for column in ("version", "aliases", "registered"):
        table.add_column(column, no_wrap=True)
    for column in columns.values():
        table.add_column(column, justify="right")
    table.caption = (
        "warned: share of held-out failures warned ahead; false /100 mo: false alert episodes "
        "per 100 equipment-months; life MAE: remaining-life error as shown"
    )
    for row in registry.list_versions(settings):
        m = row["metrics"]
        table.add_row(
            row["version"],
            ", ".join(row["aliases"]),
            datetime.fromtimestamp(row["created"] / 1000, UTC).strftime("%Y-%m-%d %H:%M"),
            *(_fmt(m.get(k, float("nan"))) for k in columns),
        )
    console.print(table)

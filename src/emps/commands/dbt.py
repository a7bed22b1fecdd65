"""`emps dbt build|docs|freshness`: run the dbt project with the catalog's sensors and settings."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

app = typer.Typer(help="The dbt project: features and marts in the analytics schema.")
console = Console()


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    )


@app.command()
def build(
    select: list[str] = typer.Option(None, "--select", "-s", help="dbt node selection"),
    after_ingest: bool = typer.Option(
        False, "--after-ingest", help="Only what new readings change (the flow's default)"
    ),
    full_refresh: bool = typer.Option(
        False, "--full-refresh", help="Rebuild the incremental feature table from all readings"
    ),
) -> None:
    """`dbt build`: models, then their tests. Exits 1 naming each failing model or test."""
    from emps import transform

    selector = transform.AFTER_INGEST_SELECTOR if after_ingest and not select else None
    with _progress() as progress:
        step = progress.add_task("dbt build", total=None)

        def show(level: str, message: str) -> None:
            if " of " in message and ("START" in message or "OK" in message):
                progress.update(step, description=f"dbt build: {message.strip()[:90]}")
            elif level in {"warn", "error"}:
                progress.console.print(message)

        try:
            summary = transform.build(
                select=select or None,
                selector=selector,
                full_refresh=full_refresh,
                on_log=show,
            )
        except transform.DbtBuildError as exc:
            progress.stop()
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from exc
    models = sum(1 for n in summary.nodes if n.resource_type == "model")
    tests = len(summary.nodes) - models
    console.print(
        f"dbt build passed: {models} models, {tests} tests and hooks in {summary.seconds:.1f} s"
    )


@app.command()
def docs() -> None:
    """Generate dbt's docs site (models, columns, lineage) as one HTML file that works offline."""
    from emps import transform

    with _progress() as progress:
        progress.add_task("dbt docs generate", total=None)
        try:
            path = transform.docs()
        except transform.DbtBuildError as exc:
            progress.stop()
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from exc
    console.print(f"dbt docs written to {path} (open it in a browser; no server needed)")


@app.command()
def freshness() -> None:
    """Check that raw.sensor_readings is still receiving data (dbt source freshness)."""
    from emps import transform

    summary = transform.source_freshness()
    for node in summary.nodes:
        console.print(f"{node.name}: {node.status}")
    if not summary.success:
        raise typer.Exit(1)

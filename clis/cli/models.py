"""`clis models list` and `clis models fetch SPEC`."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from clis.errors import ClisError

models_app = typer.Typer(
    name="models",
    help="List the models CLIS knows and fill the local cache for offline use.",
    no_args_is_help=True,
    add_completion=False,
)


@models_app.command("list")
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Show the default and alternative model specs, their task and whether they are here."""
    from clis.models import known_models

    if as_json:
        typer.echo(json.dumps([asdict(row) for row in known_models()], indent=2))
        return
    table = Table(title="CLIS models", show_lines=False)
    for column in ("spec", "task", "role", "available", "description"):
        table.add_column(column, overflow="fold")
    for row in known_models():
        available = Text("yes", style="green") if row.available else Text("no", style="red")
        table.add_row(Text(row.spec), Text(row.task), Text(row.role), available, Text(row.description))
    console = Console(soft_wrap=False, width=max(Console().width, 140))
    console.print(table)
    console.print("Fetch a missing one on a connected machine with: clis models fetch SPEC", highlight=False)


@models_app.command("fetch")
def fetch(spec: str = typer.Argument(..., help="Model spec, e.g. hf:openai/clip-vit-base-patch32")) -> None:
    """Download SPEC into the local cache (hub specs) or prepare it (embedded models)."""
    from clis.cli import fail
    from clis.models import fetch_model

    try:
        where = fetch_model(spec)
    except ClisError as exc:
        raise fail(str(exc))
    typer.echo(f"{spec}: {where}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")

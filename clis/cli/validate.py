"""``clis validate FILE``: check a layouts file and print a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from clis.discovery import discover_candidates
from clis.formats import FORMATS, validate_file


def validate(
    file: Path = typer.Argument(..., help="layouts.json, an ACP scene-graph JSON or a COCO instances JSON."),
    format: str = typer.Option("auto", "--format", help=f"auto, or one of: {', '.join(FORMATS)}."),
    images: Optional[Path] = typer.Option(
        None, "--images", help="Also match candidate images in this folder and report unmatched files."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Check a layouts file. Exit 0 when valid, 2 with one line per problem when not."""
    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if format != "auto" and format not in FORMATS:
        err.print(f"error: --format: unknown format {format!r}; expected auto or one of {', '.join(FORMATS)}",
                  markup=False)
        raise typer.Exit(2)
    report = validate_file(file, format=format)
    summary = report.summary()
    discovery = None
    if images is not None and report.layouts:
        discovery = discover_candidates(images, report.layouts)
        summary.update(
            candidates=discovery.n_candidates,
            layouts_without_candidates=discovery.missing,
            unmatched_files=[str(p) for p in discovery.orphans],
            listed_files_not_found=[str(p) for _, p in discovery.not_found],
        )
    for problem in report.problems:
        err.print(problem, markup=False)
    for warning in report.warnings:
        err.print(f"warning: {warning}", markup=False)
    if as_json:
        console.print_json(json.dumps(summary))
    else:
        from clis.cli import plain

        table = Table(title=plain(file), show_header=False)
        for key in ("format", "layouts", "objects", "relations", "labels", "problems", "warnings"):
            table.add_row(key, str(summary[key] if summary[key] is not None else "unknown"))
        if summary["top_labels"]:  # the file's labels: plain text, as "cu[/p]" is no markup
            table.add_row("top labels", plain(", ".join(f"{label} ({n})" for label, n in summary["top_labels"])))
        if discovery is not None:
            table.add_row("candidates", str(discovery.n_candidates))
            table.add_row("layouts without candidates", str(len(discovery.missing)))
            table.add_row("unmatched image files", str(len(discovery.orphans)))
            table.add_row("listed files not found", str(len(discovery.not_found)))
        console.print(table)
        if discovery is not None:
            from clis.cli import warn

            warn([*(f"{images}: no candidate image for layout {layout_id!r}" for layout_id in discovery.missing),
                  *(f"{path}: matches no layout" for path in discovery.orphans),
                  *(f"{path}: listed in images of layout {layout_id!r} but not found"
                    for layout_id, path in discovery.not_found)])  # --json lists them all
    if report.problems:
        noun = "problem" if len(report.problems) == 1 else "problems"
        err.print(f"{file}: invalid ({len(report.problems)} {noun})", markup=False)
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)

"""``clis leaderboard ...``: build the static leaderboard site from benchmark result files.

Registered as a command group of ``clis`` through the ``clis.commands`` entry point
(``leaderboard = "leaderboard.cli:app"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from clis.errors import ClisError
from clis.outputs import check_paths
from leaderboard.config import DEFAULT_CONFIG_PATH, DEFAULT_RESULTS_DIR, load_config

app = typer.Typer(
    name="leaderboard",
    help="Publish benchmark results as a static leaderboard site (plus Markdown and CSV).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

# Notes printed after a build; the rest are counted (all of them are on the pages).
SHOWN_NOTES = 10


def _inputs(results: list[Path]) -> dict[str, Path]:
    """The RESULTS arguments keyed as ``check_paths`` names them in its messages."""
    if len(results) == 1:
        return {"RESULTS": results[0]}
    return {f"RESULTS #{i}": path for i, path in enumerate(results, start=1)}


@app.command()
def build(
    results: Optional[list[Path]] = typer.Argument(
        None,
        help="Result files (schema clis.bench/1) or folders holding them. Default: the kept results in "
        f"{DEFAULT_RESULTS_DIR}.",
        show_default=False,
    ),
    out: Path = typer.Option(Path("site"), "--out", "-o", help="Folder to write the site into."),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help=f"Leaderboard config (title, metrics and their order). Default: {DEFAULT_CONFIG_PATH}."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no notes, only errors."),
) -> None:
    """Build a static site (index, one page per row, Markdown and CSV exports) that needs no network."""
    from leaderboard.site import build_site  # matplotlib, seaborn: only when building

    results = results or [DEFAULT_RESULTS_DIR]
    try:
        # Before anything is read: a --out that is a file, under a file, a device or an input.
        check_paths(inputs={**_inputs(results), "--config": config}, folders={"--out": out})
        settings = load_config(config)
        report = build_site(results, out, settings, show_progress=not quiet)
    except ClisError as exc:
        # One line, no traceback, exit 2: the same contract as `clis.cli.main`, which this
        # module cannot import (clis.cli loads this module while it is being set up).
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(exc.exit_code) from None
    if quiet:
        return
    n_rows = sum(len(b.rows) for b in report.boards)
    console.print(
        f"wrote {report.index} ({len(report.boards)} table(s), {n_rows} row(s), {len(report.pages)} row page(s)); "
        f"exports {report.exports['markdown']} and {report.exports['csv']}",
        markup=False,
    )
    for note in report.notes[:SHOWN_NOTES]:
        err_console.print(f"note: {note}", markup=False)
    if len(report.notes) > SHOWN_NOTES:
        err_console.print(f"note: ... and {len(report.notes) - SHOWN_NOTES} more (shown on the row pages)", markup=False)


@app.command()
def add(
    results: list[Path] = typer.Argument(..., help="Result files (schema clis.bench/1) to keep on the board."),
    results_dir: Path = typer.Option(
        DEFAULT_RESULTS_DIR, "--results-dir", help="Folder of kept result files that `build` reads by default."
    ),
    name: Optional[str] = typer.Option(None, "--name", help="Submission name (default: the result file's folder)."),
    replace: bool = typer.Option(False, "--replace", help="Replace a kept submission of the same name."),
) -> None:
    """Keep result files (with the scores and layouts files their rows name) for the next build."""
    if name is not None and len(results) > 1:
        err_console.print("error: --name needs exactly one result file", markup=False)
        raise typer.Exit(2)
    from leaderboard.submit import add_result

    try:
        check_paths(inputs=_inputs(results), folders={"--results-dir": results_dir})
        for path in results:
            kept = add_result(path, results_dir, name=name, replace=replace)
            console.print(f"kept {path} as {kept}", markup=False)
    except ClisError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(exc.exit_code) from None

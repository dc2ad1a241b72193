"""``clis annotate build`` (a static labelling site) and ``clis annotate merge`` (its exports).

See docs/annotate.md. The site and label modules (:mod:`clis.annotate`) are imported inside
the commands, so ``clis --help`` stays quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from clis.errors import ClisError, InputError

annotate_app = typer.Typer(
    name="annotate",
    help="Build a static site to label candidates by hand, and merge the labels it exports.",
    no_args_is_help=True,
    add_completion=False,
)


@annotate_app.command("build")
def build(
    candidates: Path = typer.Argument(..., help="Folder of candidate images (as for clis score)."),
    layouts: Path = typer.Argument(..., help="The layouts file the candidates were generated from."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the site into (new, empty, or an earlier site)."),
    scores: Optional[Path] = typer.Option(
        None, "--scores", help="scores.jsonl of these candidates: stratifies --sample, and --show-scores shows it."
    ),
    blind: bool = typer.Option(
        True, "--blind/--show-scores", help="Leave scores out of the site (default), or show each candidate's scores."
    ),
    sample: Optional[int] = typer.Option(
        None, "--sample", metavar="N", help="Keep N layouts (stratified by best clis with --scores, else uniform)."
    ),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of --sample (recorded in the site)."),
    max_pixels: Optional[int] = typer.Option(
        None, "--max-pixels", metavar="N", help="Refuse candidate images with more pixels (default 40,000,000)."
    ),
) -> None:
    """Write a static labelling site (open OUT/index.html from disk; no server, no network)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from clis.annotate.site import DEFAULT_MAX_PIXELS, build_site
    from clis.cli import fail, warn

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        if not blind and scores is None:
            raise InputError("--show-scores needs --scores (the scores.jsonl of these candidates)")
        with Progress(
            TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("copy images", total=None)
            report = build_site(
                candidates, layouts, out, scores=scores, blind=blind, sample=sample, seed=seed,
                max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
                on_start=lambda total: progress.update(task, total=total),
                on_image=lambda: progress.advance(task),
            )  # fmt: skip
    except ClisError as exc:
        raise fail(str(exc), exc.exit_code)
    warn(report.warnings)
    mode = "blind" if report.site["blind"] else "scores shown"
    typer.echo(
        f"wrote {report.index}: {report.layouts} layouts, {report.candidates} candidates, {report.objects} objects "
        f"to label ({mode}; site {report.site['id'][:12]})"
    )


@annotate_app.command("merge")
def merge(
    files: List[Path] = typer.Argument(..., help="Label files exported from one site (clis.labels/1)."),
    out: Path = typer.Option(..., "--out", "-o", help="The merged labels file to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file (never an input)."),
) -> None:
    """Check and merge the exports of several annotators of one site into one labels file."""
    from clis.annotate.labels import read_labels, write_labels
    from clis.cli import fail
    from clis.outputs import check_paths

    try:
        check_paths(inputs={f"FILES[{k}]": path for k, path in enumerate(files)}, outputs={"--out": out})
        if (out.exists() or out.is_symlink()) and not overwrite:
            raise InputError(f"--out {out}: already exists; pass --overwrite to replace it")
        labels = read_labels(files)
        write_labels(labels, out)
    except ClisError as exc:
        raise fail(str(exc), exc.exit_code)
    typer.echo(
        f"wrote {out}: {len(labels.objects)} object labels and {len(labels.layouts)} layout answers of "
        f"{len(labels.annotators)} annotators ({', '.join(labels.annotators)}) from {len(files)} files"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(annotate_app, name="annotate")

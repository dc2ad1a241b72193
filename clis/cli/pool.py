"""``clis pool build`` / ``clis pool info``: the reference pool of real layouts for CLIS-L."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from clis.errors import ClisError, InputError

pool_app = typer.Typer(
    name="pool", help="Build and inspect reference pools of real layouts (the geometric prior of CLIS-L).",
    no_args_is_help=True,
)


@pool_app.command("build")
def build(
    sources: list[Path] = typer.Argument(
        ..., help="Visual Genome relationships.json, COCO instances JSON, or layouts.json with relations."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Pool file to write (.jsonl or .jsonl.gz)."),
    kind: str = typer.Option("auto", "--from", help="auto, vg, coco or layouts (applies to every source)."),
    max_objects: int = typer.Option(8, "--max-objects", min=2, help="COCO: largest objects per image paired."),
    min_area: float = typer.Option(0.0, "--min-area", min=0.0, max=1.0, help="COCO: ignore smaller objects "
                                   "(fraction of the image)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Collect real layouts into a pool file: scenes (every labelled box of an image) for the pair
    prior, and (subject, relation, object, boxes) examples for the relation prior."""
    from clis.cli import fail
    from clis.layout_score.pool import write_pool
    from clis.layout_score.pool_sources import BuildReport, examples_from_file

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    report = BuildReport()
    try:
        from clis import jsonio
        from clis.outputs import check_paths

        check_paths(inputs={f"SOURCES[{i}]": source for i, source in enumerate(sources)}, outputs={"--out": out})
        if out.exists() and not overwrite:
            raise InputError(f"{out}: already exists; pass --overwrite to replace it")
        for source in sources:
            jsonio.check_input_file(source, "file")
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} examples"),
                            TimeElapsedColumn(), console=Console(stderr=True),
                            transient=True)  # gone when it stops: a broken source is then the only line

        def stream():
            with progress:
                for source in sources:
                    task = progress.add_task(f"reading {source.name}", total=None)
                    for example in examples_from_file(source, report, kind=kind, max_objects=max_objects,
                                                      min_area=min_area):
                        progress.advance(task)
                        yield example

        count = write_pool(stream(), out, sources=[f"{name}" for name in map(str, sources)])
    except ClisError as exc:
        raise fail(str(exc), exc.exit_code)
    table = Table(title=escape(f"pool -> {out}"), show_header=False)
    table.add_row("relation examples", str(sum(report.examples.values())))
    for source, n in report.examples.items():
        table.add_row(escape(f"  from {source}"), str(n))
    table.add_row("scenes", str(sum(report.scenes.values())))
    for source, n in report.scenes.items():
        table.add_row(escape(f"  from {source}"), str(n))
    table.add_row("skipped records", str(sum(report.skipped.values())))
    Console(highlight=False, soft_wrap=True).print(table)
    for problem in report.first_problems:
        err.print(f"warning: skipped {problem}", markup=False)
    if count == 0:
        out.unlink(missing_ok=True)
        raise fail("no examples found in the sources: nothing written (COCO needs images with annotations; "
                   "layouts need objects)")


@pool_app.command("info")
def info(
    pool: str = typer.Argument(..., help="Pool file (.jsonl or .jsonl.gz), or embedded:nsr1k."),
    top: int = typer.Option(20, "--top", min=1, help="Relations to list."),
) -> None:
    """Show a pool's provenance, its scenes and how many examples it holds per relation."""
    from clis.cli import fail
    from clis.layout_score.embedded_pool import resolve_pool
    from clis.layout_score.pool import Pool

    try:
        loaded = Pool.load(resolve_pool(pool))
    except ClisError as exc:
        raise fail(str(exc), exc.exit_code)
    out = Console(highlight=False, soft_wrap=True)
    for key in ("provenance", "licence"):
        if loaded.header.get(key):
            out.print(f"{key}: {loaded.header[key]}", markup=False)
    labels = {label for scene in loaded.scenes for label, _ in scene.scene}
    out.print(f"scenes: {len(loaded.scenes)} ({len(labels)} labels)", markup=False)
    table = Table(title=escape(f"{pool}: {loaded.size} relation examples, {len(loaded.relations)} relations"))
    table.add_column("relation")
    table.add_column("examples", justify="right")
    for relation, n in list(loaded.counts().items())[:top]:
        table.add_row(escape(relation), str(n))
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(pool_app, name="pool")

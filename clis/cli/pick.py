"""``clis pick CANDIDATES LAYOUTS --out dataset/``: keep the best candidates as a COCO dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from clis.errors import InputError
from clis.formats import read_layouts
from clis.models import DEFAULT_SAM
from clis.pick import PickConfig, SamMasker, read_scores_file, select, write_dataset

console = Console(stderr=True, highlight=False, soft_wrap=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console,
    )  # fmt: skip


def _prepare_out(out: Path) -> None:
    images = out / "images"
    if images.is_dir() and any(images.iterdir()):
        if not (out / "summary.json").is_file():
            raise InputError(f"{images}: folder is not empty and is not an earlier clis pick output; choose another --out")
        shutil.rmtree(images)  # an earlier pick into the same folder: start clean, no stale images
    out.mkdir(parents=True, exist_ok=True)


def _score_candidates(candidates: Path, layouts, out: Path, score_config, image_model, detector, layout_score, device,
                      invalid=()):
    """Score with :class:`clis.scorer.Scorer`: records, their file, what made the candidates, warnings."""
    from clis.scorer import ScoreConfig, Scorer

    overrides = {"device": device}
    if image_model:
        overrides["image_model"] = image_model
    if detector:
        overrides["detector"] = detector
    if not layout_score:
        overrides["layout_score"] = False
    config = ScoreConfig.from_file(score_config, **overrides) if score_config else ScoreConfig.checked(overrides)
    scorer = Scorer(config)
    scores_path = out / "scores.jsonl"
    try:
        with _progress() as progress:
            task = progress.add_task("score", total=None)
            records = scorer.score_folder(
                candidates, layouts, out=scores_path, invalid=invalid,
                on_start=lambda total, done: progress.update(task, total=total, completed=done),
                on_record=lambda record: progress.advance(task),
            )  # fmt: skip
    finally:
        scorer.close()
    return records, scores_path, scorer.generation, scorer.warnings()


def pick(
    candidates: Path = typer.Argument(..., help="Candidates folder (as written by clis generate)."),
    layouts: Path = typer.Argument(..., help="Layouts file the candidates were made from."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder: images/, annotations.json, summary.json."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Reuse a scores.jsonl instead of scoring now."),
    top: int = typer.Option(1, "--top", help="Candidates kept per layout, best first."),
    min_instance: float = typer.Option(60.0, "--min-instance", help="Instances scoring below this are dropped."),
    min_layout: float = typer.Option(50.0, "--min-layout", help="Layouts whose CLIS-L is below this are dropped."),
    rank_by: str = typer.Option("clis", "--rank-by", help="Score that ranks a layout's candidates: clis or clis_i."),
    masks: str = typer.Option("none", "--masks", help="none, or sam: a SAM mask per kept box."),
    sam_model: str = typer.Option(DEFAULT_SAM, "--sam-model", help="SAM spec used with --masks sam."),
    score_config: Optional[Path] = typer.Option(None, "--config", help="Scoring settings file (as for clis score)."),
    image_model: Optional[str] = typer.Option(None, "--image-model", help="CLIP spec for scoring."),
    detector: Optional[str] = typer.Option(None, "--detector", help="Detector spec for scoring, or none."),
    layout_score: bool = typer.Option(True, "--layout-score/--no-layout-score", help="Score layouts with CLIS-L."),
    device: str = typer.Option("cpu", "--device", help="Device for scoring and SAM."),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse the whole layouts file when any layout is invalid (default: pick from the valid ones)."
    ),
) -> None:
    """Keep the top candidates per layout, drop weak instances and layouts, write COCO."""
    from clis.cli import warn

    if masks not in ("none", "sam"):
        raise InputError(f"--masks must be none or sam, got {masks!r}")
    config = PickConfig(top=top, min_instance=min_instance, min_layout=min_layout, rank_by=rank_by)
    report = read_layouts(layouts, strict=strict)
    layout_list = report.layouts
    if not candidates.is_dir():
        raise InputError(f"{candidates}: candidates folder not found")
    # SAM loads before scoring, which can take hours: a missing SAM model fails in seconds.
    masker = SamMasker(sam_model, device=device) if masks == "sam" else None
    _prepare_out(out)
    if scores is not None:
        from clis.scorer import read_generation

        records = read_scores_file(scores)
        scores_path = scores
        # `clis score` warned about its texts already; what made the candidates is read here.
        generation, warnings = read_generation(candidates, layout_list)
    else:
        records, scores_path, generation, warnings = _score_candidates(
            candidates, layout_list, out, score_config, image_model, detector, layout_score, device, report.invalid
        )
    # keyed as `clis score` keys their records: the record's own id, else "record <index>"
    invalid = {bad.key: bad.error for bad in report.invalid}
    selection = select(records, layout_list, config, invalid=invalid)
    with _progress() as progress:
        task = progress.add_task("write", total=len(selection.kept))
        write_dataset(selection, out, candidates, scores_path, masker, on_image=lambda: progress.advance(task))
    summary = {
        "candidates_dir": str(candidates),
        "layouts": str(layouts),
        "scores": str(scores_path),
        "masks": masker.describe() if masker else None,
        # What made the candidates (generator, demo_only, ...), so a demo-only dataset says so.
        "generation": generation,
        # Layout records of the file that failed validation: none of their candidates is kept.
        "invalid_layouts": [{"index": bad.index, "layout_id": bad.layout_id, "error": bad.error} for bad in report.invalid],
        **selection.summary(config),
        "dropped_images": selection.dropped_images,
        "dropped_instances": selection.dropped_instances,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _print_summary(summary, out)
    warn(warnings)
    if report.invalid:
        from clis.cli.score import invalid_layouts_warning

        warn(invalid_layouts_warning(layouts, report.invalid))
        raise typer.Exit(1)


def _print_summary(summary: dict, out: Path) -> None:
    table = Table(title="clis pick", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("candidates", str(summary["candidates"]))
    table.add_row("images kept", str(summary["images_kept"]))
    for reason, n in summary["images_dropped_by_reason"].items():
        table.add_row(f"images dropped: {reason}", str(n))
    table.add_row("instances kept", str(summary["instances_kept"]))
    table.add_row("instances dropped (below --min-instance or unscored)", str(summary["instances_dropped"]))
    table.add_row("layouts with no kept image", str(len(summary["layouts_without_image"])))
    console.print(table)
    console.print(f"dataset: {out / 'annotations.json'}, {out / 'images'}; summary: {out / 'summary.json'}")
    # An empty dataset still exits 0, but never silently: say which threshold dropped what.
    from clis.cli import warn
    from clis.pick import empty_dataset_warnings

    warn(empty_dataset_warnings(summary))


def register(app: typer.Typer) -> None:
    app.command("pick")(pick)

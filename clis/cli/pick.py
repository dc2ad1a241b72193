"""``clis pick CANDIDATES LAYOUTS --out dataset/``: keep the best candidates as a COCO dataset.

The dataset is built in a staging folder beside --out (``.NAME.staging-*``) and moved into place
only once complete, so a failed or interrupted pick leaves an existing --out as it was; files of
the user's own in an earlier pick output stay. With --scores, every record is checked before
anything is copied: score fields are finite numbers or null, an image is listed once per layout,
and each image is a candidate that discovery finds for its layout in CANDIDATES (any other file,
``/etc/passwd`` or another layout's image, is refused). Records of layouts that are not in
LAYOUTS are dropped with one warning, because scores of a superset of the layouts are
legitimate (picking from a filtered layouts file); a scores file with none of these layouts is
refused as the wrong file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from clis import jsonio
from clis.errors import InputError
from clis.formats import read_layouts
from clis.models import DEFAULT_SAM
from clis.files import is_inside
from clis.outputs import OutputLock, check_paths, commit_staged, folder_beside
from clis.pick import (
    PickConfig, SamMasker, check_candidates, check_layout_ids, check_score_record, read_scores_lines, select,
    write_dataset,
)  # fmt: skip

console = Console(stderr=True, highlight=False, soft_wrap=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console,
    )  # fmt: skip


# What a pick writes into --out; nothing else there is touched.
DATASET_ENTRIES = ("images", "annotations.json", "summary.json")
SCORES_ENTRIES = ("scores.jsonl", "scores.jsonl.manifest.json")


def _check_out(out: Path, entries: tuple[str, ...], inputs: dict[str, Optional[Path]]) -> None:
    """Refuse, before any work, an --out whose entries this pick would replace when they are
    not an earlier pick's (no summary.json) or when they hold one of the inputs."""
    if not out.is_dir():
        return
    earlier = (out / "summary.json").is_file()
    for name in entries:
        entry = out / name
        if not (entry.exists() or entry.is_symlink()):
            continue
        for flag, path in inputs.items():
            if path is not None and is_inside(path, entry):
                raise InputError(f"--out {out}: its {name} holds {flag} ({path}), which this pick would replace; "
                                 "choose another --out")  # fmt: skip
        empty = entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir())
        if not earlier and not empty:
            raise InputError(f"--out {out}: holds {name} but is not an earlier clis pick output (no summary.json); "
                             "choose another --out")  # fmt: skip


def _commit(staging: Path, target: Path) -> None:
    commit_staged(staging, target, [name for name in DATASET_ENTRIES + SCORES_ENTRIES if (staging / name).exists()])


def _score_candidates(candidates: Path, layouts, out: Path, score_config, image_model, detector, layout_score, device,
                      invalid=()):
    """Score with :class:`clis.scorer.Scorer`: records, their file, what made the candidates, warnings,
    and the candidate discovery the records come from."""
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
            # pick ranks every layout's candidates, so it reads the records back once, whole.
            records = list(scorer.score_folder(
                candidates, layouts, out=scores_path, invalid=invalid,
                on_start=lambda total, done: progress.update(task, total=total, completed=done),
                on_record=lambda record: progress.advance(task),
            ))  # fmt: skip
    finally:
        scorer.close()
    return records, scores_path, scorer.generation, scorer.warnings(), scorer.discovery


def pick(
    candidates: Path = typer.Argument(..., help="Candidates folder (as written by clis generate)."),
    layouts: Path = typer.Argument(..., help="Layouts file the candidates were made from."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder: images/, annotations.json, summary.json."),
    scores: Optional[Path] = typer.Option(
        None, "--scores", help="Reuse a scores file (scores.jsonl, or a Parquet scores table) instead of scoring now."),
    top: Optional[int] = typer.Option(None, "--top", help="Candidates kept per layout, best first [default: 1]."),
    min_instance: Optional[float] = typer.Option(
        None, "--min-instance", help="Instances scoring below this are dropped [default: 60, or the config's pick table]."),
    min_layout: Optional[float] = typer.Option(
        None, "--min-layout", help="Layouts whose CLIS-L is below this are dropped [default: 50, or the config's]."),
    rank_by: Optional[str] = typer.Option(None, "--rank-by", help="Score ranking a layout's candidates: clis or clis_i "
                                          "[default: clis]."),
    masks: str = typer.Option("none", "--masks", help="none, or sam: a SAM mask per kept box."),
    sam_model: str = typer.Option(DEFAULT_SAM, "--sam-model", help="SAM spec used with --masks sam."),
    score_config: Optional[Path] = typer.Option(
        None, "--config", help="Settings file: scoring settings (as for clis score) and a pick table of thresholds "
        "(as clis bench calibrate writes it); flags win."),
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
    config = PickConfig.from_file(score_config, top=top, min_instance=min_instance, min_layout=min_layout,
                                  rank_by=rank_by)
    inputs = {"CANDIDATES": candidates, "LAYOUTS": layouts, "--scores": scores, "--config": score_config}
    check_paths(inputs=inputs, folders={"--out": out})
    target = Path(os.path.abspath(out))
    with OutputLock(target):
        _check_out(out, DATASET_ENTRIES + (() if scores is not None else SCORES_ENTRIES), inputs)
        report = read_layouts(layouts, strict=strict)
        layout_list = report.layouts
        if not candidates.is_dir():
            raise InputError(f"{candidates}: candidates folder not found")
        # keyed as `clis score` keys their records: the record's own id, else "record <index>"
        invalid = {bad.key: bad.error for bad in report.invalid}
        known = [layout.id for layout in layout_list]
        id_warnings: list[str] = []
        if scores is not None:
            from clis.discovery import discover_candidates
            from clis.scorer import read_generation

            numbered = read_scores_lines(scores)
            id_warnings = check_layout_ids(numbered, [*known, *invalid], scores, layouts)
            # Invalid layouts still claim their files, as when `clis score` discovered them.
            claimants = layout_list + [bad.stand_in(bad.layout_id) for bad in report.invalid if bad.layout_id]
            discovery = discover_candidates(candidates, claimants)
            check_candidates(numbered, known, discovery, candidates, scores, source=str(scores))
        # SAM loads before scoring, which can take hours: a missing SAM model fails in seconds.
        masker = SamMasker(sam_model, device=device) if masks == "sam" else None
        staging = folder_beside(target)
        try:
            if scores is not None:
                records = [record for _, record in numbered]
                scores_path = scores
                # `clis score` warned about its texts already; what made the candidates is read here.
                generation, warnings = read_generation(candidates, layout_list)
            else:
                records, _, generation, warnings, discovery = _score_candidates(
                    candidates, layout_list, staging, score_config, image_model, detector, layout_score, device,
                    report.invalid,
                )  # fmt: skip
                scores_path = out / "scores.jsonl"
                for number, record in enumerate(records, start=1):
                    check_score_record(record, f"the scores of this run: record {number}")
            selection = select(records, layout_list, config, invalid=invalid)
            try:
                with _progress() as progress:
                    task = progress.add_task("write", total=len(selection.kept))
                    write_dataset(selection, staging, candidates, scores_path, masker,
                                  on_image=lambda: progress.advance(task), discovery=discovery)  # fmt: skip
                summary = {
                    "candidates_dir": str(candidates),
                    "layouts": str(layouts),
                    "scores": str(scores_path),
                    "masks": masker.describe() if masker else None,
                    # What made the candidates (generator, demo_only, ...), so a demo-only dataset says so.
                    "generation": generation,
                    # Layout records of the file that failed validation: none of their candidates is kept.
                    "invalid_layouts": [
                        {"index": bad.index, "layout_id": bad.layout_id, "error": bad.error} for bad in report.invalid
                    ],
                    **selection.summary(config),
                    "dropped_images": selection.dropped_images,
                    "dropped_instances": selection.dropped_instances,
                }
                (staging / "summary.json").write_text(
                    jsonio.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
                )
                _commit(staging, target)
            except OSError as exc:
                raise InputError(
                    f"--out {out}: cannot write the dataset ({exc.strerror or exc}); nothing was changed there"
                ) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _print_summary(summary, out)
    warn(id_warnings)
    warn(warnings)
    if report.invalid:
        from clis.cli.score import invalid_layouts_warning

        warn(invalid_layouts_warning(layouts, report.invalid))
        raise typer.Exit(1)


def _print_summary(summary: dict, out: Path) -> None:
    # Paths and reasons are user text (an --out of "ds[/x]"): cells and lines are never markup.
    table = Table(title=Text("clis pick"), show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("count", justify="right")

    def row(what: str, count: int) -> None:
        table.add_row(Text(what), Text(str(count)))

    row("candidates", summary["candidates"])
    row("images kept", summary["images_kept"])
    for reason, n in summary["images_dropped_by_reason"].items():
        row(f"images dropped: {reason}", n)
    row("instances kept", summary["instances_kept"])
    row("instances dropped (below --min-instance or unscored)", summary["instances_dropped"])
    row("layouts with no kept image", len(summary["layouts_without_image"]))
    console.print(table)
    console.print(
        f"dataset: {out / 'annotations.json'}, {out / 'images'}; summary: {out / 'summary.json'}", markup=False
    )
    # An empty dataset still exits 0, but never silently: say which threshold dropped what.
    from clis.cli import warn
    from clis.pick import empty_dataset_warnings

    warn(empty_dataset_warnings(summary))


def register(app: typer.Typer) -> None:
    app.command("pick")(pick)

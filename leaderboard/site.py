"""Build the static leaderboard site: an index with the tables, one page per row, exports.

The site is plain files with relative links only (no CDN, no network), so it works opened
from disk and on any static host. Every user string reaches the HTML through jinja2 with
autoescaping on, and every file name built from user text is a ``[a-z0-9-]`` slug.

Layout of ``out_dir``::

    index.html              the tables, metric definitions, provenance
    leaderboard.md / .csv   the exports
    assets/                 style.css, sort.js, the score colour scale
    data/<slug>.json        copies of the result files the board was built from
    plots/<study>.png       candidate CLIS per row (when rows name their scores files)
    rows/<slug>.html        one page per row; its images and instances.csv in rows/<slug>/

Example:
    >>> import json, tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "result.json").write_text(json.dumps({
    ...     "schema": "clis.bench/1", "study": "compare",
    ...     "metrics": [{"key": "clis_mean", "label": "CLIS (mean)"}],
    ...     "rows": [{"name": "gligen", "values": {"clis_mean": {"value": 61.2}}}]}))
    >>> report = build_site([tmp / "result.json"], tmp / "site")
    >>> report.index.name, len(report.pages)
    ('index.html', 1)
"""

from __future__ import annotations

import datetime as dt
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clis import __version__
from clis.errors import ClisError, InputError
from clis.files import is_inside
from clis.formats import load_layouts
from clis.outputs import write_csv_frame
from leaderboard.config import LeaderboardConfig
from leaderboard.details import (
    Candidate,
    finite_number,
    instance_frame,
    load_thumbnail_safe,
    pick_best_and_worst,
    plot_board_distributions,
    plot_row_distributions,
    read_scores,
    resolve_image,
    score_colour,
)
from leaderboard.exports import direction_mark, write_exports
from leaderboard.schema import SITE_MARKER, BenchResult, ResultFileError, collect_result_files, load_result
from leaderboard.table import Board, BoardRow, build_boards, flatten_provenance, format_interval, format_number, slugify

# Written into every site this builder makes: only folders holding it are ever cleaned.
MARKER = SITE_MARKER
GENERATED_DIRS = ("assets", "data", "plots", "rows")
GENERATED_FILES = ("index.html", "leaderboard.md", "leaderboard.csv")
STATIC_FILES = ("style.css", "sort.js")


@dataclass
class Thumb:
    """A best or worst candidate on a row page."""

    src: str | None
    image: str
    layout_id: str
    caption: str
    scores: dict[str, str]
    note: str | None = None


@dataclass
class RowPage:
    board: Board
    row: BoardRow
    notes: list[str] = field(default_factory=list)
    best: list[Thumb] = field(default_factory=list)
    worst: list[Thumb] = field(default_factory=list)
    distributions: str | None = None
    instances: list[dict[str, Any]] = field(default_factory=list)
    n_instances: int = 0
    instances_csv: str | None = None
    n_candidates: int | None = None
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class SiteReport:
    """What a build wrote, and the problems it recorded and went past."""

    out_dir: Path
    index: Path
    pages: list[Path]
    exports: dict[str, Path]
    boards: list[Board]
    notes: list[str]


def load_results(paths: list[Path | str]) -> list[BenchResult]:
    """Read every result file (folders are searched for ``clis.bench`` files)."""
    files = collect_result_files([Path(p) for p in paths])
    if not files:
        raise ResultFileError(
            "no result files found in " + ", ".join(str(p) for p in paths) + " (expected JSON files of schema clis.bench/1)"
        )
    return [load_result(path) for path in files]


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("leaderboard", "templates"),
        autoescape=True,  # every user string is escaped unless a template says otherwise (none does)
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = format_number
    env.filters["interval"] = format_interval
    env.filters["arrow"] = direction_mark
    env.filters["flat"] = flatten_provenance  # nested provenance as dotted-key rows, never str(dict)
    return env


def _check_out_dir(out_dir: Path, results: list[BenchResult]) -> None:
    """Refuse, before anything is written, a build that would replace what the user gave.

    A rebuild deletes the generated folders and every build writes the index and the exports,
    so no input (a result file, or a scores, layouts or image path a row names) may lie in
    them, and a folder that no build made must not hold a file of those names.
    """
    generated = [out_dir / name for name in GENERATED_DIRS]
    for result in results:
        named = [("", result.source)]
        for index, row in enumerate(result.rows):
            for key in ("scores_file", "layouts_file", "images_root"):
                named.append((f": rows[{index}] ({row.name!r}): {key}", result.resolve(getattr(row, key))))
        for where, path in named:
            folder = next((g for g in generated if path is not None and is_inside(path, g)), None)
            if folder is not None:
                raise InputError(
                    f"{result.source}{where}: {path} lies in {folder}, which building into {out_dir} replaces; "
                    "copy it out of the site folder or choose another --out"
                )
    if out_dir.is_dir() and not (out_dir / MARKER).exists():
        taken = [name for name in (*GENERATED_FILES, *GENERATED_DIRS) if (out_dir / name).exists()]
        if taken:
            raise InputError(
                f"--out {out_dir}: holds {', '.join(taken)} but is not a site built by clis leaderboard build "
                f"(no {MARKER} in it), so building there would overwrite them; choose an empty or new folder"
            )


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ClisError(f"{out_dir}: exists and is not a folder")
    if (out_dir / MARKER).exists():
        # A previous build: drop its generated folders so removed rows leave no stale pages.
        for name in GENERATED_DIRS:
            shutil.rmtree(out_dir / name, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("built by clis leaderboard build; generated folders are replaced on rebuild\n")


def _write_assets(out_dir: Path) -> None:
    assets = out_dir / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    static = resources.files("leaderboard") / "static"
    for name in STATIC_FILES:
        (assets / name).write_bytes((static / name).read_bytes())
    # The colour scale of the boxes, as an image: inline styles would need a looser CSP.
    scale = Image.new("RGB", (202, 14))
    for x in range(scale.width):
        colour = score_colour(100.0 * x / (scale.width - 1))
        for y in range(scale.height):
            scale.putpixel((x, y), colour)
    scale.save(assets / "score-scale.png")


def _layout_captions(result: BenchResult, row: Any, notes: list[str]) -> dict[str, str]:
    path = result.resolve(row.layouts_file)
    if path is None:
        return {}
    if not path.is_file():
        notes.append(f"layouts file {row.layouts_file} not found (looked for {path}); captions are not shown")
        return {}
    try:
        return {layout.id: layout.caption for layout in load_layouts(path)}
    except ClisError as exc:
        notes.append(f"layouts file {row.layouts_file} could not be read: {exc}")
        return {}


def _thumbs(
    picked: list[Candidate], kind: str, page: RowPage, captions: dict[str, str], scores_path: Path, out_dir: Path
) -> list[Thumb]:
    thumbs = []
    for i, candidate in enumerate(picked, start=1):
        scores = {key: format_number(value, 1) for key, value in candidate.scores.items()}
        thumb = Thumb(
            src=None, image=candidate.image, layout_id=candidate.layout_id,
            caption=captions.get(candidate.layout_id, ""), scores=scores,
        )
        image_path = resolve_image(candidate.image, page.row.result, page.row.row, scores_path)
        if image_path is None:
            thumb.note = "image file not found"
        else:
            relative = f"rows/{page.row.slug}/{kind}-{i}.png"
            problem = load_thumbnail_safe(image_path, candidate.instances, out_dir / relative)
            if problem:
                thumb.note = problem
            else:
                thumb.src = relative
        thumbs.append(thumb)
    return thumbs


def _row_page(board: Board, row: BoardRow, config: LeaderboardConfig, out_dir: Path) -> RowPage:
    page = RowPage(board=board, row=row)
    result, data = row.result, row.row
    scores_path = result.resolve(data.scores_file)
    if scores_path is None:
        page.notes.append(
            "this row names no scores file, so there are no candidates, per-instance scores or distributions to show"
        )
        return page
    if not scores_path.is_file():
        page.notes.append(f"scores file {data.scores_file} not found (looked for {scores_path})")
        return page
    try:
        scores = read_scores(scores_path)
    except InputError as exc:  # over the size limit, or no regular file
        page.notes.append(f"scores file {data.scores_file} cannot be read ({exc})")
        return page
    except (OSError, UnicodeDecodeError) as exc:
        page.notes.append(f"scores file {data.scores_file} cannot be read ({exc.__class__.__name__})")
        return page
    page.notes.extend(scores.problems[:5])
    if len(scores.problems) > 5:
        page.notes.append(f"(and {len(scores.problems) - 5} more bad lines in {scores_path.name})")
    failed = sum(1 for c in scores.candidates if c.error)
    if failed:
        page.notes.append(f"{failed} candidate(s) failed to score and are left out of the best/worst lists")
    page.candidates = scores.candidates
    page.n_candidates = len(scores.candidates)
    captions = _layout_captions(result, data, page.notes)
    if data.images_root is None:
        page.notes.append("this row names no images_root; images were looked for beside the scores file")
    best, worst = pick_best_and_worst(scores.candidates, config.thumbnails)
    page.best = _thumbs(best, "best", page, captions, scores_path, out_dir)
    page.worst = _thumbs(worst, "worst", page, captions, scores_path, out_dir)
    missing = sum(1 for t in page.best + page.worst if t.src is None)
    if missing:
        page.notes.append(f"{missing} candidate image(s) could not be drawn (see below)")

    instances = instance_frame(scores.candidates)
    page.n_instances = len(instances)
    if not instances.empty:
        page.instances_csv = f"rows/{row.slug}/instances.csv"
        # The row's folder may not exist yet: no candidate image could be drawn into it.
        (out_dir / page.instances_csv).parent.mkdir(parents=True, exist_ok=True)
        write_csv_frame(instances, out_dir / page.instances_csv)  # labels, phrases and ids are the submitter's text
        shown = instances.sort_values("score", ascending=True, na_position="first").head(config.max_instance_rows)
        page.instances = shown.astype(object).where(shown.notna(), None).to_dict("records")
    min_instance = finite_number(result.settings.get("min_instance"))
    distributions = f"rows/{row.slug}/distributions.png"
    if plot_row_distributions(scores.candidates, instances, out_dir / distributions, min_instance):
        page.distributions = distributions
    return page


def _copy_sources(boards: list[Board], out_dir: Path) -> dict[str, str]:
    """Copy every result file into ``data/`` so visitors can download exactly what was shown.

    Returns the site-relative path of each copy, keyed by ``str(result.source)``.
    """
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    copies: dict[str, str] = {}
    used: set[str] = set()
    for board in boards:
        for result in board.sources:
            if result.source is None or str(result.source) in copies:
                continue
            base = slugify(f"{result.study}-{result.source.stem}", "result")
            name, k = f"{base}.json", 2
            while name in used:
                name, k = f"{base}-{k}.json", k + 1
            used.add(name)
            shutil.copyfile(result.source, out_dir / "data" / name)
            copies[str(result.source)] = f"data/{name}"
    return copies


def build_site(
    result_paths: list[Path | str],
    out_dir: Path | str,
    config: LeaderboardConfig | None = None,
    show_progress: bool = False,
) -> SiteReport:
    """Build the site from result files (or folders of them) into ``out_dir``."""
    config = config or LeaderboardConfig()
    out_dir = Path(out_dir)
    results = load_results(list(result_paths))
    _check_out_dir(out_dir, results)
    boards = build_boards(results, config)
    _prepare_out_dir(out_dir)
    _write_assets(out_dir)
    copies = _copy_sources(boards, out_dir)
    env = _environment()
    built = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    common = {"config": config, "builder_version": __version__, "built": built, "copies": copies}

    pages: list[Path] = []
    notes: list[str] = []
    board_plots: dict[str, str] = {}
    total = sum(len(b.rows) for b in boards)
    progress = (
        Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
        if show_progress
        else nullcontext()
    )
    with progress:
        task = progress.add_task("building row pages", total=total) if show_progress else None
        for board in boards:
            per_row: dict[str, list[Candidate]] = {}
            for row in board.rows:
                page = _row_page(board, row, config, out_dir)
                per_row[row.name] = page.candidates
                notes.extend(f"{row.name}: {n}" for n in page.notes)
                path = out_dir / "rows" / f"{row.slug}.html"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(env.get_template("row.html").render(page=page, root="../", **common), encoding="utf-8")
                pages.append(path)
                if task is not None:
                    progress.advance(task)
            plot = f"plots/{board.slug}.png"
            if plot_board_distributions(per_row, out_dir / plot):
                board_plots[board.study] = plot

    exports = write_exports(boards, config.title, out_dir)
    index = out_dir / "index.html"
    index.write_text(
        env.get_template("index.html").render(boards=boards, board_plots=board_plots, root="", **common),
        encoding="utf-8",
    )
    return SiteReport(out_dir=out_dir, index=index, pages=pages, exports=exports, boards=boards, notes=notes)

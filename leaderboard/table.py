"""Turn result files into leaderboard tables: one table per study, one row per compared thing.

Rows of several result files of the same study share a table (submitting a new generator's
result file adds a row); rows of different studies (``compare`` ranks generators,
``correlate`` ranks score columns) never mix.

Example:
    >>> from leaderboard.schema import parse_result
    >>> result = parse_result({
    ...     "schema": "clis.bench/1", "study": "compare",
    ...     "metrics": [{"key": "clis_mean", "label": "CLIS (mean)"}],
    ...     "rows": [
    ...         {"name": "gligen", "values": {"clis_mean": {"value": 61.2, "ci_low": 58.9, "ci_high": 63.4}}},
    ...         {"name": "instdiff", "values": {"clis_mean": {"value": 70.0}}},
    ...     ]}, "result.json")
    >>> board = build_boards([result])[0]
    >>> [row.name for row in board.rows]
    ['instdiff', 'gligen']
    >>> board.cell(board.rows[1], "clis_mean")
    '61.20 [58.90, 63.40]'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from clis import jsonio
from clis.errors import InputError
from leaderboard.config import LeaderboardConfig
from leaderboard.schema import BenchResult, Interval, MetricDef, ResultRow

# Shown for a figure that is null; the same string in HTML and Markdown.
MISSING = "–"

# Heading and one-line description of each study's table: what its rows are. Only ``compare``
# ranks generators; the other studies rank score columns (CLIS, CLIS-I, their terms).
STUDY_TEXT = {
    "compare": ("Generators ranked by CLIS",
                "Each row is a layout-conditioned generator, scored on the same layouts."),
    "corrupt": ("Sensitivity to corruptions",
                "Each row is a score, not a generator: how often the clean (image, layout) pair beats its "
                "corrupted variants (accuracy) and how the score falls with the severity (Kendall τ)."),
    "correlate": ("Agreement with human ratings",
                  "Each row is a score, not a generator: its rank correlation with human ratings."),
    "pairwise": ("Agreement with human preferences",
                 "Each row is a score, not a generator: how often it picks the image people preferred."),
    "buckets": ("Score buckets", "Each row is a bucket of candidates by score, exported as a COCO subset."),
    "downstream": ("Downstream detectors per score bucket",
                   "Each row is a score bucket: the detector trained on it, evaluated on real data."),
    "layouts": ("Real layouts against corrupted twins",
                "Each row is a layout score (CLIS-L or one of its parts), not a generator: how often a real "
                "layout scores above its twin with the boxes corrupted (flip, swap, scale, shift, random; "
                "win rate, ties half), whether the score falls with the severity (Kendall τ) and the share "
                "scoring at least the threshold. No images are needed."),
}
DEMO_GENERATORS = ("shapes",)


def study_text(study: str) -> tuple[str, str]:
    """(heading, description) of a study's table; unknown studies get a plain heading."""
    return STUDY_TEXT.get(study, (f"Study: {study}", ""))


def _demo_generator(info: Any) -> str | None:
    """The generator name when generation info (a generate or score manifest's) is demo-only."""
    if not isinstance(info, dict):
        return None
    generator = info.get("generator")
    if info.get("demo_only") is True or generator in DEMO_GENERATORS:
        return str(generator or "demo")
    return None


def _read_json_object(path: Any) -> dict:
    # Only a hint for the demo badge: a manifest that is missing or that strict JSON refuses
    # (binary, NaN, nested 100k deep) counts as no manifest.
    try:
        data = jsonio.loads(jsonio.read_text(path, "manifest"))
    except (InputError, OSError, ValueError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


def demo_only_generator(row: ResultRow, result: BenchResult) -> str | None:
    """Which demo-only generator (``shapes``) made this row's candidates, or None.

    Looked up in this order: ``generation`` on the row or on the result; the manifest
    ``clis score`` wrote beside the row's scores file (``run.generation``); the generate
    manifest (``manifest.json``) of an image folder the study read itself (``corrupt``,
    ``compare`` of folders) or of the row's ``images_root``.
    """
    for info in ((row.model_extra or {}).get("generation"), (result.model_extra or {}).get("generation")):
        if found := _demo_generator(info):
            return found
    scores = result.resolve(row.scores_file)
    if scores is not None:
        manifest = _read_json_object(scores.with_name(scores.name + ".manifest.json"))
        if found := _demo_generator((manifest.get("run") or {}).get("generation")):
            return found
    folders = [result.resolve(ref.path) for ref in result.inputs if ref.role in ("images", "candidates")]
    folders.append(result.resolve(row.images_root))
    for folder in folders:
        if folder is not None and (found := _demo_generator(_read_json_object(folder / "manifest.json"))):
            return found
    return None


def format_number(value: float | None, decimals: int) -> str:
    return MISSING if value is None else f"{value:.{decimals}f}"


def format_interval(interval: Interval | None, decimals: int) -> str:
    """``61.2 (58.9..63.4)`` as ``"61.20 [58.90, 63.40]"``; the interval is left out when null."""
    if interval is None or interval.value is None:
        return MISSING
    text = format_number(interval.value, decimals)
    if interval.ci_low is not None and interval.ci_high is not None:
        text += f" [{format_number(interval.ci_low, decimals)}, {format_number(interval.ci_high, decimals)}]"
    return text


def _provenance_key(prefix: str, key: Any) -> str:
    key = str(key)
    if re.fullmatch(r"[^.\[\]\s]+", key):
        return f"{prefix}.{key}" if prefix else key
    # Quoted, so that "model.safetensors" does not read as two levels.
    return f"{prefix}[{json.dumps(key, ensure_ascii=False)}]"


def provenance_text(value: Any) -> str:
    """One leaf of provenance as text: strings as they are, anything else as JSON (never ``str(dict)``)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def flatten_provenance(mapping: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested models/settings/scorer entries as ``(dotted key, text)`` rows, in file order.

    Dicts open into ``parent.child`` keys, lists holding dicts or lists into ``parent[i]``;
    a list of plain values stays one row (``["a", "b"]``), so does an empty dict or list.

    Example:
        >>> flatten_provenance({"image_model": "hf:x", "layout": {"llm": {"spec": "hf:y"}, "pool": None},
        ...                     "files": {"model.safetensors": "ab"}, "q": [["a", "b"]], "tags": [1, 2]})
        [('image_model', 'hf:x'), ('layout.llm.spec', 'hf:y'), ('layout.pool', 'null'), ('files["model.safetensors"]', 'ab'), ('q[0]', '["a", "b"]'), ('tags', '[1, 2]')]
    """
    if isinstance(mapping, dict) and mapping:
        items = [(_provenance_key(prefix, key), value) for key, value in mapping.items()]
    elif isinstance(mapping, list) and any(isinstance(v, (dict, list)) for v in mapping):
        items = [(f"{prefix}[{i}]", value) for i, value in enumerate(mapping)]
    else:
        return [(prefix, provenance_text(mapping))]
    rows: list[tuple[str, str]] = []
    for key, value in items:
        rows.extend(flatten_provenance(value, key))
    return rows


def slugify(text: str, fallback: str = "row") -> str:
    """A file-name-safe slug: only ``a-z0-9-`` ever reaches a path or a URL built from user text."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48]
    return slug or fallback


@dataclass
class Column:
    key: str
    title: str
    description: str
    higher_is_better: bool
    decimals: int


@dataclass
class BoardRow:
    """One row of a table, with the result file it came from."""

    name: str
    row: ResultRow
    result: BenchResult
    slug: str = ""
    rank: int = 0
    # The demo-only generator (shapes) that made this row's candidates: the row gets a badge.
    demo_only: str | None = None

    def value(self, key: str) -> float | None:
        interval = self.row.values.get(key)
        return None if interval is None else interval.value


@dataclass
class Board:
    """One table: every row of one study, sorted by the default sort column."""

    study: str
    columns: list[Column]
    rows: list[BoardRow]
    sources: list[BenchResult]
    sort_key: str | None
    notes: list[str] = field(default_factory=list)
    title: str = ""
    description: str = ""
    # Unique among the boards of one build: "my study" and "my-study" must not share a page
    # anchor or a plot file.
    slug: str = ""

    def column(self, key: str) -> Column:
        for column in self.columns:
            if column.key == key:
                return column
        raise KeyError(key)

    def cell(self, row: BoardRow, key: str) -> str:
        return format_interval(row.row.values.get(key), self.column(key).decimals)

    @property
    def sort_descending(self) -> bool:
        return self.sort_key is None or self.column(self.sort_key).higher_is_better


def _columns(results: list[BenchResult], config: LeaderboardConfig, notes: list[str]) -> list[Column]:
    defined: dict[str, MetricDef] = {}
    for result in results:
        for metric in result.metrics:
            defined.setdefault(metric.key, metric)
    if config.metrics:
        keys = [key for key in config.metrics if key in defined]
        absent = [key for key in config.metrics if key not in defined]
        if absent and keys:
            notes.append(f"metrics in the config that no result file of this study has: {', '.join(absent)}")
        if not keys:
            # A config written for another study must not blank the table: show everything.
            keys = list(defined)
    else:
        keys = list(defined)
    return [
        Column(
            key=key,
            title=defined[key].title,
            description=defined[key].description,
            higher_is_better=defined[key].higher_is_better,
            decimals=config.decimals_for(key),
        )
        for key in keys
    ]


def _sort_rows(rows: list[BoardRow], key: str | None, descending: bool) -> list[BoardRow]:
    if key is None:
        return sorted(rows, key=lambda r: r.name)
    present = [r for r in rows if r.value(key) is not None]
    missing = [r for r in rows if r.value(key) is None]
    present.sort(key=lambda r: r.name)
    present.sort(key=lambda r: r.value(key), reverse=descending)  # stable: ties stay by name
    return present + sorted(missing, key=lambda r: r.name)


def _differing_settings(results: list[BenchResult]) -> list[str]:
    # Flattened, so a note names the nested setting that differs (``layout.llm``), not its parent.
    flat = [dict(flatten_provenance(r.settings)) for r in results]
    keys = sorted({k for f in flat for k in f})
    return [k for k in keys if len({f.get(k) for f in flat}) > 1]


def _unique_slug(base: str, used: set[str]) -> str:
    slug, k = base, 2
    while slug in used:
        slug, k = f"{base}-{k}", k + 1
    used.add(slug)
    return slug


def build_boards(results: list[BenchResult], config: LeaderboardConfig | None = None) -> list[Board]:
    """Group rows by study into sorted tables; ``compare`` (generators) comes first."""
    config = config or LeaderboardConfig()
    studies: dict[str, list[BenchResult]] = {}
    for result in results:
        studies.setdefault(result.study, []).append(result)
    order = sorted(studies, key=lambda s: (s != "compare", s))
    boards = []
    used_slugs: set[str] = set()
    used_board_slugs: set[str] = set()
    for study in order:
        members = studies[study]
        notes: list[str] = []
        columns = _columns(members, config, notes)
        keys = [c.key for c in columns]
        sort_key = next((k for k in config.sort_by if k in keys), keys[0] if keys else None)
        rows = []
        names: dict[str, int] = {}
        for result in members:
            for row in result.rows:
                names[row.name] = names.get(row.name, 0) + 1
        for result in members:
            for row in result.rows:
                name = row.name
                if names[name] > 1 and result.source is not None:
                    # The same name in two submissions: keep both, told apart by their file.
                    name = f"{row.name} ({result.source.name})"
                rows.append(BoardRow(name=name, row=row, result=result, demo_only=demo_only_generator(row, result)))
        title, description = study_text(study)
        board = Board(study=study, columns=columns, rows=[], sources=members, sort_key=sort_key, notes=notes,
                      title=title, description=description)
        board.slug = _unique_slug(slugify(study, "study"), used_board_slugs)
        board.rows = _sort_rows(rows, sort_key, board.sort_descending)
        for rank, board_row in enumerate(board.rows, start=1):
            board_row.rank = rank
            board_row.slug = _unique_slug(f"{board.slug}-{slugify(board_row.name)}", used_slugs)
        differing = _differing_settings(members)
        if differing:
            notes.append(
                "rows come from runs with different settings (" + ", ".join(differing) + "); compare them with care"
            )
        boards.append(board)
    return boards

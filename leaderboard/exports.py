"""The leaderboard as Markdown (for READMEs and papers) and CSV (for other tools).

The Markdown table prints each figure exactly as the HTML table does (same formatting
function), so a number copied into a paper matches the published board. The CSV keeps full
precision: one row per table row, with ``<metric>``, ``<metric>_ci_low`` and
``<metric>_ci_high`` columns.

Example:
    >>> from leaderboard.schema import parse_result
    >>> from leaderboard.table import build_boards
    >>> result = parse_result({"schema": "clis.bench/1", "study": "compare",
    ...     "metrics": [{"key": "clis_mean", "label": "CLIS"}],
    ...     "rows": [{"name": "a|b", "values": {"clis_mean": {"value": 61.25}}}]}, "r.json")
    >>> print(board_to_markdown(build_boards([result])[0]))
    | # | Name | CLIS ↑ |
    |---:|---|---:|
    | 1 | a\\|b | 61.25 |
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from clis.outputs import write_csv_frame
from leaderboard.table import Board

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def escape_markdown(text: str) -> str:
    """Make user text inert in a Markdown table cell.

    ``|`` would split the cell and ``* _ [ ] ` #`` would format it, so they are backslash
    escaped; ``< > &`` become HTML entities because Markdown renderers pass raw HTML through
    (a label ``<script>`` must show as text there too); newlines would end the row.
    """
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split())


def code_span(text: str) -> str:
    """``text`` as inline code that no backtick inside it can close early.

    Inside a code span Markdown escapes nothing, so the fence is made one backtick longer than
    the longest run of backticks in the text (CommonMark's rule), and newlines are folded.
    """
    text = " ".join(text.split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def direction_mark(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def board_to_markdown(board: Board) -> str:
    """One study's table as a GitHub-flavoured Markdown table (no trailing newline)."""
    header = ["#", "Name", *(f"{escape_markdown(c.title)} {direction_mark(c.higher_is_better)}" for c in board.columns)]
    align = ["---:", "---", *("---:" for _ in board.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in board.rows:
        name = escape_markdown(row.name) + (" (demo only)" if row.demo_only else "")
        cells = [str(row.rank), name, *(board.cell(row, c.key) for c in board.columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def boards_to_markdown(boards: list[Board], title: str) -> str:
    """Every table, each under a heading, with its metric definitions below it."""
    parts = [f"# {escape_markdown(title)}", ""]
    for board in boards:
        parts += [f"## {escape_markdown(board.study)}", ""]
        if board.title:
            # What the rows are: generators only in `compare`, score columns in the other studies.
            about = f"**{escape_markdown(board.title)}** ({code_span('clis bench ' + board.study)})"
            parts += [about + (f". {escape_markdown(board.description)}" if board.description else ""), ""]
        parts += [board_to_markdown(board), ""]
        if board.columns:
            parts.append("Intervals in brackets are bootstrap confidence intervals.")
            parts.append("")
        for column in board.columns:
            definition = escape_markdown(column.description) if column.description else "(no description)"
            better = "higher is better" if column.higher_is_better else "lower is better"
            parts.append(f"- **{escape_markdown(column.title)}** ({code_span(column.key)}): {definition}; {better}.")
        for note in board.notes:
            parts.append(f"- Note: {escape_markdown(note)}")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def boards_to_frame(boards: list[Board]) -> pd.DataFrame:
    """Every table row as one flat record (full precision, nulls as empty cells)."""
    records = []
    for board in boards:
        for row in board.rows:
            record: dict[str, object] = {
                "study": board.study,
                "rank": row.rank,
                "name": row.name,
                "n_images": row.row.n_images,
                "n_layouts": row.row.n_layouts,
                "demo_only": bool(row.demo_only),
            }
            for column in board.columns:
                interval = row.row.values.get(column.key)
                record[column.key] = None if interval is None else interval.value
                record[f"{column.key}_ci_low"] = None if interval is None else interval.ci_low
                record[f"{column.key}_ci_high"] = None if interval is None else interval.ci_high
            record["clis_version"] = row.result.clis_version
            record["source"] = row.result.source.name if row.result.source else None
            records.append(record)
    return pd.DataFrame.from_records(records)


def write_exports(boards: list[Board], title: str, out_dir: Path) -> dict[str, Path]:
    """Write ``leaderboard.md`` and ``leaderboard.csv`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown_path = out_dir / "leaderboard.md"
    markdown_path.write_text(boards_to_markdown(boards, title), encoding="utf-8")
    csv_path = out_dir / "leaderboard.csv"
    write_csv_frame(boards_to_frame(boards), csv_path)  # names and metric keys are the submitters' text
    return {"markdown": markdown_path, "csv": csv_path}

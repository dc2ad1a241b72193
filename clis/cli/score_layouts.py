"""``clis score-layouts LAYOUTS``: CLIS-L for every layout, one JSON line each, in input order."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from clis.errors import ClisError, InputError

# Layouts scored per call: all statements of a chunk go through the LLM in shared batches,
# and finished chunks are written so a long run shows its output as it goes.
CHUNK = 256


def parse_weights(text: str) -> dict:
    """``"llm=0.7,geometry=0.3"`` or ``"0.7,0.3"`` -> ``{"llm": 0.7, "geometry": 0.3}``.

    >>> parse_weights("llm=0.7, geometry=0.3")
    {'llm': 0.7, 'geometry': 0.3}
    >>> parse_weights("1,0")
    {'llm': 1.0, 'geometry': 0.0}
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    names = ("llm", "geometry")
    weights: dict[str, float] = {}
    for i, part in enumerate(parts):
        name, _, value = part.rpartition("=")
        name = name.strip() or (names[i] if i < len(names) else "")
        if name not in names:
            raise InputError(f"--weights: unknown weight {name or part!r}; use llm=VALUE,geometry=VALUE")
        try:
            weights[name] = float(value)
        except ValueError:
            raise InputError(f"--weights: {part!r}: {value.strip()!r} is not a number") from None
    return weights


def summary_table(results: list[dict], out: Path) -> Table:
    scored = [r["clis_l"] for r in results if r["clis_l"] is not None]
    table = Table(title=escape(f"CLIS-L -> {out}"), show_header=False)
    table.add_row("layouts", str(len(results)))
    table.add_row("mean clis_l", f"{sum(scored) / len(scored):.1f}" if scored else "n/a")
    llm = [r["llm"] for r in results if r["llm"] is not None]
    geometry = [r["geometry"] for r in results if r["geometry"] is not None]
    table.add_row("mean llm", f"{sum(llm) / len(llm):.1f}" if llm else "not computed")
    table.add_row("mean geometry", f"{sum(geometry) / len(geometry):.1f}" if geometry else "not computed")
    table.add_row("unknown relation pairs", str(sum(r["unknown_pairs"] for r in results)))
    table.add_row("neutral (one object)", str(sum(1 for r in results if any("one object" in n for n in r["notes"]))))
    table.add_row("failed", str(sum(1 for r in results if r["error"])))
    return table


def score_layouts(
    layouts: Path = typer.Argument(..., help="layouts.json, an ACP scene-graph JSON or a COCO instances JSON."),
    out: Path = typer.Option(Path("layout_scores.jsonl"), "--out", "-o", help="Output JSONL, one line per layout."),
    llm: Optional[str] = typer.Option(None, "--llm", help="Causal LM spec or local PATH; 'none' for the pool only."),
    pool: Optional[Path] = typer.Option(None, "--pool", help="Pool file from `clis pool build` (geometric prior)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="llm=VALUE,geometry=VALUE (default 0.5,0.5)."),
    text_embedder: Optional[str] = typer.Option(None, "--text-embedder", help="Label-similarity model; 'none': exact."),
    match_threshold: Optional[float] = typer.Option(None, "--match-threshold", help="Label similarity to match (0.8)."),
    percentile: Optional[float] = typer.Option(None, "--percentile", help="Percentile of matching examples (98)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Statements per LLM forward pass."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ..."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file of CLIS-L settings; options win."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table."),
) -> None:
    """Score how plausible each layout's arrangement is (CLIS-L), without looking at images."""
    from clis.cli import fail

    try:
        results = _run(layouts, out, llm, pool, weights, text_embedder, match_threshold, percentile, batch_size,
                       device, config, quiet)
    except ClisError as exc:
        raise fail(str(exc), exc.exit_code)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not quiet:
        Console(highlight=False, soft_wrap=True).print(summary_table(results, out))
    reasons = Counter(g["unknown"] for r in results for p in r["pairs"] for g in p["geometry"] if g["unknown"])
    for reason, count in reasons.most_common(5):
        err.print(f"warning: {count} pair(s): {reason}", markup=False)
    failed = [r for r in results if r["error"]]
    if failed:
        err.print(f"error: {len(failed)} of {len(results)} layouts failed; first ({failed[0]['id']}): "
                  f"{failed[0]['error']}", markup=False)
        raise typer.Exit(1)


def _run(layouts: Path, out: Path, llm, pool, weights, text_embedder, match_threshold, percentile, batch_size,
         device, config, quiet) -> list[dict]:
    from pydantic import ValidationError

    from clis.formats import load_layouts
    from clis.layout_score import LayoutScoreConfig, LayoutScorer
    from clis.layout_score.scorer import load_config_file

    settings = load_config_file(config) if config else {}
    options = {"llm": llm, "pool": str(pool) if pool else None, "text_embedder": text_embedder,
               "match_threshold": match_threshold, "percentile": percentile, "batch_size": batch_size,
               "device": device, "weights": parse_weights(weights) if weights else None}
    settings.update({k: v for k, v in options.items() if v is not None})
    try:
        cfg = LayoutScoreConfig(**settings)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        raise InputError(f"{config or 'options'}: {where}: {error['msg'].removeprefix('Value error, ')}") from None
    except TypeError as exc:
        raise InputError(f"{config or 'options'}: {exc}") from None

    layout_list = load_layouts(layouts)  # checked before any model is loaded
    scorer = LayoutScorer(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = {**scorer.manifest(), "layouts": str(layouts), "output": str(out)}
    out.with_name(out.name + ".manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                                         encoding="utf-8")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), disable=quiet)
    records: list[dict] = []
    with progress, open(out, "w", encoding="utf-8") as handle:
        layouts_task = progress.add_task("layouts", total=len(layout_list))
        statements_task = progress.add_task("statements", total=None, visible=cfg.llm_enabled)

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage == "statements":
                progress.update(statements_task, completed=done, total=total)

        for start in range(0, len(layout_list), CHUNK):
            chunk = layout_list[start:start + CHUNK]
            for result in scorer.score_layouts(chunk, progress=on_progress):
                record = result.to_dict()
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                records.append(record)
            handle.flush()
            progress.advance(layouts_task, len(chunk))
    return records


def register(app: typer.Typer) -> None:
    app.command("score-layouts")(score_layouts)

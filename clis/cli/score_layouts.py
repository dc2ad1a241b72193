"""``clis score-layouts LAYOUTS``: CLIS-L for every layout, one JSON line each, in input order."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from clis import jsonio
from clis.errors import ClisError, InputError
from clis.files import read_manifest, write_text_atomic

# Layouts scored per LLM call. All statements of a chunk share batches, which pays on a GPU;
# on the CPU a batch costs about what its statements cost alone, so each layout is its own
# call there and its line is written the moment it is scored (an interrupted run keeps it).
CHUNK_CPU = 1
CHUNK_GPU = 16


def summary_table(results: list[dict], out: Path) -> Table:
    scored = [r["clis_l"] for r in results if r["clis_l"] is not None]
    table = Table(title=escape(f"CLIS-L -> {out}"), show_header=False)
    table.add_row("layouts", str(len(results)))
    table.add_row("mean clis_l", f"{sum(scored) / len(scored):.1f}" if scored else "n/a")
    llm = [r["llm"] for r in results if r["llm"] is not None]
    geometry = [r["geometry"] for r in results if r["geometry"] is not None]
    pair_prior = [r["pair_prior"] for r in results if r.get("pair_prior") is not None]
    table.add_row("mean pair prior", f"{sum(pair_prior) / len(pair_prior):.1f}" if pair_prior else "not computed")
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
    pool: Optional[str] = typer.Option(
        None, "--pool", help="Pool file from `clis pool build`, embedded:nsr1k (default) or 'none'."),
    weights: Optional[str] = typer.Option(
        None, "--weights", help="llm=VALUE,geometry=VALUE,pair_prior=VALUE (default 0,1,1)."),
    text_embedder: Optional[str] = typer.Option(None, "--text-embedder", help="Label-similarity model; 'none': exact."),
    match_threshold: Optional[float] = typer.Option(None, "--match-threshold", help="Label similarity to match (0.8)."),
    percentile: Optional[float] = typer.Option(None, "--percentile", help="Percentile of matching examples (98)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Statements per LLM forward pass."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ..."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file of CLIS-L settings; options win."),
    resume: bool = typer.Option(False, "--resume", help="Keep the layouts already scored in --out; score the rest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse the whole layouts file when any layout is invalid (default: score the valid ones)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table."),
    engine: Optional[str] = typer.Option(None, "--engine", help="local (default) or ray: Ray Data actors (docs/scale.md)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray: a running cluster (default: a local Ray)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="ray: actors, each with its own CLIS-L models (1)."),
    gpus_per_worker: Optional[float] = typer.Option(None, "--gpus-per-worker", help="ray: GPUs per actor, e.g. 0.5 (0)."),
    cpus_per_worker: Optional[float] = typer.Option(None, "--cpus-per-worker", help="ray: CPUs per actor (1)."),
) -> None:
    """Score how plausible each layout's arrangement is (CLIS-L), without looking at images."""
    from clis.cli import fail, warn

    try:
        from clis.engines import engine_config_from_flags

        engine_config = engine_config_from_flags(engine, ray_address, workers, gpus_per_worker, cpus_per_worker)
        if engine_config.name == "ray":
            from clis.engines.ray_engine import import_ray

            import_ray()  # before the LLM loads and --out is rewritten
        results, warnings = _run(layouts, out, llm, pool, weights, text_embedder, match_threshold, percentile,
                                 batch_size, device, config, quiet, resume=resume, overwrite=overwrite, strict=strict,
                                 engine=engine_config)
    except ClisError as exc:
        raise fail(str(exc), exc.exit_code)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not quiet:
        Console(highlight=False, soft_wrap=True).print(summary_table(results, out))
    reasons = Counter(g["unknown"] for r in results for p in r["pairs"] for g in p["geometry"] if g["unknown"])
    for reason, count in reasons.most_common(5):
        err.print(f"warning: {count} pair(s): {reason}", markup=False)
    warn(warnings)
    failed = [r for r in results if r["error"]]
    if failed:
        err.print(f"error: {len(failed)} of {len(results)} layouts failed; first ({failed[0]['id']}): "
                  f"{failed[0]['error']}", markup=False)
        raise typer.Exit(1)


def _run(layouts: Path, out: Path, llm, pool, weights, text_embedder, match_threshold, percentile, batch_size,
         device, config, quiet, resume: bool = False, overwrite: bool = False,
         strict: bool = False, engine=None) -> tuple[list[dict], list[str]]:
    from clis.formats import read_layouts
    from clis.outputs import OutputLock, check_paths

    # The input and --out are checked before torch and the LLM are loaded.
    manifest_file = out.with_name(out.name + ".manifest.json")
    pool_file = Path(pool) if pool and not pool.startswith("embedded:") and pool.lower() != "none" else None
    check_paths(inputs={"LAYOUTS": layouts, "--config": config, "--pool": pool_file},
                outputs={"--out": out, "the manifest of --out": manifest_file})
    report = read_layouts(layouts, strict=strict)
    if out.exists() and out.stat().st_size > 0 and not (resume or overwrite):
        raise InputError(f"{out}: already exists; pass --resume to continue it or --overwrite to replace it")

    from clis.layout_score import LayoutScorer
    from clis.layout_score.cache import layout_key
    from clis.layout_score.scorer import config_from_options

    cfg = config_from_options(config, llm=llm, pool=pool, text_embedder=text_embedder, match_threshold=match_threshold,
                              percentile=percentile, batch_size=batch_size, device=device, weights=weights)

    scorer = LayoutScorer(cfg)
    manifest = {**scorer.manifest(), "layouts": str(layouts), "output": str(out)}
    out.parent.mkdir(parents=True, exist_ok=True)
    # Two runs appending to one file would each exit 0 with the other's lines mixed in.
    with OutputLock(out):
        return _score_into(report, layouts, out, manifest_file, manifest, scorer, cfg, hashes_of=layout_key,
                           resume=resume, quiet=quiet, engine=engine)


def _score_into(report, layouts: Path, out: Path, manifest_file: Path, manifest: dict, scorer, cfg, hashes_of,
                resume: bool, quiet: bool, engine=None) -> tuple[list[dict], list[str]]:
    """Write ``out`` (locked by the caller): kept lines of a resumed run, then the new ones."""
    from clis.cli.score import invalid_layouts_warning

    done = _resumable(out, manifest_file, manifest["id"], layouts, _file_order(report)) if resume and out.exists() else {}
    # A kept line must be of the same layout: same objects, boxes and relations (CLIS-L's input).
    hashes = {layout.id: hashes_of(layout) for layout in report.layouts}
    done = {key: record for key, record in done.items() if record.get("layout_key") == hashes.get(key)}
    order = _file_order(report)
    kept = [done[key] for key, _ in order if key in done]
    write_text_atomic(out, "".join(jsonio.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    write_text_atomic(manifest_file, jsonio.dumps(manifest, indent=2, ensure_ascii=False) + "\n")

    todo = [layout for layout in report.layouts if layout.id not in done]
    chunk = CHUNK_CPU if cfg.device.startswith("cpu") else CHUNK_GPU
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), disable=quiet)
    scored: dict[str, dict] = {}
    with progress, open(out, "a", encoding="utf-8") as handle:
        layouts_task = progress.add_task("layouts", total=len(order), completed=len(kept))
        statements_task = progress.add_task("statements", total=None, visible=cfg.llm_enabled)

        def on_progress(stage: str, done_: int, total: int) -> None:
            if stage == "statements":
                progress.update(statements_task, completed=done_, total=total)

        for key, bad in order:
            if bad is not None:
                scored[key] = _invalid_record(key, bad)
                handle.write(jsonio.dumps(scored[key], ensure_ascii=False) + "\n")
        handle.flush()
        progress.advance(layouts_task, len(report.invalid))
        if engine is not None and engine.name == "ray":
            for result in _ray_results(todo, cfg, chunk, engine):
                record = {**result, "layout_key": hashes[result["id"]]}
                handle.write(jsonio.dumps(record, ensure_ascii=False) + "\n")
                handle.flush()
                scored[result["id"]] = record
                progress.advance(layouts_task)
        else:
            for start in range(0, len(todo), chunk):
                part = todo[start:start + chunk]
                for result in scorer.score_layouts(part, progress=on_progress):
                    record = {**result.to_dict(), "layout_key": hashes[result.id]}
                    handle.write(jsonio.dumps(record, ensure_ascii=False) + "\n")
                    scored[result.id] = record
                handle.flush()
                progress.advance(layouts_task, len(part))
    records = [done.get(key) or scored[key] for key, _ in order]
    if done or report.invalid:
        # back to file order: kept lines and invalid layouts' rows were written first
        write_text_atomic(out, "".join(jsonio.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return records, invalid_layouts_warning(layouts, report.invalid)


def _ray_results(todo, cfg, chunk: int, engine):
    """``LayoutScore.to_dict()`` of ``todo``, in order, from LayoutScorer actors (``--engine ray``).

    The actors share the driver's CLIS-L cache file (SQLite in WAL mode, safe across processes)."""
    from clis.engines.ray_engine import map_stage
    from clis.engines.stages import LayoutStage

    rows = [{"layout": layout.model_dump(mode="json", by_alias=True)} for layout in todo]
    return map_stage(LayoutStage, {"config": cfg.model_dump(mode="json")}, rows, chunk, engine)


def _file_order(report) -> list[tuple[str, object]]:
    """``(record id, InvalidLayout or None)`` per layout record, in file order; an invalid
    record is keyed as its error records are (``InvalidLayout.key``)."""
    from clis.formats import InvalidLayout

    return [(entry.key, entry) if isinstance(entry, InvalidLayout) else (entry.id, None)
            for entry in report.in_file_order()]


def _invalid_record(key: str, bad) -> dict:
    return {"id": key, "clis_l": None, "llm": None, "geometry": None, "pairs": [], "unknown_pairs": 0, "notes": [],
            "manifest": None, "error": f"invalid layout: {bad.error}"}


def _resumable(out: Path, manifest_file: Path, manifest_id: str, layouts: Path,
               order: list[tuple[str, object]]) -> dict[str, dict]:
    """The successful records of an earlier run in ``out``, by layout id, for ``--resume``.

    Refuses (one line) a file made with other CLIS-L settings or models, a line that is not a
    record, a layout listed twice (two runs wrote into one file) and records of layouts that
    ``layouts`` does not have, since resuming rewrites the file and would lose them; a last
    line cut off mid-write is dropped.
    """
    from clis.layout_score.precomputed import layout_score_record

    hint = "drop --resume (or pass --overwrite) or use another --out"
    earlier = read_manifest(manifest_file, "the settings of the earlier run", hint)
    if earlier.get("id") != manifest_id:
        raise InputError(f"{manifest_file}: the earlier run used other CLIS-L settings or models (manifest id "
                         f"{earlier.get('id')!r} then, {manifest_id!r} now); {hint}")
    records: dict[str, dict] = {}
    seen: dict[str, int] = {}
    known = {key for key, _ in order}
    with open(out, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                break  # cut off by an interruption: scored again
            if not raw.strip():
                continue
            record = layout_score_record(raw)
            if record is None:
                raise InputError(f"{out}: line {number}: not a clis score-layouts record; --resume will not rewrite "
                                 "the file (pass --overwrite to replace it, or use another --out)")
            if record["id"] in seen:
                raise InputError(f"{out}: line {number}: layout {record['id']!r} is listed twice (first on line "
                                 f"{seen[record['id']]}), as when two runs write one file; {hint}")
            seen[record["id"]] = number
            if record["id"] not in known:
                raise InputError(f"{out}: line {number}: layout {record['id']!r} is not in {layouts}, and --resume "
                                 "would drop its record; resume with the layouts file of the earlier run, or pass "
                                 "--overwrite or another --out")
            if record.get("error") is None:
                records[record["id"]] = record
    return records


def register(app: typer.Typer) -> None:
    app.command("score-layouts")(score_layouts)

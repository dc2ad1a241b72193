"""``clis score IMAGES LAYOUTS``: CLIS-I (and CLIS-L when available) for every candidate image.

Writes ``scores.jsonl`` (one line per candidate, in input order) with a manifest beside it,
optionally a CSV, and prints a summary table. Exit codes: 0 all scored, 1 some candidates
failed (they are error records in the output), 2 bad input or missing model weights.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any, Iterable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from clis.errors import ClisError, InputError
from clis.models.defaults import DEFAULT_CLIP, DEFAULT_DETECTOR, DEFAULT_RATER, DEFAULT_VLM

# ScoreConfig's defaults as --help shows them, written out so that --help need not import
# clis.scorer (and torch); tests/test_cli_help.py checks them against ScoreConfig.
SHOWN_DEFAULTS = {"batch_size": "32", "device": "cpu"}

# --weight NAME=VALUE: which config group each name belongs to.
WEIGHT_NAMES = {
    "global": "weights", "instances": "weights", "region": "weights", "grounding": "weights",
    "detection": "weights", "context": "weights", "crop": "weights", "image": "combine", "layout": "combine",
}
CSV_COLUMNS = (
    "layout_id", "image", "clis", "clis_i", "clis_l", "global",
    "mean_instance", "min_instance", "n_instances", "n_found", "error",
)
SUMMARY_FIELDS = ("clis", "clis_i", "clis_l", "global")  # as clis.scorer.SUMMARY_FIELDS, which ScoreRun keeps
DTYPE_NAMES = ("float16", "bfloat16", "float32")  # as clis.scorer.DTYPES, without importing torch for --help


def parse_weights(items: list[str]) -> dict[str, dict[str, float]]:
    """``["global=0.6", "layout=0"]`` -> ``{"weights": {"global": 0.6}, "combine": {"layout": 0.0}}``."""
    groups: dict[str, dict[str, float]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in WEIGHT_NAMES:
            raise InputError(
                f"--weight {item!r}: expected NAME=VALUE with NAME one of {', '.join(WEIGHT_NAMES)}"
            )
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"--weight {item!r}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise InputError(f"--weight {item!r}: {value!r} is not a finite number")
        groups.setdefault(WEIGHT_NAMES[name], {})[name] = number
    return groups


def csv_row(record: dict) -> dict[str, Any]:
    scores = [i["score"] for i in record["instances"] if i.get("score") is not None]
    found = [i for i in record["instances"] if (i.get("detection") or {}).get("found")]
    row = {key: record.get(key) for key in ("layout_id", "image", "clis", "clis_i", "clis_l", "global", "error")}
    row.update(
        mean_instance=round(sum(scores) / len(scores), 4) if scores else None,
        min_instance=min(scores) if scores else None,
        n_instances=len(record["instances"]),
        n_found=len(found) if any(i.get("detection") is not None for i in record["instances"]) else None,
    )
    return row


def write_csv(records: Iterable[dict], path: Path) -> None:
    """One row per candidate, written atomically, with ids, paths and errors safe to open in a
    spreadsheet (``clis.outputs.csv_safe``); per-object detail stays in the JSONL. Rows are
    written as ``records`` come (a run's records are read back from its file), never all held."""
    from clis.outputs import csv_safe
    from clis.files import atomic_writer

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow({k: ("" if v is None else csv_safe(v)) for k, v in csv_row(record).items()})
        text.flush()
        text.detach()  # atomic_writer syncs and closes the file itself


def summary_table(run: Any, out: Path) -> Table:
    """Mean, median, min and max of each score over a :class:`clis.scorer.ScoreRun`'s candidates."""
    import numpy as np

    from clis.cli import plain

    table = Table(title=plain(f"clis score -> {out}"))
    table.add_column("", style="bold")
    for column in ("mean", "median", "min", "max", "n"):
        table.add_column(column, justify="right")
    for key in SUMMARY_FIELDS:
        values = run.values[key]
        if values:
            array = np.frombuffer(values, dtype=np.float64)  # the run's own buffer, not a copy
            table.add_row(key, *(f"{v:.2f}" for v in (statistics.fmean(values), float(np.median(array)),
                                                    float(array.min()), float(array.max()))), str(len(values)))
        else:
            table.add_row(key, "-", "-", "-", "-", "0")
    total = run.scored + run.failed
    table.caption = (
        f"{total} candidates: {run.scored} scored, {run.failed} failed"
        + (f", {run.resumed} kept from the previous run" if run.resumed else "")
        + (f"; {len(run.missing)} layouts have no images" if run.missing else "")
    )
    return table


def _overrides(**flags: Any) -> dict[str, Any]:
    return {key: value for key, value in flags.items() if value is not None}


def score(
    images: Path = typer.Argument(..., help="Folder of candidate images (images/<id>.png, images/<id>/*.png, ...)."),
    layouts: Path = typer.Argument(..., help="layouts.json, an ACP scene-graph JSON or a COCO instances JSON."),
    out: Path = typer.Option(Path("scores.jsonl"), "--out", "-o", help="Output JSONL, one line per candidate."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write one CSV row per candidate."),
    image_model: Optional[str] = typer.Option(None, "--image-model", show_default=DEFAULT_CLIP,
                                              help="CLIP spec or local PATH."),
    detector: Optional[str] = typer.Option(None, "--detector", show_default=DEFAULT_DETECTOR,
                                           help="Detector spec, local PATH, or 'none'."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, show_default=SHOWN_DEFAULTS["batch_size"],
                                             help="Images + crops per forward pass."),
    device: Optional[str] = typer.Option(None, "--device", show_default=SHOWN_DEFAULTS["device"],
                                         help="cpu, cuda, cuda:1, ..."),
    no_layout_score: bool = typer.Option(False, "--no-layout-score", help="Score images only (clis = clis_i)."),
    resume: bool = typer.Option(False, "--resume", help="Keep finished candidates in --out; score the rest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    config: Optional[Path] = typer.Option(None, "--config", help="Settings file (.json, .toml, .yaml)."),
    weight: list[str] = typer.Option(
        [], "--weight", help="NAME=VALUE, repeatable; NAME: global, instances, region, grounding, detection, "
        "context, crop (vqa/acp judges), image, layout."
    ),
    judge: Optional[str] = typer.Option(None, "--judge", show_default="clip",
                                        help="Who reads the images: clip, vqa (VLM P(Yes)) or acp (VLM + rater, the paper's)."),
    vlm: Optional[str] = typer.Option(None, "--vlm", show_default=DEFAULT_VLM,
                                      help="VLM of --judge vqa|acp: a spec, a local PATH or http://HOST:PORT/v1."),
    vlm_model: Optional[str] = typer.Option(None, "--vlm-model", help="Model name on the --vlm server."),
    rater: Optional[str] = typer.Option(None, "--rater", show_default=DEFAULT_RATER,
                                        help="Rater LLM of --judge acp: a spec, a local PATH or http://HOST:PORT/v1."),
    rater_model: Optional[str] = typer.Option(None, "--rater-model", help="Model name on the --rater server."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, max=256, show_default="4",
                                              help="Requests in flight to a served VLM or rater."),
    grounding: Optional[str] = typer.Option(None, "--grounding", show_default="auto",
                                            help="Box syntax of VLM prompts: auto, qwen, qwen2 or plain."),
    crop_margin: Optional[float] = typer.Option(None, "--crop-margin", help="Context around boxes (fraction)."),
    distractor: list[str] = typer.Option([], "--distractor", help="Grounding distractor phrase (repeatable; replaces the defaults)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Larger images become error records."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", min=0, show_default="the cores, at most 8",
                                              help="Background threads that decode and crop images (0: none)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", show_default="float32, no autocast",
                                        help="float16, bfloat16 or float32: CLIP and the detector run under autocast "
                                        "to it (weights stay float32); a VLM judge's weights load in it."),
    engine: Optional[str] = typer.Option(None, "--engine", show_default="local",
                                         help="local (this process) or ray (Ray Data actors; docs/scale.md)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDRESS",
                                              help="Running Ray cluster for --engine ray (default: start one here)."),
    workers: Optional[int] = typer.Option(None, "--workers", metavar="N", show_default="1",
                                          help="--engine ray: actors, each loading the models once."),
    gpus_per_worker: Optional[float] = typer.Option(None, "--gpus-per-worker", metavar="G", show_default="0",
                                                    help="--engine ray: GPUs per actor (a fraction shares one)."),
    cpus_per_worker: Optional[float] = typer.Option(None, "--cpus-per-worker", metavar="C", show_default="1",
                                                    help="--engine ray: CPUs per actor."),
    embedding_cache: Optional[Path] = typer.Option(None, "--embedding-cache", help="SQLite text-embedding cache."),
    layout_scores: Optional[Path] = typer.Option(
        None, "--layout-scores", help="CLIS-L from this `clis score-layouts` output instead of computing it."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table."),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse the whole layouts file when any layout is invalid (default: score the valid ones)."
    ),
) -> None:
    """Score candidate images against their layouts (CLIS-I, plus CLIS-L when available)."""
    from clis.cli import err_console, fail, warn

    try:
        run, warnings = _run(**locals())
    except ClisError as exc:
        raise fail(str(exc), exc.exit_code)
    if not quiet:
        Console(highlight=False, soft_wrap=True).print(summary_table(run, out))
    warn([*(f"{images}: no candidate image for layout {layout_id!r}" for layout_id in run.missing), *warnings])
    if run.failed:
        err_console.print(f"error: {run.failed} of {run.scored + run.failed} candidates failed; first: {run.first_error}",
                          markup=False)
        raise typer.Exit(1)


def judge_overrides(judge: Optional[str], vlm: Optional[str], vlm_model: Optional[str], rater: Optional[str],
                    rater_model: Optional[str], concurrency: Optional[int], grounding: Optional[str]) -> dict[str, Any]:
    """The ``judge`` settings the flags give, each name checked against the judge settings' own choices."""
    from clis.image_score.config import GROUNDING_CHOICES, JUDGES

    if judge is not None and judge not in JUDGES:
        raise InputError(f"--judge {judge!r}: expected one of {', '.join(JUDGES)}")
    if grounding is not None and grounding not in GROUNDING_CHOICES:
        raise InputError(f"--grounding {grounding!r}: expected one of {', '.join(GROUNDING_CHOICES)}")
    flags = _overrides(vlm=vlm, vlm_model=vlm_model, rater=rater, rater_model=rater_model, concurrency=concurrency,
                       grounding=grounding)
    if judge is not None:
        flags["name"] = judge
    return flags


def check_judge_flags(settings: Any, given: dict[str, Any], weights: dict[str, dict[str, float]],
                      image_model: Optional[str] = None, distractor: list[str] = ()) -> None:
    """Refuse flags that the chosen judge would silently ignore."""
    from clis.image_score.config import unread_weights

    name = settings.judge.name
    unread = unread_weights(name)
    ignored_weight = next((key for key in weights.get("weights", {}) if key in unread), None)
    if ignored_weight is not None:
        needs = "--judge vqa or --judge acp" if name == "clip" else "--judge clip"
        raise InputError(f"--weight {ignored_weight}=... is read only with {needs}, and this run uses --judge {name}")
    if name != "clip" and (image_model is not None or distractor):
        flag = "--image-model" if image_model is not None else "--distractor"
        raise InputError(f"{flag} is read only with --judge clip (CLIP), and this run uses --judge {name}")
    vlm_flags = ("vlm", "vlm_model", "concurrency", "grounding")
    if name == "clip":
        ignored = [key for key in (*vlm_flags, "rater", "rater_model") if key in given]
    elif name == "vqa":
        ignored = [key for key in ("rater", "rater_model") if key in given]
    else:
        ignored = []
    if ignored:
        flag = "--" + ignored[0].replace("_", "-")
        needs = "--judge acp" if ignored[0].startswith("rater") else "--judge vqa or --judge acp"
        raise InputError(f"{flag} is read only with {needs}, and this run uses --judge {name}")


def check_resumed_judge(out: Path, judge: str) -> None:
    """Refuse to resume another judge's run before any model loads (score_folder checks the rest)."""
    from clis import jsonio
    from clis.scorer import check_same_judge, manifest_path

    try:
        earlier = jsonio.loads(manifest_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # missing or unreadable: score_folder refuses it with the full explanation
    if isinstance(earlier, dict):
        check_same_judge(manifest_path(out), earlier, judge)


def _run(images: Path, layouts: Path, out: Path, csv_path: Optional[Path], image_model, detector, batch_size,
         device, no_layout_score, resume, overwrite, config, weight, crop_margin, distractor, max_pixels,
         num_workers, embedding_cache, quiet, strict=False, layout_scores=None, judge=None, vlm=None, vlm_model=None,
         rater=None, rater_model=None, concurrency=None, grounding=None, dtype=None, engine=None, ray_address=None,
         workers=None, gpus_per_worker=None, cpus_per_worker=None, **_: Any) -> tuple[Any, list[str]]:
    from clis.engines.config import EngineConfig, engine_config_from_flags
    from clis.formats import read_layouts

    # Everything about the input is checked before torch and any model are loaded, so a typo
    # in a path fails at once.
    if not images.is_dir():
        raise InputError(f"{images}: images folder not found (or not a directory)")
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise InputError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPE_NAMES)}")
    engine_config = engine_config_from_flags(engine, ray_address, workers, gpus_per_worker, cpus_per_worker)
    from clis.outputs import check_paths

    parquet = out.suffix.lower() == ".parquet"
    # A Parquet --out is written at the end; until then the run appends to this JSONL journal
    # (clis.scorer.journal_path), which --resume continues.
    journal = Path(f"{out}.partial.jsonl") if parquet else out
    if parquet:
        import importlib.util

        if importlib.util.find_spec("clis.scoretable") is None:
            raise InputError(f"--out {out}: Parquet output is not part of this installation; use a .jsonl --out")
    paths = {
        "inputs": {"LAYOUTS": layouts, "--config": config, "--layout-scores": layout_scores},
        # the manifest's name is clis.scorer.manifest_path's, without importing torch for it
        "outputs": {"--out": out, "--csv": csv_path, "the manifest of --out": Path(f"{out}.manifest.json"),
                    "--embedding-cache": embedding_cache, **({"the journal of --out": journal} if parquet else {})},
        "input_folders": {"IMAGES": images},
    }
    check_paths(**paths)
    report = read_layouts(layouts, strict=strict)
    layout_list = report.layouts
    for existing in dict.fromkeys((out, journal)):
        if existing.exists() and existing.stat().st_size > 0 and not (resume or overwrite):
            what = "already exists" if existing == out else "already exists (the journal of an interrupted run)"
            raise InputError(f"{existing}: {what}; pass --resume to continue it or --overwrite to replace it")
    if csv_path is not None and csv_path.exists() and csv_path.stat().st_size > 0 and not (resume or overwrite):
        raise InputError(f"--csv {csv_path}: already exists; pass --overwrite to replace it")

    from clis.scorer import ScoreConfig, Scorer, check_layouts_in_canvas

    overrides = _overrides(
        image_model=image_model, detector=detector, batch_size=batch_size, device=device, crop_margin=crop_margin,
        max_pixels=max_pixels, num_workers=num_workers, dtype=dtype,
        embedding_cache=str(embedding_cache) if embedding_cache else None,
        layout_scores=str(layout_scores) if layout_scores else None,
        distractors=list(distractor) or None, layout_score=False if no_layout_score else None,
    )
    overrides.update(parse_weights(weight))
    if engine_config != EngineConfig():  # the default leaves a config file's engine table as it is
        overrides["engine"] = engine_config.model_dump()
    judge_flags = judge_overrides(judge, vlm, vlm_model, rater, rater_model, concurrency, grounding)
    if judge_flags:
        overrides["judge"] = judge_flags
    settings = ScoreConfig.from_file(config, **overrides) if config else ScoreConfig.checked(overrides, "options")
    check_judge_flags(settings, judge_flags, parse_weights(weight), image_model=image_model, distractor=distractor)
    if settings.judge.name != "clip":
        from clis.image_score.judges.answers import run_cache_path

        cache = run_cache_path(settings.judge.cache, settings.embedding_cache)
        if cache is not None and not (embedding_cache is not None and Path(cache) == Path(embedding_cache)):
            # Like --embedding-cache, the answer cache is written: it may not be an input or an output.
            check_paths(**{**paths, "outputs": {**paths["outputs"], "the judge answer cache": cache}})
    if resume and any(path.exists() and path.stat().st_size > 0 for path in (out, journal)):
        check_resumed_judge(out, settings.judge.name)
    check_layouts_in_canvas(layout_list, str(layouts))
    if settings.layout_scores:
        if not settings.layout_score:
            raise InputError("--layout-scores and --no-layout-score contradict each other; pass one of them")
        from clis.layout_score import LayoutScoreConfig
        from clis.layout_score.precomputed import PrecomputedLayoutScores

        # A file of other settings, or one lacking a layout, fails here, before any model loads.
        PrecomputedLayoutScores(settings.layout_scores, LayoutScoreConfig(**settings.layout)).score_layouts(layout_list)

    scorer = Scorer(settings)
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=quiet, transient=False,
    )
    layout_task = None

    def on_layout_progress(stage: str, done: int, total: int) -> None:
        nonlocal layout_task
        if layout_task is None:
            layout_task = progress.add_task("CLIS-L", total=total)
        progress.update(layout_task, description=f"CLIS-L {stage}", completed=done, total=total)

    task = progress.add_task("CLIS-I", total=None, start=False)

    def on_start(total: int, done: int) -> None:
        progress.update(task, total=total, completed=done)
        progress.start_task(task)

    try:
        with progress:
            run = scorer.score_folder(
                images, layout_list, out=out, resume=resume, layouts_source=str(layouts),
                on_layout_progress=on_layout_progress, invalid=report.invalid,
                on_start=on_start, on_record=lambda _record: progress.advance(task),
            )
    finally:
        scorer.close()  # also when --resume is refused: the embedding cache must be closed cleanly
    if csv_path is not None:
        write_csv(run.records(), csv_path)
    warnings = [*invalid_layouts_warning(layouts, report.invalid), *scorer.warnings()]
    return run, warnings


def invalid_layouts_warning(layouts: Path, invalid: list) -> list[str]:
    """One warning line counting the invalid layouts a run went past (none when all are valid)."""
    if not invalid:
        return []
    noun = "layout is" if len(invalid) == 1 else "layouts are"
    return [f"{layouts}: {len(invalid)} {noun} invalid and got error records (first: {invalid[0].error}); "
            "`clis validate` lists every problem, --strict refuses the file"]


def register(app: typer.Typer) -> None:
    app.command("score")(score)

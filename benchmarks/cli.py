"""``clis bench ...``: the metric-validation studies on the command line.

Each command writes ``<out>/result.json`` (schema ``clis.bench/1``, see
docs/results-schema.md) with its plots as PNG and SVG beside it, and prints a summary table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from clis.errors import ClisError, InputError

if TYPE_CHECKING:  # the studies (scipy, seaborn) are imported by the commands that run them
    from benchmarks.results import BenchResult
    from benchmarks.stats import BootstrapConfig

app = typer.Typer(
    name="bench",
    help="Validate the metric (correlate, pairwise, corrupt, buckets, downstream) and compare generators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

OutOption = typer.Option(..., "--out", "-o", help="Folder for result.json and the plots.")
BootstrapOption = typer.Option(1000, "--bootstrap", min=50, help="Bootstrap resamples per interval (at most 100000).")
ConfidenceOption = typer.Option(0.95, "--confidence", min=0.5, max=0.999, help="Confidence level of the intervals.")
SeedOption = typer.Option(0, "--seed", help="Seed of the bootstrap (and of random corruptions).")
NoPlotOption = typer.Option(False, "--no-plot", help="Skip the seaborn figures.")


def _bootstrap(resamples: int, confidence: float, seed: int) -> BootstrapConfig:
    from benchmarks.stats import BootstrapConfig

    return BootstrapConfig(n_resamples=resamples, confidence=confidence, seed=seed)


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _cell(interval) -> Text:
    if interval is None:
        return Text("")
    if interval.ci_low is None or interval.ci_high is None:
        return Text(_fmt(interval.value))
    return Text(f"{_fmt(interval.value)} [{_fmt(interval.ci_low)}, {_fmt(interval.ci_high)}]")


def result_table(result: BenchResult, only: Optional[list[str]] = None) -> Table:
    """A rich table of ``value [low, high]`` cells: one line per row, or per metric when
    there are more metrics than fit side by side. ``only`` limits the table to those metric
    keys."""
    keys = [m.key for m in result.metrics if any(m.key in r.values for r in result.rows)]
    if only is not None:
        keys = [key for key in keys if key in only]
    # Row names (generators, --by groups) and labels (a --metric column) are the user's text:
    # as Text they print as written, "no[red]such" with its brackets, "[/x]" without a MarkupError.
    labels = {m.key: Text(m.label) for m in result.metrics}
    table = Table(title=Text(f"clis bench {result.study}"))
    if len(keys) > 4:
        table.add_column("metric", style="bold")
        for row in result.rows:
            table.add_column(Text(row.name), justify="right")
        for key in keys:
            table.add_row(labels[key], *[_cell(row.values.get(key)) for row in result.rows])
    else:
        table.add_column("name", style="bold")
        table.add_column("n", justify="right")
        for key in keys:
            table.add_column(labels[key], justify="right")
        for row in result.rows:
            # What a row's n counts depends on the study: pairs, measured points, answers or images.
            extra = row.model_extra or {}
            n = extra.get("n_pairs", extra.get("n_points", extra.get("n_answers", row.n_images)))
            table.add_row(Text(row.name), _fmt(n), *[_cell(row.values.get(key)) for key in keys])
    return table


def print_files(result: BenchResult, out: Path) -> None:
    # Paths are the user's text: printed as they are, never read as rich markup.
    console.print(f"result: {out / 'result.json'}" + (f"  plots: {', '.join(result.figures)}" if result.figures else ""),
                  markup=False)


def print_result(result: BenchResult, out: Path, only: Optional[list[str]] = None, note: str = "") -> None:
    """:func:`result_table`, ``note`` (what the table leaves out) and the files written."""
    console.print(result_table(result, only))
    if note:
        console.print(note, highlight=False, markup=False)
    print_files(result, out)


def _run(func, out: Path, *args, printer=print_result, **kwargs) -> None:
    """Run a study; user errors become one line and exit code 2 (also under CliRunner).

    ``out`` is checked first: a study may score for minutes before it writes there. Each
    study then checks its output files against its inputs before any work
    (:func:`benchmarks.results.check_study_paths`); options are parsed inside ``func``, so
    their errors are one line here too."""
    try:
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: --out names a file; it must be a folder (for result.json and the plots)")
        result = func(*args, **kwargs)
    except ClisError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(exc.exit_code) from None
    printer(result, out)


def print_corrupt_result(result: BenchResult, out: Path) -> None:
    """The corrupt study has two metrics per kind (16 and more): on screen only the overall
    accuracy and τ per score, which fit 80 columns; the per-kind table is in the files."""
    kinds = result.settings.get("kinds") or []
    note = (f"per-kind accuracy and τ ({len(kinds)} kinds x {len(result.settings.get('levels') or [])} severities): "
            f"{out / 'result.json'} (tables.per_kind, tables.per_level); every scored variant: "
            f"{out / (getattr(result, 'variants_file', None) or 'variants.csv')}")
    print_result(result, out, only=["accuracy", "tau"], note=note)
    failed = result.settings.get("failed_images") or []
    if failed:
        # One line however many failed: the list is in the result file.
        first = " ".join(str(failed[0].get("error")).split())
        err_console.print(f"warning: {len(failed)} of {result.settings.get('n_images')} images could not be read and "
                          f"are left out of every figure (first: {first}); all of them: "
                          f"{out / 'result.json'} (settings.failed_images)", markup=False)


@app.command()
def correlate(
    scores: Path = typer.Argument(..., help="scores.jsonl from `clis score`, or a ratings table (.json, .csv, .parquet) "
                                  "whose metric columns are the scores."),
    targets: Optional[Path] = typer.Argument(None, help="Ratings table (.json list or dict of records, .csv, .parquet) "
                                             "with an image or layout_id column and a numeric target; leave out when "
                                             "SCORES is a ratings table that holds the target too."),
    out: Path = OutOption,
    target: Optional[str] = typer.Option(None, "--target", help="Target column (default: human_avg for TIFA, the mean "
                                         "answer for DSG's Likert CSV, else the only numeric one)."),
    score: Optional[list[str]] = typer.Option(None, "--score", help="Metric column of the ratings table to correlate "
                                              "(repeatable; default with one table: every numeric non-id, non-human_* "
                                              "column)."),
    image_column: Optional[str] = typer.Option(None, "--image-column", help="Column of the ratings table that names "
                                               "the image (default: image_path for TIFA/DSG, else image)."),
    group: Optional[str] = typer.Option(None, "--group", help="Bootstrap whole groups of this column (default: the "
                                        "prompt id text_id/source_id for TIFA/DSG, else layout_id; 'none': rows)."),
    by: Optional[str] = typer.Option(None, "--by", help="Also report per value of this column (e.g. generator)."),
    aggregate: str = typer.Option("mean", "--aggregate", help="Per-layout targets: mean or max of the candidates' scores."),
    bootstrap: int = BootstrapOption,
    confidence: float = ConfidenceOption,
    seed: int = SeedOption,
    no_plot: bool = NoPlotOption,
) -> None:
    """Spearman, Kendall and Pearson between each score and a target, with bootstrap intervals."""
    from benchmarks.correlate import correlate as run

    def printer(result: BenchResult, out: Path) -> None:
        settings = result.settings
        notes = []
        if settings.get("group"):
            notes.append(f"intervals resample whole {settings['group']} groups ({settings.get('n_groups')} groups)")
        agreement = settings.get("inter_annotator")
        if agreement:
            def num(key: str) -> str:
                return _fmt(agreement.get(key))
            notes.append(f"inter-annotator: Fleiss' kappa {num('fleiss_kappa')} (on {agreement.get('n_images_all_workers')} "
                         f"images rated by every worker), mean pairwise quadratic Cohen's kappa "
                         f"{num('cohen_kappa_quadratic_mean')}, mean pairwise Spearman {num('spearman_pairwise_mean')}")
        print_result(result, out, note="; ".join(notes))

    _run(lambda: run(scores, targets, out, target=target, score_columns=score or (), image_column=image_column,
                     group=group, by=by, aggregate=aggregate, bootstrap=_bootstrap(bootstrap, confidence, seed),
                     plot=not no_plot), out, printer=printer)


@app.command()
def pairwise(
    scores: Path = typer.Argument(..., help="scores.jsonl from `clis score`."),
    preferences: Path = typer.Argument(..., help="CSV with image_a, image_b, chosen (a, b, tie or an image id)."),
    out: Path = OutOption,
    score_ties: str = typer.Option("drop", "--score-ties", help="Pairs a score rates equal: drop, loss or half."),
    tie_tolerance: float = typer.Option(0.0, "--tie-tolerance", min=0.0, help="Score differences up to this are ties."),
    by: Optional[str] = typer.Option(None, "--by", help="Also report per value of this preferences column."),
    bootstrap: int = BootstrapOption,
    confidence: float = ConfidenceOption,
    seed: int = SeedOption,
    no_plot: bool = NoPlotOption,
) -> None:
    """Agreement of each score with human A/B choices, with Wilson (or bootstrap) intervals."""
    from benchmarks.pairwise import pairwise as run

    _run(lambda: run(scores, preferences, out, score_ties=score_ties, tie_tolerance=tie_tolerance, by=by,
                     bootstrap=_bootstrap(bootstrap, confidence, seed), plot=not no_plot), out)


@app.command()
def buckets(
    scores: Path = typer.Argument(..., help="scores.jsonl from `clis score`."),
    layouts: Path = typer.Option(..., "--layouts", "-l", help="The layouts the candidates were scored against."),
    out: Path = OutOption,
    edges: str = typer.Option("70,75,80,85", "--edges", help="Comma-separated bucket edges (or thresholds)."),
    score: str = typer.Option("clis", "--score", help="Score column to bucket by: clis, clis_i, clis_l, global, ..."),
    mode: str = typer.Option("buckets", "--mode", help="buckets ([lo, hi) ranges) or thresholds (score >= t)."),
    open_ends: bool = typer.Option(False, "--open-ends", help="Add buckets below the first and above the last edge."),
    best_only: bool = typer.Option(False, "--best-only", help="Keep only each layout's best candidate."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="COCO file_name is relative to this folder."),
    bootstrap: int = BootstrapOption,
    confidence: float = ConfidenceOption,
    seed: int = SeedOption,
    no_plot: bool = NoPlotOption,
) -> None:
    """Split scored candidates into score buckets, one COCO subset each, ready to train a detector."""
    from benchmarks.buckets import buckets as run, parse_edges

    _run(lambda: run(scores, layouts, out, edges=parse_edges(edges), score=score, mode=mode, open_ends=open_ends,
                     best_only=best_only, image_root=image_root, bootstrap=_bootstrap(bootstrap, confidence, seed),
                     plot=not no_plot), out)


@app.command()
def downstream(
    results: Path = typer.Argument(..., help="CSV of the accuracy you measured per bucket (bucket or lo,hi or threshold)."),
    out: Path = OutOption,
    metric: Optional[str] = typer.Option(None, "--metric", help="Metric column (default: the only numeric one)."),
    by: Optional[str] = typer.Option(None, "--by", help="One series per value of this column (e.g. score)."),
    bootstrap: int = BootstrapOption,
    confidence: float = ConfidenceOption,
    seed: int = SeedOption,
    no_plot: bool = NoPlotOption,
) -> None:
    """Correlate the downstream accuracy per bucket with the bucket's score; draw the bucket figure."""
    from benchmarks.buckets import downstream as run

    _run(lambda: run(results, out, metric=metric, by=by, bootstrap=_bootstrap(bootstrap, confidence, seed),
                     plot=not no_plot), out)


def _score_settings(config: Optional[Path], image_model: Optional[str], detector: Optional[str],
                    layout_score: Optional[bool], device: Optional[str]) -> dict:
    """ScoreConfig keywords from a config file (optional) and the flags given (flags win)."""
    overrides = {k: v for k, v in {"image_model": image_model, "detector": detector, "layout_score": layout_score,
                                   "device": device}.items() if v is not None}
    if config is None:
        return overrides
    from clis.scorer import ScoreConfig

    return ScoreConfig.from_file(config, **overrides).model_dump(by_alias=True)


ImageModelOption = typer.Option(None, "--image-model", help="CLIP spec (hub id or local path); default: clis score's.")
DetectorOption = typer.Option(None, "--detector", help="Detector spec, or 'none'; default: clis score's.")
LayoutScoreOption = typer.Option(None, "--layout-score/--no-layout-score", help="Score layouts with CLIS-L too.")
ConfigOption = typer.Option(None, "--config", help="A clis score config file (JSON, TOML or YAML).")
DeviceOption = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ...")


@app.command()
def corrupt(
    images: Path = typer.Argument(..., help="Folder of clean images (<layout id>.png, <id>/*.png, ...)."),
    layouts: Path = typer.Argument(..., help="Their correct layouts."),
    out: Path = OutOption,
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Comma-separated subset of: shift, scale, swap_boxes, "
                                        "swap_labels, drop, blur, noise, occlude (default: all)."),
    max_images: Optional[int] = typer.Option(None, "--max-images", min=1, help="Use only the first N images."),
    tie_tolerance: float = typer.Option(0.0, "--tie-tolerance", min=0.0, help="Score changes up to this count as ties."),
    save_images: bool = typer.Option(False, "--save-images", help="Also write every corrupted image under <out>/variants."),
    image_model: Optional[str] = ImageModelOption,
    detector: Optional[str] = DetectorOption,
    layout_score: Optional[bool] = LayoutScoreOption,
    config: Optional[Path] = ConfigOption,
    device: Optional[str] = DeviceOption,
    bootstrap: int = BootstrapOption,
    confidence: float = ConfidenceOption,
    seed: int = SeedOption,
    no_plot: bool = NoPlotOption,
) -> None:
    """Corrupt correct (image, layout) pairs at 3 severities; does each score drop?"""
    from benchmarks.corrupt import corrupt as run

    def study():
        settings = _score_settings(config, image_model, detector, layout_score, device)
        chosen = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else None
        return run(images, layouts, out, score_config=settings, kinds=chosen, max_images=max_images,
                   tie_tolerance=tie_tolerance, save_images=save_images,
                   bootstrap=_bootstrap(bootstrap, confidence, seed), plot=not no_plot)

    _run(study, out, printer=print_corrupt_result)


@app.command()
def compare(
    generators: list[str] = typer.Argument(..., help="NAME=PATH per generator: a scores.jsonl or a candidates folder."),
    out: Path = OutOption,
    layouts: Optional[Path] = typer.Option(None, "--layouts", "-l", help="Layouts (needed to score folders without scores)."),
    min_instance: float = typer.Option(60.0, "--min-instance", help="Instance threshold of the pass rate (0..100)."),
    min_layout: float = typer.Option(50.0, "--min-layout", help="Layout (CLIS-L) threshold of the pass rate (0..100)."),
    all_layouts: bool = typer.Option(False, "--all-layouts", help="Use every layout, not only those all generators share."),
    image_model: Optional[str] = ImageModelOption,
    detector: Optional[str] = DetectorOption,
    layout_score: Optional[bool] = LayoutScoreOption,
    config: Optional[Path] = ConfigOption,
    device: Optional[str] = DeviceOption,
    bootstrap: int = BootstrapOption,
    confidence: float = ConfidenceOption,
    seed: int = SeedOption,
    no_plot: bool = NoPlotOption,
) -> None:
    """Compare generators on the same layouts: CLIS, CLIS-I, CLIS-L, CLIP, detection, pass rate, best-of-N gain."""
    from benchmarks.compare import compare as run

    def study():
        settings = _score_settings(config, image_model, detector, layout_score, device)
        return run(generators, out, layouts_path=layouts, score_config=settings, min_instance=min_instance,
                   min_layout=min_layout, common_only=not all_layouts,
                   bootstrap=_bootstrap(bootstrap, confidence, seed), plot=not no_plot)

    _run(study, out)


def print_layouts_result(result: BenchResult, out: Path) -> None:
    """The layouts study: one line per corruption and severity, per source the win rate
    [interval] and the share of twins (first line: of real layouts) scoring >= the threshold."""
    from benchmarks.layouts import summary_table, tau_line

    console.print(summary_table(result))
    if line := tau_line(result):
        console.print(line, highlight=False, markup=False)
    files = [f"{out / 'result.json'}", f"{out / (getattr(result, 'pairs_file', None) or 'pairs.csv')}"]
    console.print(f"result: {files[0]}  pairs: {files[1]}" + (f"  plots: {', '.join(result.figures)}" if result.figures else ""),
                  markup=False)


@app.command()
def layouts(
    layouts_file: Path = typer.Argument(..., metavar="LAYOUTS", help="Layouts file (any format clis reads, NSR-1K too)."),
    out: Path = OutOption,
    subset: list[str] = typer.Option([], "--subset", metavar="KEY=VALUE", help="Keep layouts whose field or extra key "
                                     "KEY equals VALUE (as text); repeat for more keys (all must match) or values of "
                                     "one key (any). NSR-1K's evaluation set: --subset sub-type=real."),
    min_objects: int = typer.Option(2, "--min-objects", min=1, help="Keep layouts with at least this many objects."),
    max_objects: int = typer.Option(6, "--max-objects", min=1, help="Keep layouts with at most this many objects."),
    min_labels: int = typer.Option(2, "--min-labels", min=1, help="Keep layouts with at least this many distinct labels."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N layouts left after the filters."),
    corruptions: Optional[str] = typer.Option(None, "--corruptions", help="Comma-separated subset of: flip, swap, "
                                              "scale, shift, random (default: all)."),
    threshold: float = typer.Option(50.0, "--threshold", help="Report the share scoring >= this (clis pick --min-layout)."),
    llm: Optional[str] = typer.Option(None, "--llm", help="Causal LM spec or local PATH; 'none' for the pool only."),
    pool: Optional[str] = typer.Option(None, "--pool", metavar="PATH", help="Pool file from `clis pool build`, "
                                       "embedded:NAME, or 'none' (default: CLIS-L's)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="llm=VALUE,geometry=VALUE,... as clis score-layouts."),
    text_embedder: Optional[str] = typer.Option(None, "--text-embedder", help="Label-similarity model; 'none': exact."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Statements per LLM forward pass."),
    device: Optional[str] = DeviceOption,
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file of CLIS-L settings; options win."),
    bootstrap: int = BootstrapOption,
    confidence: float = ConfidenceOption,
    seed: int = SeedOption,
    no_plot: bool = NoPlotOption,
) -> None:
    """CLIS-L on real layouts vs corrupted twins (flip, swap, scale, shift, random); no images needed."""
    from benchmarks.layouts import layouts_study

    def study():
        chosen = None
        if corruptions is not None:
            chosen = [c.strip() for c in corruptions.split(",") if c.strip()]
            if not chosen:
                raise InputError(f"--corruptions {corruptions!r}: name at least one of flip, swap, scale, shift, random")
        options = {"config": config, "llm": llm, "pool": pool, "weights": weights, "text_embedder": text_embedder,
                   "batch_size": batch_size, "device": device}
        return layouts_study(layouts_file, out, score_options=options, subset=subset, min_objects=min_objects,
                             max_objects=max_objects, min_labels=min_labels, limit=limit, corruptions=chosen,
                             threshold=threshold, bootstrap=_bootstrap(bootstrap, confidence, seed),
                             plot=not no_plot)

    _run(study, out, printer=print_layouts_result)


def print_warnings(result: BenchResult) -> None:
    for line in result.settings.get("warnings") or []:
        err_console.print(f"warning: {line}", markup=False)


LabelsArgument = typer.Argument(..., help="One or more clis.labels/1 files (exports of `clis annotate build`'s site, "
                                "or `clis annotate merge`).")
PartlyOption = typer.Option("no", "--partly", help="A 'partly' answer counts as: no (default), yes, or drop.")


@app.command()
def agreement(
    scores: Path = typer.Argument(..., help="scores.jsonl from `clis score` of the labelled candidates."),
    labels: list[Path] = LabelsArgument,
    out: Path = OutOption,
    partly: str = PartlyOption,
    min_instance: float = typer.Option(60.0, "--min-instance", help="Instance threshold whose accuracy, precision and "
                                       "recall are reported (clis pick's)."),
    min_layout: float = typer.Option(50.0, "--min-layout", help="CLIS-L threshold against 'is this layout plausible?'."),
    bootstrap: int = BootstrapOption,
    confidence: float = ConfidenceOption,
    seed: int = SeedOption,
    no_plot: bool = NoPlotOption,
) -> None:
    """Per object and per layout: does each score agree with people's labels? With annotator agreement."""
    from benchmarks.agreement import LAYOUT_FIGURES, OBJECT_FIGURES, agreement as run

    def printer(result: BenchResult, out_dir: Path) -> None:
        # Two tables that fit 80 columns: the per-object figures, then best-of-N per layout.
        for keys in (OBJECT_FIGURES, LAYOUT_FIGURES):
            rows = [row for row in result.rows if any(k in row.values for k in keys)]
            if rows:
                console.print(result_table(result.model_copy(update={"rows": rows}), list(keys)))
        for r in result.tables.get("inter_annotator", []):
            if r.get("value") is not None:
                console.print(f"between annotators, {r['what']}: {r['measure']} {r['value']:.3f} "
                              f"({r['annotators']}, n = {r['n']})", markup=False, highlight=False)
        print_files(result, out_dir)
        print_warnings(result)

    _run(lambda: run(scores, labels, out, partly=partly, min_instance=min_instance, min_layout=min_layout,
                     bootstrap=_bootstrap(bootstrap, confidence, seed), plot=not no_plot), out, printer=printer)


@app.command()
def calibrate(
    scores: Path = typer.Argument(..., help="scores.jsonl from `clis score` of the labelled candidates."),
    labels: list[Path] = LabelsArgument,
    out: Path = OutOption,
    target_precision: float = typer.Option(0.9, "--target-precision", help="Wanted share of kept objects people "
                                           "call right (0..1]."),
    target_layout_precision: Optional[float] = typer.Option(None, "--target-layout-precision", help="The same for "
                                                            "kept layouts (default: --target-precision)."),
    partly: str = PartlyOption,
    bootstrap: int = BootstrapOption,
    confidence: float = ConfidenceOption,
    seed: int = SeedOption,
    no_plot: bool = NoPlotOption,
) -> None:
    """Recommend --min-instance / --min-layout for a target precision; writes a config clis pick --config reads."""
    from benchmarks.calibrate import CONFIG_FILE, calibrate as run

    def printer(result: BenchResult, out_dir: Path) -> None:
        print_result(result, out_dir)
        print_warnings(result)
        if result.settings.get("min_layout_not_calibrated"):
            err_console.print(f"warning: --min-layout not calibrated: {result.settings['min_layout_not_calibrated']}",
                              markup=False)
        console.print(f"pick settings: {out_dir / CONFIG_FILE} (use: clis pick ... --config {out_dir / CONFIG_FILE})",
                      markup=False, highlight=False)

    _run(lambda: run(scores, labels, out, target_precision=target_precision,
                     target_layout_precision=target_layout_precision, partly=partly,
                     bootstrap=_bootstrap(bootstrap, confidence, seed), plot=not no_plot), out, printer=printer)

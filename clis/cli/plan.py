"""``clis plan CONCEPTS --out layouts.json``: concept sets -> scene graphs -> layouts with an LLM."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from clis import jsonio
from clis.errors import InputError
from clis.files import write_text_atomic
from clis.formats import save_layouts
from clis.layout import Layout
from clis.models import DEFAULT_LLM
from clis.outputs import OutputLock, check_paths
from clis.plan import DEFAULT_RETRIES, PlanResult, load_concepts, plan_layouts
from clis.planning.backends import make_backend

console = Console(stderr=True, highlight=False, soft_wrap=True)


def report_path(out: Path) -> Path:
    """``layouts.json`` -> ``layouts.plan.json``: the per-slot report next to the layouts."""
    return out.with_name(out.stem + ".plan.json")


def clis_l_scorer(config_path: Optional[Path]):
    """A ``layout -> CLIS-L`` callable from :mod:`clis.layout_score` (settings from a JSON file)."""
    try:
        from clis.layout_score import LayoutScoreConfig, LayoutScorer
    except ImportError as exc:
        raise InputError(f"--drafts > 1 needs CLIS-L (clis.layout_score), which is unavailable: {exc}") from None
    settings = {}
    if config_path is not None:
        settings = jsonio.read_json(config_path, "CLIS-L settings file")
        if not isinstance(settings, dict):
            raise InputError(f"{config_path}: top level: CLIS-L settings must be a JSON object")
    try:
        scorer = LayoutScorer(LayoutScoreConfig(**settings))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{config_path or 'CLIS-L settings'}: {' '.join(str(exc).split())}") from None

    def score(layout: Layout) -> Optional[float]:
        return next(iter(scorer.score_layouts([layout]))).clis_l

    return score


def _save(result: PlanResult, out: Path, report: dict) -> None:
    """Write the layouts planned so far and the per-slot report next to them.

    Both are replaced atomically, so whenever the run ends, however it ends, ``out`` is a valid
    layouts file; the layouts file goes first, so the report never names a layout it lacks.
    """
    save_layouts(result.layouts, out)
    report = {**report, "summary": result.summary, "records": result.records}
    write_text_atomic(report_path(out), jsonio.dumps(report, indent=2, ensure_ascii=False) + "\n")


def plan(
    concepts: Path = typer.Argument(..., help='JSON list of concept sets, e.g. [["cat", "sofa"], {"concepts": ["dog"], "count": 2}].'),
    out: Path = typer.Option(..., "--out", "-o", help="Layouts file to write (canonical layouts.json)."),
    llm: str = typer.Option(
        DEFAULT_LLM, "--llm", help="Model spec (embedded:smollm2, hf:org/name, a folder) or an OpenAI-compatible URL."
    ),
    llm_model: Optional[str] = typer.Option(None, "--llm-model", help="Model name to request from an http(s) --llm server."),
    count: int = typer.Option(1, "--count", "-n", help="Layouts per concept set (a set's own 'count' wins)."),
    drafts: int = typer.Option(1, "--drafts", help="Drafts per layout; the best by CLIS-L is kept."),
    layout_config: Optional[Path] = typer.Option(
        None, "--layout-config", help="JSON file of CLIS-L settings (clis.layout_score) used with --drafts."
    ),
    retries: int = typer.Option(DEFAULT_RETRIES, "--retries", help="New-seed retries per stage when an answer is unusable."),
    seed: int = typer.Option(0, "--seed", help="Base seed of all sampling."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature (0 = greedy)."),
    max_new_tokens: int = typer.Option(384, "--max-new-tokens", help="Longest answer per request."),
    device: str = typer.Option("cpu", "--device", help="Device of a local --llm model."),
    mode: str = typer.Option(
        "auto", "--mode",
        help="guided: many small LM questions, the program writes the JSON (small local models); "
        "json: the LLM writes whole JSON answers; auto: guided for embedded and <=1B local models.",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse the whole concepts file when any concept set is bad (default: plan the good ones)."
    ),
) -> None:
    """Write a scene graph and a layout for each concept set with an LLM."""
    if retries < 0:
        raise InputError(f"--retries must be >= 0, got {retries}")
    if not math.isfinite(temperature) or temperature < 0:
        raise InputError(f"--temperature must be a finite number >= 0, got {temperature}")
    # Before any model loads: a folder as --out, or --out over the concepts, would lose the plan.
    check_paths(
        inputs={"CONCEPTS": concepts, "--layout-config": layout_config},
        outputs={"--out": out, "--out report": report_path(out)},
    )
    concept_sets = load_concepts(concepts, count=count, strict=strict)
    # A second run on this --out would interleave its slots with ours: held until the last save.
    with OutputLock(out):
        score_layout = clis_l_scorer(layout_config) if drafts > 1 else None
        options = {"max_new_tokens": max_new_tokens, "temperature": temperature}
        if not llm.startswith(("http://", "https://")):
            options["device"] = device
        backend = make_backend(llm, model=llm_model, mode=mode, **options)
        failures = []
        # Filled and saved slot by slot, so a run that is killed (SIGKILL, OOM, power loss) keeps
        # every finished slot in --out, and one that is aborted (server gone, Ctrl-C) says why.
        planned = PlanResult(layouts=[], records=[])
        report = {
            "concepts": str(concepts),
            "layouts": str(out),
            "backend": backend.describe(),
            "settings": {"mode": getattr(backend, "mode", "json"), "count": count, "drafts": drafts, "retries": retries, "seed": seed, "layout_config": str(layout_config) if layout_config else None},
            "status": "running",
            "aborted": None,
        }
        progress = Progress(
            TextColumn("[bold]plan[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console,
        )  # fmt: skip
        try:
            with progress:
                task = progress.add_task("plan", total=sum(s.count for s in concept_sets))  # a bad set counts 1

                def advance(record: dict, layout: Optional[Layout]) -> None:
                    planned.records.append(record)
                    if layout is not None:
                        planned.layouts.append(layout)
                    if record["status"] != "ok" and record["layout_id"] is not None:
                        failures.append(
                            f"{concepts}: concept set [{record['set']}] ({', '.join(record['concepts'])}) "
                            f"layout {record['slot']}: {record['error']}"
                        )
                    _save(planned, out, report)
                    progress.advance(task)

                plan_layouts(
                    concept_sets, backend, drafts=drafts, max_retries=retries, seed=seed, score_layout=score_layout,
                    on_slot=advance,
                )  # fmt: skip
        except BaseException as exc:
            if not planned.records:
                raise  # nothing planned yet: leave an earlier --out file alone
            _save(planned, out, {**report, "status": "aborted", "aborted": " ".join(str(exc).split()) or type(exc).__name__})
            console.print(
                f"run aborted after {len(planned.records)} slots; saved the {len(planned.layouts)} layouts planned so far "
                f"-> {out}; report: {report_path(out)}",
                markup=False,
            )
            raise
        _save(planned, out, {**report, "status": "complete"})
    for line in failures:
        console.print(f"[red]failed:[/] {escape(line)}", markup=True)
    s = planned.summary
    console.print(
        f"planned {s['ok']}/{s['slots']} layouts ({s['failed']} failed, {s['clamped_boxes']} boxes clamped, "
        f"{s['failed_attempts']} failed attempts) -> {out}; report: {report_path(out)}",
        markup=False,
    )
    bad_sets = [c for c in concept_sets if c.error]
    if bad_sets:
        noun = "concept set is" if len(bad_sets) == 1 else "concept sets are"
        console.print(f"warning: {concepts}: {len(bad_sets)} {noun} invalid and got error records in the report "
                      f"(first: {bad_sets[0].error}); --strict refuses the file", markup=False)
    if (s["slots"] and not s["ok"]) or bad_sets:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)

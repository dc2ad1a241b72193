"""``clis generate``: make N candidate images per layout with a generator adapter.

Registered through the ``clis.commands`` entry point (``generate = "generators.cli:register"``)
so that ``clis`` itself never imports ``generators``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from clis.engines import engine_config_from_flags
from clis.formats import read_layouts
from clis.outputs import OutputLock, check_paths

from generators.base import MAX_PIXELS, check_canvas, check_finite
from generators.registry import available_generators, create_generator
from generators.runner import MANIFEST_NAME, generate_candidates, ray_generate_many, read_manifest

console = Console(stderr=True, highlight=False, soft_wrap=True)


def generate(
    layouts: Path = typer.Argument(..., help="Layouts file (canonical layouts.json, ACP scene graph or COCO)."),
    out: Path = typer.Option(..., "--out", "-o", help="Candidates folder: <out>/<layout_id>/<k>.png and manifest.json."),
    generator: str = typer.Option(
        "gligen", "--generator", "-g", help=f"Adapter: {', '.join(available_generators())} (shapes: demo/test only)."
    ),
    n: int = typer.Option(4, "--n", "-n", help="Candidates per layout."),
    seed: int = typer.Option(0, "--seed", help="Base seed; each candidate's seed derives from it, the layout id and k."),
    resume: bool = typer.Option(False, "--resume", help="Skip layouts whose candidates are already in the manifest."),
    width: int = typer.Option(512, "--width", help="Image width in pixels (width x height at most --max-pixels)."),
    height: int = typer.Option(512, "--height", help="Image height in pixels (width x height at most --max-pixels)."),
    max_pixels: int = typer.Option(
        MAX_PIXELS, "--max-pixels",
        help="Largest canvas, width x height; a larger one is refused before any model loads (the cap of clis score).",
    ),
    model: Optional[str] = typer.Option(None, "--model", help="gligen/sd: hub id or local folder of the pipeline."),
    steps: Optional[int] = typer.Option(None, "--steps", help="gligen/sd: denoising steps (default 50)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale (default 7.5)."),
    scheduled_sampling_beta: Optional[float] = typer.Option(
        None, "--scheduled-sampling-beta", help="gligen: fraction of steps that use the boxes (default 0.3)."
    ),
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="gligen/sd: negative prompt."),
    device: Optional[str] = typer.Option(None, "--device", help="gligen/sd: cuda, cpu, ... (default: cuda if available)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="gligen/sd: float32, float16 or bfloat16."),
    cutouts: Optional[Path] = typer.Option(
        None, "--cutouts", help="copy-paste: folder of <label>/<image>.png RGBA cut-outs, or a COCO json with masks."
    ),
    cutout_images: Optional[Path] = typer.Option(None, "--cutout-images", help="copy-paste: images folder of the COCO json."),
    backgrounds: Optional[Path] = typer.Option(None, "--backgrounds", help="copy-paste: folder of background images."),
    instancediffusion_dir: Optional[Path] = typer.Option(
        None, "--instancediffusion-dir", help="instancediffusion: checkout folder (or env CLIS_INSTANCEDIFFUSION_DIR)."
    ),
    instancediffusion_python: Optional[str] = typer.Option(
        None, "--instancediffusion-python", help="instancediffusion: Python of the checkout's environment."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse the whole layouts file when any layout is invalid (default: generate the valid ones)."
    ),
    engine: Optional[str] = typer.Option(None, "--engine", help="local (default) or ray: Ray Data actors (docs/scale.md)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray: a running cluster (default: a local Ray)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="ray: actors, each with its own generator (1)."),
    gpus_per_worker: Optional[float] = typer.Option(None, "--gpus-per-worker", help="ray: GPUs per actor, e.g. 0.5 (0)."),
    cpus_per_worker: Optional[float] = typer.Option(None, "--cpus-per-worker", help="ray: CPUs per actor (1)."),
) -> None:
    """Generate N candidate images per layout into OUT/<layout_id>/<k>.png with a manifest."""
    options = dict(
        width=width, height=height, model=model, steps=steps, guidance=guidance,
        scheduled_sampling_beta=scheduled_sampling_beta, negative_prompt=negative_prompt, device=device,
        dtype=dtype, cutouts=cutouts, cutout_images=cutout_images, backgrounds=backgrounds,
        instancediffusion_dir=instancediffusion_dir, instancediffusion_python=instancediffusion_python,
    )  # fmt: skip
    # width/height always have values; the other options are only passed when given.
    # Everything that can be refused is refused here, before a model loads or a file is written.
    check_finite("--guidance", guidance)
    check_finite("--scheduled-sampling-beta", scheduled_sampling_beta)
    check_canvas(width, height, max_pixels)
    engine_config = engine_config_from_flags(engine, ray_address, workers, gpus_per_worker, cpus_per_worker)
    if engine_config.name == "ray":
        from clis.engines.ray_engine import import_ray

        import_ray()  # before the generator's model loads
    inputs = {"LAYOUTS": layouts, "--cutouts": cutouts, "--cutout-images": cutout_images, "--backgrounds": backgrounds}
    check_paths(inputs=inputs, folders={"--out": out})
    # Only once --out is known to be a folder, so that a file as --out is named as such.
    check_paths(inputs=inputs, outputs={"--out": out / MANIFEST_NAME})
    report = read_layouts(layouts, strict=strict)
    created = not out.exists()
    try:
        # The lock makes --out exist; a second run on it fails at once, before loading its model.
        with OutputLock(out / MANIFEST_NAME):
            if resume:
                read_manifest(out)  # a broken manifest is refused before the model loads, not after
            adapter = create_generator(generator, **options)
            generate_many = ray_generate_many(engine_config, generator, options) if engine_config.name == "ray" else None
            manifest = _run(adapter, generator, report, layouts, out, n, seed, resume, generate_many)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if still empty: a run that wrote nothing leaves no folder
        raise
    s = manifest["summary"]
    console.print(
        f"{s['done']}/{s['layouts']} layouts done ({s['resumed']} resumed), {s['failed']} failed, "
        f"{s['images']} images in {out}; manifest: {out / MANIFEST_NAME}",
        markup=False,
    )
    if report.invalid:
        from clis.cli import warn
        from clis.cli.score import invalid_layouts_warning

        warn(invalid_layouts_warning(layouts, report.invalid))
    if (s["layouts"] and s["done"] == 0) or report.invalid:
        raise typer.Exit(1)


def _run(adapter, generator: str, report, layouts: Path, out: Path, n: int, seed: int, resume: bool,
         generate_many=None):
    """The manifest of the run over ``report``'s layouts, and one line per failed layout."""
    layout_list = report.layouts
    if adapter.demo_only:
        console.print(f"[yellow]note:[/] generator {escape(repr(generator))} is for demos and tests only, not training data")
    failures: list[str] = []
    progress = Progress(
        TextColumn("[bold]generate[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    try:
        with progress:
            task = progress.add_task(escape(generator), total=len(layout_list) + len(report.invalid))

            def advance(layout_id: str, item: dict) -> None:
                if item["status"] != "done":
                    failures.append(f"{layouts}: layout {layout_id!r}: {item['error']}")
                progress.advance(task)

            manifest = generate_candidates(
                layout_list, adapter, out, n=n, seed=seed, resume=resume, layouts_path=layouts, on_layout=advance,
                invalid=report.invalid, generate_many=generate_many,
            )
    finally:
        adapter.close()
    for line in failures:
        console.print(f"[red]failed:[/] {escape(line)}", markup=True)
    return manifest


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


__all__ = ["register", "generate"]

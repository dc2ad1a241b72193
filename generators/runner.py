"""Run an adapter over a layouts file: ``<out>/<layout_id>/<k>.png`` plus ``<out>/manifest.json``.

The manifest is rewritten after every layout, so an interrupted run loses at most the layout
in progress and ``--resume`` picks up where it stopped. A layout that fails is recorded with
its error and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clis import __version__ as clis_version
from clis import jsonio
from clis.engines.stages import Stage
from clis.errors import InputError
from clis.files import is_inside, write_text_atomic
from clis.layout import Layout, layout_sha256

from generators.base import GenerationError, GeneratorAdapter, candidate_seeds

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "clis-candidates/1"
# Layout ids become folder names: keep them to one safe path component.
_SAFE_ID = re.compile(r"^[^/\\\x00]+$")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, jsonio.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a candidates folder, or ``None`` when there is none."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists() and not path.is_symlink():
        return None
    data = jsonio.read_json(path, "candidates manifest")
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{path}: field 'format': not a {MANIFEST_FORMAT} manifest")
    # --resume trusts these fields; a hand-edited manifest must fail here in one line, not later.
    items = data.get("items", [])
    if not isinstance(items, list):
        raise InputError(f"{path}: field 'items': expected a list")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("layout_id"), str):
            raise InputError(f"{path}: items[{i}]: field 'layout_id': expected an object with a string layout_id")
        images = item.get("images") or []
        if not isinstance(images, list) or not all(isinstance(im, dict) and isinstance(im.get("path"), str) for im in images):
            raise InputError(f"{path}: items[{i}]: field 'images': expected a list of objects with a string path")
    return data


def _item_complete(item: dict[str, Any], layout: Layout, out_dir: Path, n: int) -> bool:
    images = item.get("images") or []
    # Same id is not same layout: a re-planned layout (new boxes, caption) needs new images.
    # Items from manifests without the hash are regenerated, as they cannot be checked.
    return (
        item.get("status") == "done"
        and item.get("layout_sha256") == layout_sha256(layout)
        and len(images) == n
        and all((out_dir / im["path"]).is_file() for im in images)
    )


def generate_candidates(
    layouts: Sequence[Layout],
    adapter: GeneratorAdapter,
    out_dir: str | Path,
    n: int = 4,
    seed: int = 0,
    resume: bool = False,
    layouts_path: str | Path | None = None,
    on_layout: Callable[[str, dict[str, Any]], None] | None = None,
    invalid: Sequence[Any] = (),
    generate_many: Callable[[list[Layout], Path, int, int], Iterator[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Make ``n`` candidates per layout with ``adapter``; return the manifest (also written).

    ``on_layout(layout_id, item)`` is called after each layout (the CLI advances its progress
    bar there). With ``resume``, layouts whose images are all present in an earlier manifest of
    the same generator, config, ``n`` and ``seed`` are skipped, unless the layout itself changed
    since (its ``layout_sha256`` differs). ``invalid`` takes the layout records that failed
    validation (``clis.formats.InvalidLayout``): each becomes an error item, with no image made.
    ``generate_many(layouts, out, n, seed)`` makes the items of the layouts to generate elsewhere
    (``--engine ray``: :func:`ray_generate_many`), yielded in their order; by default each is made
    here, one at a time.
    """
    if n < 1:
        raise InputError(f"--n must be >= 1, got {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"generator": adapter.name, "config": adapter.config(), "n": n, "seed": seed}
    previous: dict[str, dict[str, Any]] = {}
    if resume:
        old = read_manifest(out)
        if old is not None:
            changed = [
                k for k in settings if json.dumps(old.get(k), sort_keys=True) != json.dumps(settings[k], sort_keys=True)
            ]
            if changed:
                raise InputError(
                    f"{out / MANIFEST_NAME}: --resume needs the same settings, but {', '.join(changed)} changed; "
                    "use a new --out folder or drop --resume"
                )
            previous = {item["layout_id"]: item for item in old.get("items", [])}

    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        **settings,
        "demo_only": adapter.demo_only,
        "layouts": str(layouts_path) if layouts_path else None,
        "layouts_sha256": _sha256(Path(layouts_path)) if layouts_path and Path(layouts_path).is_file() else None,
        "clis_version": clis_version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "items": [],
    }
    # Error items go where the file has the record, so the manifest reads like the file.
    layouts = list(layouts)
    for bad in sorted(invalid, key=lambda bad: bad.index):
        layouts.insert(min(bad.index, len(layouts)), bad)
    made: Iterator[dict[str, Any]] = iter(())
    if generate_many is not None:
        todo = []
        for layout in layouts:
            old_item = previous.get(layout.id) if isinstance(layout, Layout) else None
            if not isinstance(layout, Layout) or (old_item is not None and _item_complete(old_item, layout, out, n)):
                continue
            if old_item is not None:
                _remove_images(old_item, out)  # stale: they must not outlive a failed regeneration
            todo.append(layout)
        made = generate_many(todo, out, n, seed)
    for layout in layouts:
        if not isinstance(layout, Layout):
            key = layout.key
            item = {"layout_id": key, "layout_sha256": None, "status": "error", "images": [],
                    "error": f"invalid layout: {layout.error}"}
            manifest["items"].append(item)
            if on_layout is not None:
                on_layout(key, item)
            continue
        old_item = previous.get(layout.id)
        if old_item is not None and _item_complete(old_item, layout, out, n):
            item = {**old_item, "resumed": True}
        elif generate_many is not None:
            item = next(made)
        else:
            if old_item is not None:
                _remove_images(old_item, out)  # stale: they must not outlive a failed regeneration
            item = _generate_one(layout, adapter, out, n, seed)
        manifest["items"].append(item)
        _write_json_atomic(out / MANIFEST_NAME, manifest)
        if on_layout is not None:
            on_layout(layout.id, item)
    manifest["summary"] = summarise(manifest)
    _write_json_atomic(out / MANIFEST_NAME, manifest)
    return manifest


def _remove_images(item: dict[str, Any], out: Path) -> None:
    for image in item.get("images") or []:
        path = out / str(image.get("path", ""))
        # A hand-edited manifest must not make us delete anything outside the folder.
        if path.is_file() and is_inside(path, out):
            path.unlink()


def _generate_one(layout: Layout, adapter: GeneratorAdapter, out: Path, n: int, seed: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "layout_id": layout.id, "layout_sha256": layout_sha256(layout), "status": "error", "images": [], "error": None,
    }  # fmt: skip
    if not _SAFE_ID.match(layout.id) or layout.id in (".", ".."):
        item["error"] = f"layout id {layout.id!r} cannot be a folder name"
        return item
    seeds = candidate_seeds(seed, layout.id, n)
    started = time.perf_counter()
    try:
        images = adapter.generate(layout, seeds)
        if len(images) != n:
            raise GenerationError(f"adapter returned {len(images)} images for {n} seeds")
        folder = out / layout.id
        folder.mkdir(parents=True, exist_ok=True)
        for k, (image, used) in enumerate(zip(images, adapter.seeds_used(seeds))):
            path = folder / f"{k}.png"
            tmp = folder / f".{k}.png.tmp"
            image.save(tmp, format="PNG")
            os.replace(tmp, path)
            item["images"].append({"path": f"{layout.id}/{k}.png", "k": k, "seed": used, "width": image.width, "height": image.height})
    except (GenerationError, InputError, OSError, ValueError, RuntimeError) as exc:
        # One bad layout must not end a long run: record the reason and go on.
        item["error"] = " ".join(str(exc).split()) or type(exc).__name__
        item["images"] = []
        return item
    item["status"] = "done"
    item["seconds"] = round(time.perf_counter() - started, 3)
    return item


class GenerateStage(Stage):
    """``--engine ray``: a Ray actor that builds the generator adapter once and writes each layout's
    images into ``out`` itself (a folder every worker can write: a shared filesystem on clusters),
    returning the layout's manifest item; the driver writes the manifest, in input order."""

    def __init__(self, generator: str, options: dict[str, Any], out: str, n: int, seed: int):
        from generators.registry import create_generator

        self.adapter = create_generator(generator, **options)
        self.out, self.n, self.seed = Path(out), n, seed

    def process(self, rows: list[dict]) -> list[dict]:
        return [_generate_one(Layout.model_validate(row["layout"]), self.adapter, self.out, self.n, self.seed)
                for row in rows]

    @staticmethod
    def failure(row: dict, reason: str) -> dict:
        layout = Layout.model_validate(row["layout"])
        return {"layout_id": layout.id, "layout_sha256": layout_sha256(layout), "status": "error", "images": [],
                "error": reason}


def ray_generate_many(engine: Any, generator: str, options: dict[str, Any]):
    """A ``generate_many`` for :func:`generate_candidates` that runs the adapter ``generator``
    (built with ``options``) on Ray actors sized by ``engine`` (an EngineConfig), one layout per call."""

    def generate_many(layouts: list[Layout], out: Path, n: int, seed: int) -> Iterator[dict[str, Any]]:
        from clis.engines.ray_engine import map_stage

        rows = [{"layout": layout.model_dump(mode="json", by_alias=True)} for layout in layouts]
        kwargs = {"generator": generator, "options": options, "out": str(Path(out).resolve()), "n": n, "seed": seed}
        return map_stage(GenerateStage, kwargs, rows, 1, engine)

    return generate_many


def summarise(manifest: dict[str, Any]) -> dict[str, int]:
    items = manifest.get("items", [])
    return {
        "layouts": len(items),
        "done": sum(1 for i in items if i["status"] == "done"),
        "resumed": sum(1 for i in items if i.get("resumed")),
        "failed": sum(1 for i in items if i["status"] != "done"),
        "images": sum(len(i.get("images", [])) for i in items),
    }

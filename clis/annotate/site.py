"""Build the static labelling site of ``clis annotate build``.

The site is plain files that work opened from disk (``file://``), with no server and the strict
content security policy of the leaderboard (only the site's own files load; no inline script
or style). Since a ``file://`` page cannot fetch JSON, the data is a script, ``data.js``, that
assigns one global (``window.CLIS_ANNOTATE``). Layout of ``out``::

    index.html          the page (jinja2, autoescaped); the keys are listed on it
    data.js             window.CLIS_ANNOTATE = {"site": {...}, "layouts": [...]}
    assets/             annotate.js, annotate.css
    images/<sha>.<ext>  a copy of each candidate, named by the first 16 hex digits of its sha256
    site.json           the site block, and what marks the folder as an annotate site

The site's ``id`` is the sha256 of the canonical JSON (sorted keys, no spaces) of the data
without ``site.id`` and ``site.built``: the same inputs and settings always make the same id,
so a rebuilt site keeps the labels that browsers stored for it, and any other change (another
sample, scores shown, a changed image) makes another site, whose labels never mix with these.

Only the files that the user named are read: the layouts file, the scores file, and the
candidates that :func:`clis.discovery.discover_candidates` finds for the layouts (the same
matching ``clis score`` uses). Each candidate must be a regular file within the byte limit of
:func:`clis.jsonio.check_input_file` and an image of at most ``max_pixels`` pixels (read from its
header); anything else is refused before the site is written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import random
import shutil
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional

from clis import __version__, jsonio
from clis.errors import InputError
from clis.files import is_inside, sha256_file, write_text_atomic
from clis.outputs import commit_staged, folder_beside

SITE_FORMAT = "clis.annotate-site/1"
# The same default as ``clis score --max-pixels`` (clis.image_score.images.DEFAULT_MAX_PIXELS),
# spelled out here so that building a site does not import the scoring stack.
DEFAULT_MAX_PIXELS = 40_000_000
# How many score strata ``--sample`` draws from at most (quantiles of each layout's best clis).
MAX_STRATA = 5
STATIC_FILES = ("annotate.js", "annotate.css")
# What a build writes into --out; nothing else there is touched.
SITE_ENTRIES = ("index.html", "data.js", "assets", "images", "site.json")
# Formats a browser shows as they are; others (TIFF) are copied as PNG.
_BROWSER_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif"}

# The keyboard shortcuts, as the page's help lists them (docs/annotate.md lists the same).
KEYS = (
    ("y / p / n", "answer the focused object: yes / partly / no, then focus the next unanswered one"),
    ("j or \u2193, k or \u2191", "next / previous object"),
    ("l or \u2192, h or \u2190", "the same object in the next / previous candidate"),
    ("x, Backspace or Delete", "clear the focused object's answer"),
    ("1 \u2026 9", "this candidate is the best one (press again to clear)"),
    ("a / z", "the layout is plausible: yes / no"),
    ("] or PageDown, [ or PageUp", "next / previous layout"),
    ("u", "next layout that is not fully labelled"),
    ("b", "hide or show the boxes (the focused one stays)"),
    ("e", "export the labels (a clis.labels/1 JSON file)"),
    ("?", "show or hide this help; Esc closes it"),
)


@dataclass
class SiteReport:
    """What a build wrote."""

    out: Path
    index: Path
    site: dict
    layouts: int
    candidates: int
    objects: int
    warnings: list[str] = field(default_factory=list)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def candidates_sha256(pairs: list[tuple[str, str]]) -> str:
    """The candidates' input hash: sha256 of the compact JSON of the sorted ``[relative path,
    file sha256]`` pairs (paths relative to CANDIDATES, with ``/``)."""
    listed = sorted([rel, sha] for rel, sha in pairs)
    return hashlib.sha256(json.dumps(listed, separators=(",", ":"), ensure_ascii=False).encode("utf-8")).hexdigest()


def site_id(data: dict) -> str:
    """sha256 of the canonical JSON of the site's data without ``site.id`` and ``site.built``."""
    site = {k: v for k, v in data["site"].items() if k not in ("id", "built")}
    return hashlib.sha256(canonical_json({**data, "site": site}).encode("utf-8")).hexdigest()


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


# ---------------------------------------------------------------------------------------------
# sampling


def sample_layouts(
    layout_ids: list[str], n: int, seed: int, best_scores: Optional[dict[str, Optional[float]]] = None
) -> tuple[list[str], dict[str, Any]]:
    """Keep ``n`` of ``layout_ids`` (returned in their given order) and describe how.

    Without ``best_scores``: a uniform sample. With them (each layout's best ``clis``, None when
    unscored): the scored layouts, sorted by score (ties in the given order), are cut into
    ``k = min(n, MAX_STRATA)`` strata of near-equal size (quantiles), and each stratum gives
    ``n // k`` layouts, the lowest strata one more while ``n % k`` is left; layouts without a
    score form a stratum of their own, which gets its share of ``n`` (rounded). Within a
    stratum the draw is uniform. ``random.Random(seed)`` makes it deterministic.
    """
    rng = random.Random(seed)
    order = {layout_id: i for i, layout_id in enumerate(layout_ids)}
    if best_scores is None:
        kept = rng.sample(layout_ids, n)
        return sorted(kept, key=order.__getitem__), {"n": n, "seed": seed, "method": "uniform"}
    scored = [i for i in layout_ids if best_scores.get(i) is not None]
    unscored = [i for i in layout_ids if best_scores.get(i) is None]
    n_unscored = min(len(unscored), round(n * len(unscored) / len(layout_ids))) if unscored else 0
    n_scored = n - n_unscored
    if n_scored > len(scored):  # few scored layouts: take them all, the rest from the unscored
        n_scored, n_unscored = len(scored), n - len(scored)
    kept: list[str] = []
    strata: list[dict[str, Any]] = []
    if n_scored:
        ranked = sorted(scored, key=lambda i: (best_scores[i], order[i]))
        k = min(n_scored, MAX_STRATA)
        size, extra = divmod(len(ranked), k)
        take, take_extra = divmod(n_scored, k)
        start = 0
        for s in range(k):
            members = ranked[start:start + size + (s < extra)]
            start += len(members)
            count = take + (s < take_extra)
            kept += rng.sample(members, count)
            strata.append({"from": best_scores[members[0]], "to": best_scores[members[-1]],
                           "layouts": len(members), "kept": count})
    if n_unscored:
        kept += rng.sample(unscored, n_unscored)
        strata.append({"from": None, "to": None, "layouts": len(unscored), "kept": n_unscored})
    described = {"n": n, "seed": seed, "method": "stratified by each layout's best clis score", "strata": strata}
    return sorted(kept, key=order.__getitem__), described


# ---------------------------------------------------------------------------------------------
# inputs


def _number(value: Any) -> Optional[float]:
    number = jsonio.finite_number(value)
    return None if number is None else round(number, 4)


def _read_image(path: Path, max_pixels: int) -> tuple[bytes, str, int, int, bool]:
    """The bytes of a candidate, its extension in the site, width, height, and whether it must
    be converted to PNG for a browser; InputError for anything that is not a usable image."""
    from PIL import Image, UnidentifiedImageError

    jsonio.check_input_file(path, "candidate image")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read candidate image: {exc.strerror or exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as handle:
                width, height, kind = handle.width, handle.height, handle.format
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (PIL cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: corrupt image ({' '.join(str(exc).split())})") from None
    if width * height > max_pixels:
        raise InputError(
            f"{path}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(raise it with --max-pixels)"
        )
    ext = _BROWSER_FORMATS.get(kind or "")
    return raw, ext or ".png", width, height, ext is None


def _as_png(raw: bytes, path: Path) -> bytes:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as handle:
                handle.load()
                out = io.BytesIO()
                handle.convert("RGBA" if "A" in handle.getbands() else "RGB").save(out, format="PNG")
                return out.getvalue()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: corrupt image ({' '.join(str(exc).split())})") from None


def is_site(folder: Path) -> bool:
    """Whether ``folder`` holds a site that ``clis annotate build`` wrote (its site.json)."""
    marker = folder / "site.json"
    try:
        data = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == SITE_FORMAT


def check_out(out: Path, candidates: Path, inputs: dict[str, Optional[Path]]) -> None:
    """Refuse, before any work, an --out that would replace or sit among the user's inputs, or
    that holds files but is not an earlier annotate site."""
    from clis.outputs import check_paths

    check_paths(inputs={flag: p for flag, p in inputs.items() if p is not None}, folders={"--out": out})
    if candidates.is_dir() and is_inside(out, candidates):
        raise InputError(f"--out {out}: is inside CANDIDATES ({candidates}); choose a folder outside it")
    if not out.is_dir():
        return
    for flag, path in inputs.items():
        if path is not None and is_inside(path, out):
            raise InputError(f"--out {out}: holds {flag} ({path}), which a build would replace; choose another --out")
    if any(out.iterdir()) and not is_site(out):
        raise InputError(f"--out {out}: is not empty and not an earlier clis annotate site (no site.json); "
                         "choose another --out")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# writing


def data_script(data: dict) -> str:
    """``data.js``: one assignment of the data as JSON, with ``<``, ``>`` and ``&`` escaped so the
    file reads as harmless even where it is shown as HTML."""
    text = jsonio.dumps(data, ensure_ascii=True, sort_keys=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"window.CLIS_ANNOTATE = {text};\n"


def _render(data: dict) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("clis.annotate", "templates"),
        autoescape=True,  # every user string is escaped; no template marks anything safe
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    layouts = data["layouts"]
    return env.get_template("index.html").render(
        site=data["site"], keys=KEYS, n_layouts=len(layouts),
        n_candidates=sum(len(layout["candidates"]) for layout in layouts),
    )  # fmt: skip


def build_site(
    candidates: str | os.PathLike,
    layouts: str | os.PathLike,
    out: str | os.PathLike,
    scores: Optional[str | os.PathLike] = None,
    blind: bool = True,
    sample: Optional[int] = None,
    seed: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_start: Optional[Callable[[int], None]] = None,
    on_image: Optional[Callable[[], None]] = None,
) -> SiteReport:
    """Build the labelling site of ``layouts`` and their ``candidates`` in ``out`` (see the module
    docstring). ``blind`` leaves the scores out of the site; ``sample`` keeps that many layouts
    (:func:`sample_layouts`). ``on_start(total)`` and ``on_image()`` report the copying."""
    from clis.discovery import discover_candidates
    from clis.formats import read_layouts
    from clis.outputs import OutputLock

    candidates, layouts_path, out = Path(candidates), Path(layouts), Path(out)
    scores_path = Path(scores) if scores is not None else None
    if sample is not None and sample < 1:
        raise InputError(f"--sample {sample}: must be at least 1")
    if max_pixels < 1:
        raise InputError(f"--max-pixels {max_pixels}: must be at least 1")
    if not candidates.is_dir():
        raise InputError(f"{candidates}: candidates folder not found" if not candidates.exists()
                         else f"{candidates}: is a file; CANDIDATES is a folder of images")  # fmt: skip
    inputs = {"CANDIDATES": candidates, "LAYOUTS": layouts_path, "--scores": scores_path}
    check_out(out, candidates, inputs)
    notes: list[str] = []

    report = read_layouts(layouts_path)
    for bad in report.invalid:
        notes.append(f"{layouts_path}: layout {bad.index} is invalid and left out: {bad.problems[0] if bad.problems else ''}")
    discovery = discover_candidates(candidates, report.layouts)
    notes += [f"{candidates}: layout {layout_id!r}: {why}" for layout_id, why in discovery.refused]
    for _, path in discovery.not_found:  # a device or FIFO that a layout lists is refused, never read
        if path.exists():
            jsonio.check_input_file(path, "candidate image")
    missing = {(layout_id, str(path)) for layout_id, path in discovery.not_found}
    notes += [f"{path}: listed for layout {layout_id!r} but not found; left out" for layout_id, path in missing]
    # A file under CANDIDATES that is a link to somewhere else would carry that file into a
    # site made to be handed to annotators: only what lies within CANDIDATES is copied (paths
    # a layout lists outside it were named by the user in the layouts file).
    escaping = {(layout_id, str(p)) for layout_id, paths in discovery.candidates.items() for p in paths
                if Path(os.path.abspath(p)).is_relative_to(os.path.abspath(candidates)) and not is_inside(p, candidates)}
    notes += [f"{path}: a link to a file outside {candidates}; left out" for _, path in sorted(escaping)]
    missing |= escaping
    by_id = {layout.id: layout for layout in report.layouts}
    usable = {
        layout_id: [p for p in paths if (layout_id, str(p)) not in missing]
        for layout_id, paths in discovery.candidates.items()
    }
    usable = {layout_id: paths for layout_id, paths in usable.items() if paths and layout_id in by_id}
    notes += [f"{candidates}: no candidate image for layout {layout_id!r}; left out"
              for layout_id in by_id if layout_id not in usable]  # fmt: skip
    if not usable:
        raise InputError(f"{candidates}: no candidate image for any layout of {layouts_path}; nothing to label")

    records: dict[tuple[str, str], dict] = {}
    if scores_path is not None:
        from clis.pick import candidate_index, find_candidate, read_scores_lines

        numbered = read_scores_lines(scores_path)
        # A record's image is found as clis pick finds it (as written, under CANDIDATES, or
        # beside the scores file), and only among the layout's discovered candidates.
        index = candidate_index(SimpleNamespace(candidates=usable))
        matched = set()
        for number, record in numbered:
            image = record.get("image")
            if not isinstance(image, str) or record.get("layout_id") not in usable:
                continue
            found = find_candidate(image, record["layout_id"], index, Path(candidates), scores_path,
                                   f"{scores_path}: line {number}")
            if found is not None:
                records.setdefault((record["layout_id"], str(found)), record)
                matched.add(id(record))
        unmatched = sum(1 for _, record in numbered if id(record) not in matched and record.get("image") is not None)
        if not matched:
            raise InputError(f"{scores_path}: no score record names a candidate of {candidates} for these layouts; "
                             "is it the scores file of these candidates?")  # fmt: skip
        if unmatched:
            notes.append(f"{scores_path}: {unmatched} score record(s) name no candidate found here; ignored")

    order = [layout.id for layout in report.layouts if layout.id in usable]
    sample_block = None
    if sample is not None:
        if sample >= len(order):
            notes.append(f"--sample {sample}: only {len(order)} layouts have candidates; all are kept")
        else:
            best = None
            if scores_path is not None:
                best = {}
                for layout_id in order:
                    values = [_number(records.get((layout_id, str(p)), {}).get("clis")) for p in usable[layout_id]]
                    values = [v for v in values if v is not None]
                    best[layout_id] = max(values) if values else None
            order, sample_block = sample_layouts(order, sample, seed, best)

    chosen = [(layout_id, path) for layout_id in order for path in usable[layout_id]]
    lock = OutputLock(out)
    with lock:
        staging = folder_beside(out, "staging")
        try:
            (staging / "images").mkdir()
            (staging / "assets").mkdir()
            if on_start is not None:
                on_start(len(chosen))
            pairs: list[tuple[str, str]] = []
            placed: dict[tuple[str, str], dict] = {}
            for layout_id, path in chosen:
                raw, ext, width, height, convert = _read_image(path, max_pixels)
                digest = hashlib.sha256(raw).hexdigest()
                pairs.append((_relative(path, candidates), digest))
                name = f"images/{digest[:16]}{ext}"
                target = staging / name
                if not target.exists():
                    target.write_bytes(_as_png(raw, path) if convert else raw)
                placed[(layout_id, str(path))] = {"src": name, "width": width, "height": height, "sha256": digest}
                if on_image is not None:
                    on_image()

            layout_data = []
            n_objects = 0
            for layout_id in order:
                layout = by_id[layout_id]
                cands = []
                for k, path in enumerate(usable[layout_id]):
                    entry = {"image": str(path), **placed[(layout_id, str(path))]}
                    if not blind:
                        record = records.get((layout_id, str(path)))
                        entry["scores"] = None if record is None else {
                            "clis": _number(record.get("clis")), "clis_i": _number(record.get("clis_i")),
                            "clis_l": _number(record.get("clis_l")), "error": record.get("error"),
                            "instances": {
                                inst["object_id"]: _number(inst.get("score"))
                                for inst in (record.get("instances") or []) if isinstance(inst, dict)
                            },
                        }  # fmt: skip
                    cands.append(entry)
                n_objects += len(cands) * len(layout.objects)
                names = {o.id: o.label for o in layout.objects}
                layout_data.append({
                    "id": layout.id,
                    "caption": layout.caption,
                    "objects": [{"id": o.id, "label": o.label, "phrase": o.phrase, "bbox": [float(v) for v in o.bbox]}
                                for o in layout.objects],
                    "relations": [
                        " ".join([" and ".join(names.get(s, s) for s in r.subject), r.relation,
                                  " and ".join(names.get(o, o) for o in r.object)])
                        for r in layout.relations
                    ],
                    "candidates": cands,
                })  # fmt: skip

            site_inputs = [
                {"role": "candidates", "path": str(candidates), "sha256": candidates_sha256(pairs)},
                {"role": "layouts", "path": str(layouts_path), "sha256": sha256_file(layouts_path)},
            ]
            if scores_path is not None:
                site_inputs.append({"role": "scores", "path": str(scores_path), "sha256": sha256_file(scores_path)})
            site = {
                "id": "",
                "clis_version": __version__,
                "built": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "blind": blind,
                "sample": sample_block,
                "inputs": site_inputs,
            }
            data = {"site": site, "layouts": layout_data}
            site["id"] = site_id(data)

            static = resources.files("clis.annotate") / "static"
            for name in STATIC_FILES:
                (staging / "assets" / name).write_bytes((static / name).read_bytes())
            write_text_atomic(staging / "data.js", data_script(data))
            write_text_atomic(staging / "index.html", _render(data))
            write_text_atomic(staging / "site.json",
                              jsonio.dumps({"format": SITE_FORMAT, "site": site}, indent=1, ensure_ascii=False) + "\n")
            commit_staged(staging, out, list(SITE_ENTRIES))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return SiteReport(out=out, index=out / "index.html", site=site, layouts=len(order), candidates=len(chosen),
                      objects=n_objects, warnings=notes)  # fmt: skip

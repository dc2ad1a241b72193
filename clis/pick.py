"""``clis pick``: keep the best candidates and write them as a COCO dataset (step 4-5 of ACP).

Selection, per layout, in this order:

1. candidates whose scoring failed (``error`` set, or no score to rank by) are dropped;
2. if the layout's CLIS-L is below ``min_layout``, all its candidates are dropped (a layout
   without a CLIS-L score is not filtered by it);
3. the rest are ranked by ``rank_by`` (``clis``, else ``clis_i``), best first, and only the
   top ``top`` are kept;
4. in each kept image, every instance scoring below ``min_instance`` is dropped from the
   annotations, as in the paper; an image left with no instance is dropped. A record none of
   whose instances has a score (a global-only run: ``--weight instances=0 --detector none``)
   keeps all its objects: there is nothing per object to filter by.

"Below" is strict: a score equal to a threshold passes. Every drop is recorded with its reason.

Example:
    >>> from clis.layout import Layout
    >>> from clis.pick import PickConfig, select
    >>> layout = Layout.model_validate({"id": "tea", "caption": "a cup on a table", "objects": [
    ...     {"id": "cup-1", "label": "cup", "bbox": [0.4, 0.3, 0.2, 0.2]},
    ...     {"id": "table-1", "label": "table", "bbox": [0.1, 0.5, 0.8, 0.5]}]})
    >>> def rec(image, clis, cup, table):
    ...     return {"layout_id": "tea", "image": image, "clis": clis, "clis_i": clis, "clis_l": 70.0, "error": None,
    ...             "instances": [{"object_id": "cup-1", "score": cup}, {"object_id": "table-1", "score": table}]}
    >>> selection = select([rec("0.png", 64.0, 80.0, 65.0), rec("1.png", 71.0, 75.0, 59.0)], [layout], PickConfig())
    >>> [(k.image, [o.id for o in k.objects]) for k in selection.kept]
    [('1.png', ['cup-1'])]
    >>> [(d["image"], d["reason"]) for d in selection.dropped_images]
    [('0.png', 'not in the top 1')]
    >>> [(d["object_id"], d["score"]) for d in selection.dropped_instances]
    [('table-1', 59.0)]
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from PIL import Image

from clis import jsonio
from clis.errors import InputError
from clis.files import SeenCandidates
from clis.layout import Layout, LayoutObject, Relation

RANK_KEYS = ("clis", "clis_i")
# Score fields of a record and of each of its instances: a finite number, or null (a failed
# record has no scores, a run without a detector or CLIS-L leaves those out).
RECORD_SCORES = ("clis", "clis_i", "clis_l", "global")
INSTANCE_SCORES = ("score", "region", "grounding")
# What a config file's ``pick`` table may set (the fields of PickConfig).
PICK_KEYS = ("top", "min_instance", "min_layout", "rank_by")


@dataclass(frozen=True)
class PickConfig:
    """Plain-data selection settings (scores on 0..100)."""

    top: int = 1
    min_instance: float = 60.0
    min_layout: float = 50.0
    rank_by: str = "clis"

    def __post_init__(self):
        for option, value in (("--min-instance", self.min_instance), ("--min-layout", self.min_layout)):
            # NaN compares false with everything, so it would silently keep (or drop) it all.
            if not 0 <= value <= 100:
                raise InputError(f"{option} must be a score in 0..100, got {value}")
        if self.top < 1:
            raise InputError(f"--top must be >= 1, got {self.top}")
        if self.rank_by not in RANK_KEYS:
            raise InputError(f"--rank-by must be one of {', '.join(RANK_KEYS)}, got {self.rank_by!r}")

    @classmethod
    def from_file(cls, path: str | Path | None, **flags: Any) -> "PickConfig":
        """Settings from the ``pick`` table of a config file (as ``clis bench calibrate``
        writes it), with ``flags`` that are not None winning; the class defaults fill the rest.

        ``pick.calibration`` (how the thresholds were chosen) is provenance and not read."""
        values: dict[str, Any] = {}
        if path is not None:
            from clis.scorer import read_config_data

            table = read_config_data(path).get("pick", {})
            if not isinstance(table, dict):
                raise InputError(f"{path}: pick: expected a table of pick settings (top, min_instance, min_layout, rank_by)")
            for key, value in table.items():
                if key == "calibration":
                    continue
                if key not in PICK_KEYS:
                    raise InputError(f"{path}: pick.{key}: unknown setting (known: {', '.join(PICK_KEYS)})")
                wanted = str if key == "rank_by" else int if key == "top" else (int, float)
                if isinstance(value, bool) or not isinstance(value, wanted) or (
                        isinstance(value, float) and jsonio.finite_number(value) is None):
                    raise InputError(f"{path}: pick.{key}: {value!r} is not a valid value")
                values[key] = value
        if path is not None:
            try:
                cls(**values)
            except InputError as exc:  # the check names the flag; the bad value is in the file
                raise InputError(f"{path}: pick: {exc}") from None
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(**values)


@dataclass
class KeptImage:
    """A candidate that survived, with the objects that survived in it."""

    layout: Layout
    image: str
    record: dict[str, Any]
    rank: int
    objects: list[LayoutObject]
    instance_records: dict[str, dict[str, Any]]


@dataclass
class Selection:
    kept: list[KeptImage] = field(default_factory=list)
    dropped_images: list[dict[str, Any]] = field(default_factory=list)
    dropped_instances: list[dict[str, Any]] = field(default_factory=list)
    # every layout the records were matched against: candidate discovery needs them all
    layouts: list[Layout] = field(default_factory=list)

    def summary(self, config: PickConfig) -> dict[str, Any]:
        kept_layouts = {k.layout.id for k in self.kept}
        all_layouts = kept_layouts | {d["layout_id"] for d in self.dropped_images}
        return {
            "settings": {
                "top": config.top, "min_instance": config.min_instance,
                "min_layout": config.min_layout, "rank_by": config.rank_by,
            },
            "candidates": len(self.kept) + len(self.dropped_images),
            "images_kept": len(self.kept),
            "images_dropped": len(self.dropped_images),
            "images_dropped_by_reason": dict(Counter(d["reason"] for d in self.dropped_images)),
            "instances_kept": sum(len(k.objects) for k in self.kept),
            "instances_dropped": len(self.dropped_instances),
            "layouts": len(all_layouts),
            "layouts_kept": len(kept_layouts),
            "layouts_without_image": sorted(all_layouts - kept_layouts),
        }  # fmt: skip


def _number(value: float) -> str:
    return f"{value:g}"


# How the empty-dataset warning words each reason a candidate was dropped for; any other
# reason is shown as it is.
DROP_REASONS = {
    "no instance at or above --min-instance":
        "{what} dropped by --min-instance {min_instance} (no instance scored {min_instance} or more)",
    "scoring failed": "{what} failed scoring (their error is in the scores file)",
    "no score": "{what} have no score to rank by",
    "invalid layout": "{what} belong to layouts that failed validation",
    "layout not in the layouts file": "{what} name a layout that is not in the layouts file",
    "image file not found": "{what}: image file not found",
}  # fmt: skip


def empty_dataset_warnings(summary: dict[str, Any]) -> list[str]:
    """One warning when a pick keeps nothing, saying which threshold (or failure) dropped what.

    ``summary`` is what ``clis pick`` writes to ``summary.json``: :meth:`Selection.summary`
    plus the ``dropped_images`` and ``dropped_instances`` lists. An empty list when an image
    was kept (an image is only kept with at least one instance).
    """
    if summary.get("images_kept"):
        return []
    settings = summary.get("settings", {})
    dropped = summary.get("dropped_images", [])
    if not dropped:
        return ["no image kept, the dataset is empty: there were no candidate records to pick from"]
    min_layout, min_instance = _number(settings.get("min_layout", 0)), _number(settings.get("min_instance", 0))
    all_layouts = {d.get("layout_id") for d in dropped}
    parts = []
    for reason, count in Counter(d.get("reason") for d in dropped).items():
        what = f"{count} of {len(dropped)} candidates"
        if reason == "layout below --min-layout":  # counted in layouts, as the threshold applies to them
            layouts = {d.get("layout_id") for d in dropped if d.get("reason") == reason}
            parts.append(f"{len(layouts)} of {len(all_layouts)} layouts ({what}) dropped by --min-layout {min_layout} "
                         f"(CLIS-L below {min_layout})")
        else:
            text = DROP_REASONS.get(reason)
            parts.append(text.format(what=what, min_instance=min_instance) if text else f"{what}: {reason}")
    instances = summary.get("dropped_instances", [])
    below = sum(1 for i in instances if i.get("reason") == "below --min-instance")
    if below:
        parts.append(f"{below} of {len(instances)} instances of the top-ranked candidates below --min-instance {min_instance}")
    return ["no image kept, the dataset is empty: " + "; ".join(parts)
            + " (lower --min-layout / --min-instance, or see summary.json)"]


def _score(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def select(
    records: Iterable[dict[str, Any]], layouts: Sequence[Layout], config: PickConfig,
    invalid: dict[str, str] | None = None,
) -> Selection:
    """Apply the selection rules of the module docstring to scores.jsonl records.

    ``invalid`` maps the ids of layouts that failed validation to their problem: their
    records are dropped as "invalid layout" rather than as unknown layouts.
    """
    invalid = invalid or {}
    records = list(records)
    by_id = {layout.id: layout for layout in layouts}
    selection = Selection(layouts=list(layouts))
    grouped: dict[str, list[tuple[int, dict]]] = {}

    def drop(record: dict, reason: str, **detail: Any) -> None:
        selection.dropped_images.append(
            {"layout_id": record.get("layout_id"), "image": record.get("image"), "reason": reason, **detail}
        )

    for order, record in enumerate(records):
        if record.get("layout_id") in invalid and record.get("layout_id") not in by_id:
            drop(record, "invalid layout", error=invalid[record["layout_id"]])
        elif record.get("layout_id") not in by_id:
            drop(record, "layout not in the layouts file")
        elif record.get("error"):
            drop(record, "scoring failed", error=record["error"])
        elif _score(record.get(config.rank_by)) is None and _score(record.get("clis_i")) is None:
            drop(record, "no score")
        else:
            grouped.setdefault(record["layout_id"], []).append((order, record))

    for layout_id, items in grouped.items():
        layout = by_id[layout_id]
        clis_l = _score(items[0][1].get("clis_l"))
        if clis_l is not None and clis_l < config.min_layout:
            for _, record in items:
                drop(record, "layout below --min-layout", clis_l=clis_l)
            continue

        def rank_value(item: tuple[int, dict]) -> tuple[float, int]:
            value = _score(item[1].get(config.rank_by))
            value = value if value is not None else _score(item[1].get("clis_i"))
            return (-value, item[0])  # best first; input order breaks ties

        ranked = sorted(items, key=rank_value)
        for rank, (_, record) in enumerate(ranked):
            if rank >= config.top:
                drop(record, f"not in the top {config.top}", rank=rank + 1)
                continue
            instances = {i.get("object_id"): i for i in record.get("instances") or [] if isinstance(i, dict)}
            # Without a single instance score (global-only scoring), --min-instance has nothing to read.
            unscored = not any(_score(i.get("score")) is not None for i in instances.values())
            kept_objects = []
            for obj in layout.objects:
                score = _score((instances.get(obj.id) or {}).get("score"))
                if unscored or (score is not None and score >= config.min_instance):
                    kept_objects.append(obj)
                else:
                    selection.dropped_instances.append(
                        {"layout_id": layout_id, "image": record["image"], "object_id": obj.id, "score": score,
                         "reason": "below --min-instance" if score is not None else "no instance score"}
                    )  # fmt: skip
            if not kept_objects:
                drop(record, "no instance at or above --min-instance", rank=rank + 1)
                continue
            selection.kept.append(KeptImage(layout, record["image"], record, rank + 1, kept_objects, instances))
    # Dropped records in input order, so the summary reads like the scores file.
    order = {(r.get("layout_id"), r.get("image")): i for i, r in enumerate(records)}
    selection.dropped_images.sort(key=lambda d: order.get((d["layout_id"], d["image"]), 0))
    return selection


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_score(value: Any, where: str, name: str) -> None:
    if value is not None and jsonio.finite_number(value) is None:
        raise InputError(f"{where}: field {name!r}: expected a finite number or null, got {_shown(value)}")


def check_score_record(record: Any, where: str) -> dict[str, Any]:
    """``record`` if it is a score record that pick can use, else InputError naming ``where``
    (``scores.jsonl: line 3``) and the field: ids and image paths are strings, ``error`` a
    string or null, every score field (:data:`RECORD_SCORES`, and :data:`INSTANCE_SCORES` of
    each instance) a finite number or null, ``detection`` an object or null. Missing fields
    count as null, so hand-made records need only ``layout_id`` and ``image``."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object")
    if not isinstance(record.get("layout_id"), str):
        raise InputError(f"{where}: field 'layout_id': expected a string")
    error = record.get("error")
    if error is not None and not isinstance(error, str):
        raise InputError(f"{where}: field 'error': expected a string or null, got {_shown(error)}")
    # An error record may have no image: an invalid layout without candidates gets one.
    if not isinstance(record.get("image"), str) and not (record.get("image") is None and error):
        raise InputError(f"{where}: field 'image': expected a string")
    for name in RECORD_SCORES:
        _check_score(record.get(name), where, name)
    instances = record.get("instances")
    if instances is not None and not isinstance(instances, list):
        raise InputError(f"{where}: field 'instances': expected a list of objects, got {_shown(instances)}")
    for k, instance in enumerate(instances or []):
        if not isinstance(instance, dict):
            raise InputError(f"{where}: field 'instances[{k}]': expected an object, got {_shown(instance)}")
        if not isinstance(instance.get("object_id"), str):
            raise InputError(f"{where}: field 'instances[{k}].object_id': expected a string")
        for name in INSTANCE_SCORES:
            _check_score(instance.get(name), where, f"instances[{k}].{name}")
        detection = instance.get("detection")
        if detection is not None and not isinstance(detection, dict):
            raise InputError(
                f"{where}: field 'instances[{k}].detection': expected an object or null, got {_shown(detection)}"
            )
    return record


def _parse_line(line: str, where: str) -> dict[str, Any]:
    try:
        record = jsonio.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not JSON ({exc.msg})") from None
    except jsonio.JSONError as exc:
        # NaN or 1e309: name the field it is in when Python's own parser can read the line.
        try:
            lenient = json.loads(line)
        except (ValueError, RecursionError):
            lenient = None
        if isinstance(lenient, dict):
            check_score_record(lenient, where)
        raise InputError(f"{where}: {exc}") from None
    return check_score_record(record, where)


def read_scores_lines(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each record of a scores.jsonl file, checked by
    :func:`check_score_record`. A line that is not such a record, or that lists an image its
    layout already has on an earlier line (two runs appending to one file), is an InputError
    naming the file and the line. A Parquet scores file (:mod:`clis.scoretable`) is read the
    same way, by row: its numbers are row numbers and its errors name the row."""
    from clis import scoretable  # pyarrow loads only when a scores file is read

    path = Path(path)
    numbered = []
    seen = SeenCandidates(path, unit=scoretable.record_unit(path))
    if scoretable.is_parquet(path):
        for number, record in scoretable.iter_parquet_rows(path):
            check_score_record(record, f"{path}: row {number}")
            seen.add(record, number)
            numbered.append((number, record))
        if not numbered:
            raise InputError(f"{path}: no score records (a table without rows); run `clis score` first")
        return numbered
    text = jsonio.read_text(path, "scores file")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = _parse_line(line, f"{path}: line {number}")
        seen.add(record, number)
        numbered.append((number, record))
    if not numbered:  # an empty file is a wrong path or a run that never started, not "nothing to pick"
        raise InputError(f"{path}: no score records (an empty file); run `clis score` first")
    return numbered


def read_scores_file(path: str | Path) -> list[dict[str, Any]]:
    """Records of a scores file (scores.jsonl or Parquet); a bad record is an error naming the
    file and line or row (see :func:`read_scores_lines`)."""
    return [record for _, record in read_scores_lines(path)]


def check_layout_ids(
    numbered: Sequence[tuple[int, dict[str, Any]]], known: Iterable[str], scores_path: Path, layouts_path: Path
) -> list[str]:
    """Warnings about records whose layout is not in the layouts file (neither valid nor
    invalid there). Scores of a superset are legitimate (picking from a filtered layouts
    file), so those records are only dropped and summarised in one warning; a scores file
    with records but none of these layouts is the wrong file: InputError."""
    from clis.scoretable import record_unit  # lazily: pyarrow loads with it

    known = set(known)
    unknown = [(number, record["layout_id"]) for number, record in numbered if record["layout_id"] not in known]
    if not unknown:
        return []
    first_line, first_id = unknown[0]
    unit = record_unit(scores_path)
    if len(unknown) == len(numbered):
        raise InputError(
            f"{scores_path}: none of its {len(numbered)} records names a layout of {layouts_path} "
            f"({unit} {first_line}: layout {first_id!r}); is it the scores file of these layouts?"
        )
    ids = list(dict.fromkeys(layout_id for _, layout_id in unknown))
    more = f" and {len(ids) - 1} more" if len(ids) > 1 else ""
    return [
        f"{scores_path}: {len(unknown)} records of {len(ids)} layouts that are not in {layouts_path} (first: {unit} "
        f"{first_line}, layout {first_id!r}{more}) are not picked; summary.json lists them under dropped_images"
    ]


def _image_options(image: str, candidates_dir: Path, scores_path: Optional[Path]) -> list[Path]:
    path = Path(image)
    options = [path] if path.is_absolute() else [path, candidates_dir / path, candidates_dir.parent / path]
    if scores_path is not None and not path.is_absolute():
        options.append(scores_path.parent / path)
    return options


def resolve_image(image: str, candidates_dir: Path, scores_path: Optional[Path] = None) -> Optional[Path]:
    """Find a record's image: as written (absolute or from the working folder), else inside the
    candidates folder, else next to the scores file. Any file: :func:`find_candidate` is the
    one that decides what pick may copy."""
    return next((p for p in _image_options(image, Path(candidates_dir), scores_path) if p.is_file()), None)


def candidate_index(discovery) -> dict[str, dict[Path, Path]]:
    """Per layout id, its discovered candidates keyed by their resolved path."""
    index: dict[str, dict[Path, Path]] = {}
    for layout_id, paths in discovery.candidates.items():
        index[layout_id] = {path.resolve(): path for path in paths}
    return index


def find_candidate(
    image: str, layout_id: str, index: dict[str, dict[Path, Path]], candidates_dir: Path,
    scores_path: Optional[Path] = None, where: str = "scores",
) -> Optional[Path]:
    """The candidate file of ``layout_id`` that a record's ``image`` names (looked up as
    :func:`resolve_image` does), or None when no such file exists any more. A record naming
    a file that exists but is not one of the layout's candidates (``/etc/passwd``, another
    layout's image, ``../private.png``) is an InputError: pick copies only what candidate
    discovery found for the layout (see :mod:`clis.discovery`)."""
    allowed = index.get(layout_id, {})
    elsewhere = None
    for option in _image_options(image, Path(candidates_dir), scores_path):
        try:
            resolved = option.resolve()
            found = allowed.get(resolved)
            if found is not None and found.is_file():
                return found
            if found is None and elsewhere is None and option.exists():
                elsewhere = resolved
        except (OSError, ValueError):  # a name too long, or with a NUL: no file of ours
            continue
    if elsewhere is not None:
        raise InputError(
            f"{where}: field 'image': {image!r} is {str(elsewhere)!r}, not a candidate of layout {layout_id!r} in "
            f"{str(candidates_dir)!r}; only the candidates found there are read (is this the scores file of "
            "these candidates?)"
        )
    return None


def check_candidates(
    numbered: Sequence[tuple[Any, dict[str, Any]]], layout_ids: Iterable[str], discovery, candidates_dir: Path,
    scores_path: Optional[Path] = None, source: str = "scores",
) -> None:
    """Check, before anything is copied, that every record of a layout in ``layout_ids``
    names one of its candidates (:func:`find_candidate`) and that no two records name the same
    one under different spellings. ``numbered`` pairs each record with its line (or, in a
    Parquet ``scores_path``, row) number."""
    from clis.scoretable import record_unit

    layout_ids = set(layout_ids)
    unit = record_unit(scores_path) if scores_path is not None else "line"
    index = candidate_index(discovery)
    claimed: dict[tuple[str, Path], Any] = {}
    for number, record in numbered:
        image, layout_id = record.get("image"), record["layout_id"]
        if image is None or layout_id not in layout_ids:
            continue
        where = f"{source}: {unit} {number}"
        found = find_candidate(image, layout_id, index, candidates_dir, scores_path, where)
        if found is None:
            continue
        key = (layout_id, found.resolve())
        if key in claimed:
            raise InputError(
                f"{where}: image {image!r} of layout {layout_id!r} is listed twice (first on {unit} {claimed[key]}, "
                f"both are {str(found)!r}); a scores file has one record per candidate"
            )
        claimed[key] = number


class SamMasker:
    """Box-prompted SAM masks (``transformers`` SAM through :func:`clis.models.load_model`)."""

    def __init__(self, spec: str, device: str = "cpu"):
        from clis.errors import ModelSpecError, ModelUnavailableError
        from clis.models import load_model

        try:
            self.loaded = load_model(spec, "sam", device=device)
        except (ModelUnavailableError, ModelSpecError) as exc:
            # Name the option that chose the model: with `--masks sam` alone it is the default.
            raise type(exc)(
                f"--sam-model {spec}: {exc} (choose the SAM model with --sam-model SPEC|DIR, or drop --masks sam)"
            ) from None

    def masks(self, image: Image.Image, boxes_xyxy: list[list[float]]):
        """One boolean ``H x W`` numpy mask per pixel box: the best of SAM's proposals, cut to
        the box. SAM can spill into the neighbouring object or the background; pixels outside
        the box would contradict the annotation's own bbox, so they are cleared."""
        import numpy as np
        import torch

        processor, model = self.loaded.processor, self.loaded.model
        inputs = processor(images=image, input_boxes=[boxes_xyxy], return_tensors="pt").to(self.loaded.device)
        with torch.inference_mode():
            outputs = model(**inputs, multimask_output=True)
        masks = processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )[0]  # boxes x proposals x H x W
        best = outputs.iou_scores[0].argmax(dim=-1).cpu()  # SAM's own quality estimate per box
        result = []
        for i, (x0, y0, x1, y1) in enumerate(boxes_xyxy):
            # Every pixel the box touches, partly covered edge pixels included.
            left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
            right, bottom = max(0, int(np.ceil(x1))), max(0, int(np.ceil(y1)))
            inside = np.zeros((image.height, image.width), dtype=bool)
            inside[top:bottom, left:right] = True
            result.append(masks[i, best[i]].numpy().astype(bool) & inside)
        return result

    def describe(self) -> dict[str, Any]:
        return dict(self.loaded.fingerprint or {"spec": self.loaded.spec})


def surviving_relations(layout: Layout, objects: Sequence[LayoutObject]) -> list[Relation]:
    """The layout's relations among ``objects`` only: dropped ids leave each side, and a
    relation left without a subject or an object goes (the annotations must not name objects
    that are not annotated)."""
    kept = {o.id for o in objects}
    relations = []
    for relation in layout.relations:
        subject = [i for i in relation.subject if i in kept]
        object_ = [i for i in relation.object if i in kept]
        if subject and object_:
            relations.append(relation.model_copy(update={"subject": subject, "object": object_}))
    return relations


def _output_name(layout_id: str, image: Path, taken: set[str]) -> str:
    base = f"{layout_id}_{image.stem}"
    name, n = f"{base}{image.suffix.lower()}", 1
    while name in taken:
        name, n = f"{base}-{n}{image.suffix.lower()}", n + 1
    taken.add(name)
    return name


def write_dataset(
    selection: Selection,
    out_dir: str | Path,
    candidates_dir: str | Path,
    scores_path: Optional[str | Path] = None,
    masker: Optional[SamMasker] = None,
    on_image: Optional[Callable[[], None]] = None,
    discovery=None,
) -> dict[str, Any]:
    """Copy kept images to ``out/images/`` and write ``out/annotations.json`` (COCO).

    Only candidates that :func:`clis.discovery.discover_candidates` finds for the kept image's
    layout in ``candidates_dir`` are copied (pass ``discovery`` to reuse one; by default it runs
    over ``selection.layouts``): a record naming any other file is an InputError. Every kept
    image is found and decoded before the first copy; one that is gone or cannot be decoded is
    dropped ("image file not found", "cannot open image") and the rest are written.

    Boxes are the surviving layout boxes in pixels of each image. Extra fields carry the
    scores: per image ``clis``, ``clis_i``, ``clis_l``, ``clis_global``, ``clis_rank``,
    ``clis_layout_id`` and ``clis_source``; per annotation ``clis_object_id``, ``clis_score``,
    ``clis_region``, ``clis_grounding`` and ``clis_detection``. With a masker, each annotation
    gets SAM's mask as RLE ``segmentation`` and its pixel ``area``.
    Returns the COCO dict.
    """
    from clis.discovery import discover_candidates
    from clis.formats import layouts_to_coco
    from clis.image_score.images import ImageReadError, open_image

    out = Path(out_dir)
    images_out = out / "images"
    candidates_dir = Path(candidates_dir)
    scores_path = Path(scores_path) if scores_path else None
    if discovery is None:
        discovery = discover_candidates(candidates_dir, selection.layouts or [k.layout for k in selection.kept])
    index = candidate_index(discovery)
    # Everything is checked before the first copy, so a refusal leaves no half-written dataset.
    ready = []
    for kept in list(selection.kept):
        source = find_candidate(kept.image, kept.layout.id, index, candidates_dir, scores_path, "scores")
        if source is None:
            selection.kept.remove(kept)
            selection.dropped_images.append(
                {"layout_id": kept.layout.id, "image": kept.image, "reason": "image file not found"}
            )
            continue
        try:
            size = open_image(source).size
        except ImageReadError as exc:
            selection.kept.remove(kept)
            selection.dropped_images.append(
                {"layout_id": kept.layout.id, "image": kept.image, "reason": "cannot open image", "error": str(exc)}
            )
            continue
        ready.append((kept, source, size))
    images_out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    per_image_layouts, file_names, sizes, kept_rows = [], {}, {}, []
    for kept, source, size in ready:
        name = _output_name(kept.layout.id, source, taken)
        shutil.copyfile(source, images_out / name)
        sizes[name] = size
        # One layout per output image, holding only its surviving objects and their relations.
        per_image_layouts.append(
            kept.layout.model_copy(
                update={"id": name, "objects": kept.objects, "relations": surviving_relations(kept.layout, kept.objects)}
            )
        )
        file_names[name] = name
        kept_rows.append((name, source, kept))
    coco = layouts_to_coco(per_image_layouts, file_names=file_names, sizes=sizes)
    annotations_by_image: dict[int, list[dict]] = {}
    for annotation in coco["annotations"]:
        annotations_by_image.setdefault(annotation["image_id"], []).append(annotation)
    for image_entry, (name, source, kept) in zip(coco["images"], kept_rows):
        record = kept.record
        image_entry.update(
            clis_layout_id=kept.layout.id, clis_source=str(source), clis_rank=kept.rank,
            clis=record.get("clis"), clis_i=record.get("clis_i"), clis_l=record.get("clis_l"),
            clis_global=record.get("global"),
        )  # fmt: skip
        annotations = annotations_by_image.get(image_entry["id"], [])
        for annotation in annotations:
            instance = kept.instance_records.get(annotation["clis_object_id"], {})
            annotation.update(
                clis_score=instance.get("score"), clis_region=instance.get("region"),
                clis_grounding=instance.get("grounding"), clis_detection=instance.get("detection"),
            )  # fmt: skip
        if masker is not None and annotations:
            _add_masks(masker, images_out / name, annotations)
        if on_image is not None:
            on_image()
    coco["info"] = {"description": "cherry-picked by clis pick", "masks": masker.describe() if masker else None}
    (out / "annotations.json").write_text(jsonio.dumps(coco, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return coco


def _add_masks(masker: SamMasker, image_path: Path, annotations: list[dict]) -> None:
    import numpy as np
    from pycocotools import mask as mask_utils

    with Image.open(image_path) as im:
        image = im.convert("RGB")
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)]
    for annotation, mask in zip(annotations, masker.masks(image, boxes)):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")  # JSON needs text; pycocotools reads either
        annotation["segmentation"] = rle
        annotation["area"] = float(mask.sum())

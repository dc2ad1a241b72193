"""Build pool examples from annotated data: Visual Genome, COCO instances, layouts.json.

Each reader yields relation examples (:class:`~clis.layout_score.pool.PoolExample`) and,
where the boxes can be normalised to their image, scenes
(:class:`~clis.layout_score.pool.PoolScene`, for the pair prior): COCO images of known size
and layouts give both, Visual Genome relationships (no image size) only relation examples.
The records it had to skip (and why) go to a :class:`BuildReport`, so one bad annotation
never stops a build of millions.

Example:
    >>> vg = [{"image_id": 1, "relationships": [{"predicate": "ON",
    ...        "subject": {"name": "cup", "x": 40, "y": 20, "w": 20, "h": 20},
    ...        "object": {"names": ["table"], "x": 10, "y": 40, "w": 80, "h": 40}}]}]
    >>> report = BuildReport()
    >>> [(e.subject, e.relation, e.object) for e in examples_from_visual_genome(vg, "vg", report)]
    [('cup', 'on', 'table')]
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from pydantic import ValidationError

from clis.errors import InputError
from clis.layout import Layout
from clis.layout_score.geometry import relation_from_geometry
from clis.layout_score.pool import PoolExample, PoolScene

SOURCE_KINDS = ("auto", "vg", "coco", "layouts")


@dataclass
class BuildReport:
    """What a build read, wrote and skipped."""

    examples: Counter = field(default_factory=Counter)  # relation examples per source file
    scenes: Counter = field(default_factory=Counter)  # scenes per source file
    skipped: Counter = field(default_factory=Counter)  # per reason
    first_problems: list[str] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.first_problems) < 5:
            self.first_problems.append(f"{where}: {reason}")


def _example(report: BuildReport, where: str, **fields: Any) -> Optional[PoolExample]:
    try:
        return PoolExample(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(p) for p in error["loc"])
        report.skip(where, f"field '{name}': {error['msg'].removeprefix('Value error, ')}")
        return None


def _is_number(value: Any) -> bool:
    """A JSON number; ``true``/``false`` are not (Python would take them as 1 and 0)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_id(value: Any) -> bool:
    """An id that can key a lookup: a number or a string (a list would raise TypeError there)."""
    return _is_number(value) or isinstance(value, str)


# --- Visual Genome -----------------------------------------------------------------------------


def _vg_name(entity: dict) -> Optional[str]:
    if isinstance(entity.get("name"), str):
        return entity["name"]
    names = entity.get("names")
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    return None


def _vg_box(entity: dict) -> Optional[list[float]]:
    values = [entity.get(k) for k in ("x", "y", "w", "h")]
    return [float(v) for v in values] if all(_is_number(v) for v in values) else None


def examples_from_visual_genome(data: Any, source: str, report: BuildReport) -> Iterator[PoolExample]:
    """Examples from Visual Genome ``relationships.json`` (a list of images with relationships).

    The predicate is the relation; a subject or object names itself with ``name`` or the first
    of ``names``; boxes are VG's pixel ``x, y, w, h``.
    """
    if not isinstance(data, list):
        raise InputError(f"{source}: top level: Visual Genome relationships.json must be a list of images")
    for i, image in enumerate(data):
        if not isinstance(image, dict):
            report.skip(f"{source}: images[{i}]", "not an object")
            continue
        image_id = image.get("image_id", i)
        # The image_id finds the record in VG's own tools; the position finds it in this file.
        image_where = f"{source}: image {image_id} (images[{i}])"
        if not isinstance(image.get("relationships"), list):
            report.skip(image_where, "field 'relationships': expected a list")
            continue
        for j, rel in enumerate(image["relationships"]):
            where = f"{image_where} relationship {j}"
            if not isinstance(rel, dict):
                report.skip(where, "not an object")
                continue
            subject, obj = rel.get("subject"), rel.get("object")
            if not isinstance(subject, dict) or not isinstance(obj, dict):
                report.skip(where, "field 'subject'/'object': expected objects")
                continue
            predicate = rel.get("predicate")
            if not isinstance(predicate, str) or not predicate.strip():
                report.skip(where, "field 'predicate': missing or blank")
                continue
            names, boxes = (_vg_name(subject), _vg_name(obj)), (_vg_box(subject), _vg_box(obj))
            if None in names:
                report.skip(where, "field 'name'/'names': missing on subject or object")
                continue
            if None in boxes:
                report.skip(where, "field 'x'/'y'/'w'/'h': missing or not a number")
                continue
            example = _example(report, where, subject=names[0], relation=predicate, object=names[1],
                               subject_box=boxes[0], object_box=boxes[1],
                               source=f"vg:{image_id}/{rel.get('relationship_id', j)}")
            if example is not None:
                yield example


# --- COCO instances ----------------------------------------------------------------------------


def _scene(report: BuildReport, where: str, objects: list[tuple[str, list[float]]], width: float, height: float,
           source: str) -> Optional[PoolScene]:
    normalised = [(label, [box[0] / width, box[1] / height, box[2] / width, box[3] / height]) for label, box in objects]
    try:
        return PoolScene(scene=normalised, source=source)
    except ValidationError as exc:
        report.skip(where, f"scene: {exc.errors()[0]['msg'].removeprefix('Value error, ')}")
        return None


def examples_from_coco(data: Any, source: str, report: BuildReport, max_objects: int = 8,
                       min_area: float = 0.0) -> Iterator[PoolExample | PoolScene]:
    """Examples from COCO instances: every ordered pair of an image's objects, with the
    relation word read from the geometry (:func:`~clis.layout_score.geometry.relation_from_geometry`),
    and one scene per image of known size (its boxes normalised to the image).

    Crowd annotations are skipped. At most ``max_objects`` objects per image take part (the
    largest ones, which is also what layout generators draw), and objects smaller than
    ``min_area`` (a fraction of the image area, when the image size is known) are ignored.
    """
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise InputError(f"{source}: top level: field 'annotations': COCO instances need a list of annotations")
    categories = _coco_categories(data, source)
    sizes = _coco_image_sizes(data, source)
    by_image: dict[Any, list[tuple[str, list[float]]]] = {}
    for i, ann in enumerate(data["annotations"]):
        where = f"{source}: annotation {ann.get('id', i) if isinstance(ann, dict) else i}"
        if not isinstance(ann, dict):
            report.skip(where, "not an object")
            continue
        if ann.get("iscrowd"):
            continue
        if not _is_id(ann.get("image_id")):
            report.skip(where, f"field 'image_id': expected a number or string, got {ann.get('image_id')!r}")
            continue
        category_id = ann.get("category_id")
        name = categories.get(category_id) if _is_id(category_id) else None
        if name is None:
            report.skip(where, f"field 'category_id': unknown category {category_id!r}")
            continue
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            report.skip(where, f"field 'bbox': expected [x, y, w, h] numbers, got {box!r}")
            continue
        if box[2] <= 0 or box[3] <= 0:
            report.skip(where, f"field 'bbox': box {box} is degenerate")
            continue
        width, height = sizes.get(ann.get("image_id"), (None, None))
        if min_area > 0 and width and height and box[2] * box[3] < min_area * width * height:
            continue
        by_image.setdefault(ann.get("image_id"), []).append((name, [float(v) for v in box]))
    for image_id, objects in by_image.items():
        objects = sorted(objects, key=lambda item: -item[1][2] * item[1][3])[:max_objects]
        width, height = sizes.get(image_id, (None, None))
        if width and height:
            scene = _scene(report, f"{source}: image {image_id}", objects, float(width), float(height),
                           f"coco:{image_id}")
            if scene is not None:
                yield scene
        pairs = [(a, b) for a in range(len(objects)) for b in range(len(objects)) if a != b]
        if not pairs:
            continue
        words = relation_from_geometry([objects[a][1] for a, _ in pairs], [objects[b][1] for _, b in pairs])
        for (a, b), word in zip(pairs, words):
            example = _example(report, f"{source}: image {image_id}", subject=objects[a][0], relation=word,
                               object=objects[b][0], subject_box=objects[a][1], object_box=objects[b][1],
                               source=f"coco:{image_id}")
            if example is not None:
                yield example


def _coco_table(data: dict, key: str, source: str) -> list:
    table = data.get(key, [])
    if not isinstance(table, list):
        raise InputError(f"{source}: top level: field '{key}': expected a list, got {type(table).__name__}")
    return table


def _coco_categories(data: dict, source: str) -> dict[Any, str]:
    """``{id: name}``. A broken entry stops the build: every annotation of it would be lost."""
    names = {}
    for i, category in enumerate(_coco_table(data, "categories", source)):
        where = f"{source}: categories[{i}]"
        if not isinstance(category, dict):
            raise InputError(f"{where}: expected an object, got {type(category).__name__}")
        if not _is_id(category.get("id")):
            raise InputError(f"{where}: field 'id': expected a number or string, got {category.get('id')!r}")
        if not isinstance(category.get("name"), str):
            raise InputError(f"{where}: field 'name': expected a string, got {category.get('name')!r}")
        names[category["id"]] = category["name"]
    return names


def _coco_image_sizes(data: dict, source: str) -> dict[Any, tuple[Optional[float], Optional[float]]]:
    """``{image id: (width, height)}``; a size may be absent (``--min-area`` then ignores the image)."""
    sizes = {}
    for i, image in enumerate(_coco_table(data, "images", source)):
        if not isinstance(image, dict):
            raise InputError(f"{source}: images[{i}]: expected an object, got {type(image).__name__}")
        if not _is_id(image.get("id")):
            raise InputError(f"{source}: images[{i}]: field 'id': expected a number or string, got {image.get('id')!r}")
        for key in ("width", "height"):
            value = image.get(key)
            if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
                raise InputError(f"{source}: image {image['id']!r} (images[{i}]): field '{key}': "
                                 f"expected a positive number, got {value!r}")
        sizes[image["id"]] = (image.get("width"), image.get("height"))
    return sizes


# --- layouts.json --------------------------------------------------------------------------------


def examples_from_layouts(layouts: Iterable[Layout], source: str,
                          report: BuildReport) -> Iterator[PoolExample | PoolScene]:
    """One scene per layout (its normalised boxes), and a relation example for every
    (subject id, object id) of every relation.

    Relation-example boxes are scaled to the layout's pixel size when it has one, so the
    aspect ratio of the canvas is kept; without a size the canvas is taken as square.
    """
    for layout in layouts:
        scene = _scene(report, f"{source}: layout {layout.id!r}", [(o.label, list(o.bbox)) for o in layout.objects],
                       1.0, 1.0, f"layout:{layout.id}")
        if scene is not None:
            yield scene
        width, height = float(layout.width or 1), float(layout.height or 1)
        by_id = {o.id: o for o in layout.objects}
        for r, relation in enumerate(layout.relations):
            for subject_id in relation.subject:
                for object_id in relation.object:
                    where = f"{source}: layout {layout.id!r} relations[{r}]"
                    if subject_id not in by_id or object_id not in by_id:
                        report.skip(where, f"names unknown object {subject_id if subject_id not in by_id else object_id!r}")
                        continue
                    s, o = by_id[subject_id], by_id[object_id]
                    example = _example(report, where, subject=s.label, relation=relation.relation, object=o.label,
                                       subject_box=list(s.pixel_box(width, height)),
                                       object_box=list(o.pixel_box(width, height)),
                                       source=f"layout:{layout.id}")
                    if example is not None:
                        yield example


# --- dispatch -------------------------------------------------------------------------------------


def detect_source_kind(data: Any) -> str:
    """``vg`` (a list of images with ``relationships``), ``coco`` (annotations + categories) or ``layouts``."""
    if isinstance(data, list):
        first = next((item for item in data if isinstance(item, dict)), None)
        if first is not None and "relationships" in first:
            return "vg"
    if isinstance(data, dict) and "annotations" in data and "categories" in data:
        return "coco"
    return "layouts"


def read_json(path: Path) -> Any:
    """A source file's JSON, strictly (``clis.jsonio.read_json``): one InputError naming it."""
    from clis import jsonio

    return jsonio.read_json(path, "source file")


def examples_from_file(path: str | Path, report: BuildReport, kind: str = "auto", max_objects: int = 8,
                       min_area: float = 0.0, keep: Optional[Callable[[Layout], bool]] = None
                       ) -> Iterator[PoolExample | PoolScene]:
    """Relation examples and scenes from one source file; ``kind`` is ``auto``, ``vg``,
    ``coco`` or ``layouts`` (any layouts file ``clis validate`` reads, NSR-1K included; its
    invalid records are skipped and reported). ``keep`` selects the layouts of a layouts file."""
    path = Path(path)
    if kind not in SOURCE_KINDS:
        raise InputError(f"unknown source kind {kind!r} (choose from {', '.join(SOURCE_KINDS)})")
    data = read_json(path)
    kind = detect_source_kind(data) if kind == "auto" else kind
    name = str(path)
    if kind == "vg":
        examples = examples_from_visual_genome(data, name, report)
    elif kind == "coco":
        examples = examples_from_coco(data, name, report, max_objects=max_objects, min_area=min_area)
    else:
        from clis.formats import read_layouts

        layouts = read_layouts(path)
        for bad in layouts.invalid:
            report.skip(bad.error, "invalid layout record")
        kept = [layout for layout in layouts.layouts if keep is None or keep(layout)]
        examples = examples_from_layouts(kept, name, report)
    for example in examples:
        (report.scenes if isinstance(example, PoolScene) else report.examples)[f"{kind}:{path.name}"] += 1
        yield example

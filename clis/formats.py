"""Reading, validating and writing layout files.

Three formats are read, and the format is detected from the file's shape:

- **canonical** ``layouts.json``: a JSON list of layouts (see ``clis.layout.Layout``), or an
  object ``{"layouts": [...]}``;
- **ACP scene graph**: a list of (or one) ``{"caption", "layout": [{"object", "bbox"}],
  "attributes", "relations"}`` items as written by Auto Cherry-Picker's LLM stage;
- **COCO instances**: ``{"images", "annotations", "categories"}`` with pixel boxes.

Every problem becomes one line naming the file, the record and the field, so a broken file
reports all of its problems at once.

Example:
    >>> import json, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "layouts.json")
    >>> _ = open(path, "w").write(json.dumps([{"id": "a", "caption": "a cat",
    ...     "objects": [{"id": "cat-1", "label": "cat", "bbox": [0.1, 0.1, 0.5, 0.5]}]}]))
    >>> [layout.id for layout in load_layouts(path)]
    ['a']
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from clis.errors import LayoutFileError
from clis.files import write_text_atomic
from clis.layout import Layout, LayoutObject, cross_reference_problems, label_from_object_name

FORMATS = ("canonical", "acp", "coco")

logger = logging.getLogger(__name__)


@dataclass
class _Unconvertible:
    """Stands in for a record that could not be converted from another format: its problem
    lines are reported in file order, and the records after it keep their indices."""

    problems: list[str]


@dataclass
class ValidationReport:
    """What ``validate_file`` found: the layouts that parsed and one line per problem."""

    path: str
    format: str | None
    layouts: list[Layout] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Things read past on purpose, such as COCO images without annotations: one line each.
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        labels = Counter(label for layout in self.layouts for label in layout.labels)
        return {
            "file": self.path,
            "format": self.format,
            "layouts": len(self.layouts),
            "objects": sum(len(layout.objects) for layout in self.layouts),
            "relations": sum(len(layout.relations) for layout in self.layouts),
            "labels": len(labels),
            "top_labels": labels.most_common(5),
            "problems": len(self.problems),
            "warnings": len(self.warnings),
        }


def _field_path(loc: Iterable[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(record)"


def _record_name(index: int, record: Any) -> str:
    if isinstance(record, dict) and isinstance(record.get("id"), (str, int)):
        return f"layout {index} (id {record['id']!r})"
    return f"layout {index}"


def _raw_cross_reference(record: dict[str, Any]) -> list[tuple[str, str]]:
    objects = record.get("objects")
    relations = record.get("relations")
    if not isinstance(objects, list) or not all(isinstance(o, dict) and isinstance(o.get("id"), str) for o in objects):
        return []
    pairs = [
        (r.get("subject"), r.get("object")) for r in relations if isinstance(r, dict)
    ] if isinstance(relations, list) else []
    return cross_reference_problems([o["id"] for o in objects], pairs)


def _validate_records(path: str, records: list[Any], report: ValidationReport) -> None:
    ids: dict[Any, int] = {}
    for index, record in enumerate(records):
        if isinstance(record, _Unconvertible):
            report.problems.extend(record.problems)
            continue
        where = f"{path}: {_record_name(index, record)}"
        if not isinstance(record, dict):
            report.problems.append(f"{where}: expected an object, got {type(record).__name__}")
            continue
        problems: list[str] = []
        layout = None
        try:
            layout = Layout.model_validate(record)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                message = error["msg"].removeprefix("Value error, ")
                if error["type"] == "missing":
                    message = "required field is missing"
                problems.append(f"{where}: field {_field_path(error['loc'])}: {message}")
        for field_name, message in _raw_cross_reference(record):
            problems.append(f"{where}: field {field_name}: {message}")
        record_id = record.get("id")
        if isinstance(record_id, (str, int)):
            if record_id in ids:
                problems.append(f"{where}: field id: duplicate layout id {record_id!r} (first used by layout {ids[record_id]})")
            else:
                ids[record_id] = index
        report.problems.extend(problems)
        if layout is not None and not problems:
            report.layouts.append(layout)


def _read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LayoutFileError(str(path), [f"{path}: file not found"]) from None
    except OSError as exc:
        raise LayoutFileError(str(path), [f"{path}: cannot read file: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LayoutFileError(
            str(path), [f"{path}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"]
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LayoutFileError(str(path), [f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"]) from None


def detect_format(data: Any) -> str | None:
    """Name the format of parsed JSON: ``canonical``, ``acp``, ``coco``, or None."""
    if isinstance(data, dict):
        if "annotations" in data and "images" in data:
            return "coco"
        if "layouts" in data:
            return "canonical"
        if "layout" in data:
            return "acp"
        return None
    if isinstance(data, list):
        if not data:
            return "canonical"
        first = next((item for item in data if isinstance(item, dict)), None)
        if first is None:
            return None
        if "layout" in first and "objects" not in first:
            return "acp"
        return "canonical"
    return None


# --- ACP scene graphs -------------------------------------------------------------------


def _is_id(value: Any) -> bool:
    """COCO and ACP ids are integers or strings; anything else cannot be looked up by value."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _acp_attributes(raw: Any, name: str) -> list[str]:
    if isinstance(raw, dict):
        value = raw.get(name, [])
    elif isinstance(raw, list):
        value = next((item.get("attributes", []) for item in raw if isinstance(item, dict) and item.get("object") == name), [])
    else:
        value = []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _acp_problems(item: dict[str, Any]) -> list[tuple[str, str]]:
    """Shape problems of an ACP item as ``(field, message)``, named in the ACP item's own terms.

    These are checked before conversion because a canonical field path (``objects[0].id``)
    would name a field the ACP file does not have.
    """
    found = []
    if "id" in item and not _is_id(item["id"]):
        found.append(("id", f"expected a string or an integer, got {type(item['id']).__name__}"))
    entries = item.get("layout")
    if "layout" not in item:
        return [*found, ("layout", "required field is missing")]
    if not isinstance(entries, list):
        return [*found, ("layout", f"expected a list of {{object, bbox}} items, got {type(entries).__name__}")]
    for j, entry in enumerate(entries):
        if not isinstance(entry, dict):
            found.append((f"layout[{j}]", f"expected an object {{object, bbox}}, got {type(entry).__name__}"))
        elif "object" not in entry:
            found.append((f"layout[{j}].object", "required field is missing"))
        elif not isinstance(entry["object"], str):
            found.append((f"layout[{j}].object", f"expected a name such as 'cat-1', got {type(entry['object']).__name__}"))
    if not isinstance(item.get("attributes") or {}, (dict, list)):
        found.append(("attributes", f"expected {{object: [attributes]}}, got {type(item['attributes']).__name__}"))
    return found


def acp_item_to_record(item: dict[str, Any], index: int) -> dict[str, Any]:
    """Turn one ACP scene-graph item into a canonical layout record (not yet validated).

    Keys the canonical format does not know (groups, depth, ...) are kept on the layout.
    Values of the wrong type are passed on for validation to name.
    """
    known = {"id", "caption", "layout", "attributes", "relations", "width", "height", "images"}
    entries = item.get("layout")
    objects: Any = entries
    if isinstance(entries, list):
        objects = []
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("object"), str):
                name = entry["object"]
                extra = {k: v for k, v in entry.items() if k not in {"object", "bbox"}}
                objects.append(
                    {
                        "id": name,
                        "label": label_from_object_name(name),
                        "bbox": entry.get("bbox"),
                        "attributes": _acp_attributes(item.get("attributes"), name),
                        **extra,
                    }
                )
            else:
                objects.append(entry)  # let validation name what is wrong with it
    record = {
        "id": str(item["id"]) if _is_id(item.get("id")) else item.get("id", str(index)),
        "caption": item.get("caption", ""),
        "objects": objects,
        "relations": item.get("relations") or [],
    }
    for key in ("width", "height", "images"):
        if key in item:
            record[key] = item[key]
    record.update({k: v for k, v in item.items() if k not in known})
    return record


def _acp_records(path: str, items: list[Any]) -> list[Any]:
    records = []
    for index, item in enumerate(items):
        problems = _acp_problems(item) if isinstance(item, dict) else []
        if problems:
            where = f"{path}: {_record_name(index, item)}"
            records.append(_Unconvertible([f"{where}: field {name}: {message}" for name, message in problems]))
        else:
            records.append(acp_item_to_record(item, index) if isinstance(item, dict) else item)
    return records


def layouts_to_acp(layouts: Iterable[Layout]) -> list[dict[str, Any]]:
    """Write layouts as ACP scene-graph items (``layout: [{object, bbox}]``)."""
    items = []
    for layout in layouts:
        item: dict[str, Any] = {
            "id": layout.id,
            "caption": layout.caption,
            "layout": [{"object": o.id, "bbox": list(o.bbox)} for o in layout.objects],
            "attributes": {o.id: list(o.attributes) for o in layout.objects if o.attributes},
            "relations": [r.model_dump(include={"subject", "relation", "object"}) for r in layout.relations],
        }
        if layout.width and layout.height:
            item["width"], item["height"] = layout.width, layout.height
        items.append(item)
    return items


# --- COCO -------------------------------------------------------------------------------
#
# Extra fields that layouts_to_coco writes, so that canonical -> COCO -> canonical gives the
# same layouts back:
#   image:      clis_layout_id, caption, clis_relations (whole relations, extra keys included),
#               clis_images (the layout's own ``images`` list when it is not just [file_name]),
#               clis_implicit_file (file_name was made up from the id: the layout lists none),
#               clis_canvas ([width, height] of the layout, null when unknown; written when the
#               image size is ``default_size`` rather than the layout's own),
#               clis_extra (the layout's extra keys);
#   annotation: clis_object_id, attributes, description, clis_extra (the object's extra keys).
# Reading a COCO file clis did not write (entries without clis_layout_id / clis_object_id)
# keeps its ids as extra keys (clis_coco_image_id on the layout, clis_coco_annotation_id and
# clis_coco_category_id on each object), and the writer reuses them, so COCO -> canonical ->
# COCO keeps image, annotation and category ids.

COCO_IMAGE_ID = "clis_coco_image_id"
COCO_ANNOTATION_ID = "clis_coco_annotation_id"
COCO_CATEGORY_ID = "clis_coco_category_id"


def layouts_from_coco(data: dict[str, Any], source: str = "<coco>") -> list[Layout]:
    """Build one layout per COCO image from its (non-crowd) instance annotations.

    Pixel boxes are normalised by the image size. Fields written by ``layouts_to_coco`` are
    read back so that a canonical -> COCO -> canonical round trip is lossless. Images without
    a non-crowd annotation are skipped (a layout needs an object) and logged as a warning.
    """
    report = ValidationReport(path=source, format="coco")
    records = _coco_records(data, source, report)
    if not report.problems:
        _validate_records(source, records, report)
    if report.problems:
        raise LayoutFileError(source, report.problems)
    _log_warnings(report)
    return report.layouts


def _id_problem(entry: Any, key: str) -> str | None:
    """Why ``entry[key]`` cannot be looked up as a COCO id (``field KEY: ...``), or None."""
    if not isinstance(entry, dict):
        return f"expected an object, got {type(entry).__name__}"
    if key not in entry:
        return f"field {key}: required field is missing"
    if not _is_id(entry[key]):
        return f"field {key}: expected an integer id, got {type(entry[key]).__name__}"
    return None


def _coco_lists(data: dict[str, Any], source: str, report: ValidationReport) -> dict[str, list[Any]] | None:
    lists = {key: data.get(key, []) for key in ("images", "annotations", "categories")}
    wrong = [key for key, value in lists.items() if not isinstance(value, list)]
    for key in wrong:
        report.problems.append(f"{source}: top level: field {key}: expected a list, got {type(lists[key]).__name__}")
    return None if wrong else lists


def _coco_categories(categories: list[Any], source: str, report: ValidationReport) -> dict[Any, str]:
    names: dict[Any, str] = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_id(cat.get("id")) or not isinstance(cat.get("name"), str):
            report.problems.append(f"{source}: categories[{i}]: field id/name: a category needs an id and a name")
        elif cat["id"] in names:
            report.problems.append(f"{source}: categories[{i}]: field id: duplicate category id {cat['id']!r}")
        else:
            names[cat["id"]] = cat["name"]
    return names


def _coco_image_ids(images: list[Any], source: str, report: ValidationReport) -> set[Any]:
    ids: set[Any] = set()
    for index, image in enumerate(images):
        problem = _id_problem(image, "id")
        if problem:
            report.problems.append(f"{source}: images[{index}]: {problem}")
        elif image["id"] in ids:
            report.problems.append(f"{source}: images[{index}] (id {image['id']!r}): field id: duplicate image id")
        else:
            ids.add(image["id"])
    return ids


def _coco_annotations_by_image(
    annotations: list[Any], image_ids: set[Any], source: str, report: ValidationReport
) -> dict[Any, list[tuple[int, dict[str, Any]]]]:
    by_image: dict[Any, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for i, ann in enumerate(annotations):
        where = f"{source}: annotations[{i}]"
        problem = _id_problem(ann, "image_id")
        if problem:
            report.problems.append(f"{where}: {problem}")
        elif ann["image_id"] not in image_ids:
            report.problems.append(f"{where}: field image_id: no image has id {ann['image_id']!r}")
        else:
            by_image[ann["image_id"]].append((i, ann))
    return by_image


def _coco_object(
    ann_index: int, ann: dict[str, Any], categories: dict[Any, str], size: tuple[float, float],
    source: str, report: ValidationReport,
) -> dict[str, Any] | None:
    """An object record from one annotation, or None after reporting what is wrong with it."""
    where = f"{source}: annotations[{ann_index}]"
    problem = _id_problem(ann, "category_id")
    if problem:
        report.problems.append(f"{where}: {problem}")
        return None
    category_id = ann["category_id"]
    if category_id not in categories:
        report.problems.append(f"{where}: field category_id: unknown category {category_id!r}")
        return None
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        report.problems.append(f"{where}: field bbox: expected [x, y, w, h] numbers")
        return None
    width, height = size
    obj: dict[str, Any] = {
        "label": categories[category_id],
        "bbox": [box[0] / width, box[1] / height, box[2] / width, box[3] / height],
    }
    for key in ("attributes", "description"):
        if key in ann:
            obj[key] = ann[key]
    if "clis_object_id" in ann:
        obj["id"] = ann["clis_object_id"]
        _merge_extra(obj, ann, LayoutObject, where, report)
    else:
        # A file clis did not write: keep its ids so that writing COCO again reuses them.
        if _is_id(ann.get("id")):
            obj[COCO_ANNOTATION_ID] = ann["id"]
        obj[COCO_CATEGORY_ID] = category_id
    return obj


def _merge_extra(
    record: dict[str, Any], entry: dict[str, Any], model: type[BaseModel], where: str, report: ValidationReport
) -> None:
    """Put back the extra keys ``layouts_to_coco`` saved in ``clis_extra``; fields stay as read."""
    extra = entry.get("clis_extra", {})
    if not isinstance(extra, dict):
        report.problems.append(f"{where}: field clis_extra: expected an object, got {type(extra).__name__}")
        return
    record.update({k: v for k, v in extra.items() if k not in model.model_fields})


def _coco_image_record(
    index: int, image: dict[str, Any], annotations: list[tuple[int, dict[str, Any]]], categories: dict[Any, str],
    source: str, report: ValidationReport,
) -> dict[str, Any] | None:
    """A layout record for one image, or None when the image cannot give one."""
    where = f"{source}: images[{index}] (id {image['id']!r})"
    width, height = image.get("width"), image.get("height")
    if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
        report.problems.append(f"{where}: field width/height: positive image size required to normalise boxes")
        return None
    file_name = image.get("file_name")
    if file_name is not None and not isinstance(file_name, str):
        report.problems.append(f"{where}: field file_name: expected a string, got {type(file_name).__name__}")
        return None
    objects = [
        _coco_object(i, ann, categories, (width, height), source, report) for i, ann in annotations if not ann.get("iscrowd")
    ]
    objects = [o for o in objects if o is not None]
    if not objects:
        return None  # every annotation was reported; "no objects" would only repeat that
    counters: Counter[str] = Counter()
    for obj in objects:
        counters[obj["label"]] += 1
        obj.setdefault("id", f"{obj['label']}-{counters[obj['label']]}")
    written_by_clis = "clis_layout_id" in image
    layout_id = image.get("clis_layout_id") or (Path(file_name).stem if file_name else str(image["id"]))
    if "caption" in image:
        caption = image["caption"]
    else:
        caption = "a photo of " + ", ".join(o["label"] for o in objects) if objects else ""
    record: dict[str, Any] = {
        "id": str(layout_id),
        "caption": caption,
        "objects": objects,
        "relations": image.get("clis_relations", []),
    }
    canvas = image.get("clis_canvas", [int(width), int(height)])
    if not (isinstance(canvas, list) and len(canvas) == 2):
        report.problems.append(f"{where}: field clis_canvas: expected [width, height]")
        return None
    record.update({key: value for key, value in zip(("width", "height"), canvas) if value is not None})
    if "clis_images" in image:
        record["images"] = image["clis_images"]
    elif file_name and not image.get("clis_implicit_file"):
        record["images"] = [file_name]
    if written_by_clis:
        _merge_extra(record, image, Layout, where, report)
    else:
        record[COCO_IMAGE_ID] = image["id"]
    return record


def _coco_records(data: dict[str, Any], source: str, report: ValidationReport) -> list[dict[str, Any]]:
    lists = _coco_lists(data, source, report)
    if lists is None:
        return []
    categories = _coco_categories(lists["categories"], source, report)
    image_ids = _coco_image_ids(lists["images"], source, report)
    by_image = _coco_annotations_by_image(lists["annotations"], image_ids, source, report)
    records, skipped, seen = [], [], set()
    for index, image in enumerate(lists["images"]):
        if not (isinstance(image, dict) and _is_id(image.get("id"))) or image["id"] in seen:
            continue  # reported by _coco_image_ids
        seen.add(image["id"])
        annotations = by_image.get(image["id"], [])
        if not any(not ann.get("iscrowd") for _, ann in annotations):
            # Real COCO files have such images (48 in instances_val2017.json); a layout
            # needs an object, so they are skipped and counted, not fatal.
            skipped.append(image["id"])
            continue
        record = _coco_image_record(index, image, annotations, categories, source, report)
        if record is not None:
            records.append(record)
    if skipped:
        shown = ", ".join(repr(i) for i in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        report.warnings.append(
            f"{source}: skipped {len(skipped)} of {len(lists['images'])} images that have no non-crowd "
            f"annotation, so no object for a layout (image ids {shown})"
        )
    return records


def _assign_ids(wanted: list[Any]) -> list[Any]:
    """Each wanted id where it is a usable id not wanted earlier, else the next unused integer."""
    taken: set[Any] = set()
    granted: list[Any] = []
    for value in wanted:
        ok = _is_id(value) and value not in taken
        granted.append(value if ok else None)
        if ok:
            taken.add(value)
    fresh = (n for n in itertools.count(1) if n not in taken)
    return [value if value is not None else next(fresh) for value in granted]


def _extra(model: Any) -> dict[str, Any]:
    return dict(model.model_extra or {})


def _coco_image_entry(
    layout: Layout, image_id: Any, file_name: str | None, size: tuple[int, int] | None, default_size: tuple[int, int]
) -> dict[str, Any]:
    own_size = (layout.width, layout.height) if layout.width and layout.height else None
    width, height = size or own_size or default_size
    entry: dict[str, Any] = {
        "id": image_id,
        "file_name": file_name or (layout.images[0] if layout.images else f"{layout.id}.png"),
        "width": int(width),
        "height": int(height),
        "caption": layout.caption,
        "clis_layout_id": layout.id,
        "clis_relations": [r.model_dump() for r in layout.relations],
    }
    if file_name is None:
        # Without a file named by the caller, the entry must also say what the layout itself
        # lists, so that reading it back neither invents nor loses candidate images.
        if not layout.images:
            entry["clis_implicit_file"] = True
        if layout.images is not None and layout.images != [entry["file_name"]]:
            entry["clis_images"] = list(layout.images)
    if size is None and own_size is None:
        entry["clis_canvas"] = [layout.width, layout.height]
    if _extra(layout):
        entry["clis_extra"] = _extra(layout)
    return entry


def _coco_annotation(obj: Any, annotation_id: Any, image_id: Any, category_id: Any, size: tuple[int, int]) -> dict[str, Any]:
    x, y, w, h = obj.pixel_box(*size)
    annotation = {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x, y, w, h],
        "area": w * h,
        "iscrowd": 0,
        "clis_object_id": obj.id,
    }
    if obj.attributes:
        annotation["attributes"] = list(obj.attributes)
    if obj.description is not None:
        annotation["description"] = obj.description
    if _extra(obj):
        annotation["clis_extra"] = _extra(obj)
    return annotation


def layouts_to_coco(
    layouts: Iterable[Layout],
    file_names: dict[str, str] | None = None,
    sizes: dict[str, tuple[int, int]] | None = None,
    default_size: tuple[int, int] = (512, 512),
) -> dict[str, Any]:
    """COCO instances dict for ``layouts``; boxes become pixels of each image's size.

    The size of a layout's image is taken from ``sizes[layout.id]``, else the layout's own
    ``width``/``height``, else ``default_size``. An image's file is ``file_names[layout.id]``,
    else the first of the layout's ``images``, else ``<id>.png``; when ``file_names`` names it,
    the entry describes that file and the layout's own ``images`` list is not written.
    Image, annotation and category ids read from a COCO file (``clis_coco_*`` extra keys)
    are reused where they are unique; the others are the smallest unused integers from 1,
    with categories in sorted label order.
    """
    layouts = list(layouts)
    file_names = file_names or {}
    sizes = sizes or {}
    objects = [obj for layout in layouts for obj in layout.objects]
    labels = sorted({o.label for o in objects})
    wanted_category: dict[str, Any] = {}
    for obj in objects:
        if wanted_category.get(obj.label) is None:
            wanted_category[obj.label] = _extra(obj).get(COCO_CATEGORY_ID)
    category_ids = dict(zip(labels, _assign_ids([wanted_category[label] for label in labels])))
    image_ids = _assign_ids([_extra(layout).get(COCO_IMAGE_ID) for layout in layouts])
    annotation_ids = iter(_assign_ids([_extra(obj).get(COCO_ANNOTATION_ID) for obj in objects]))
    images, annotations = [], []
    for layout, image_id in zip(layouts, image_ids):
        entry = _coco_image_entry(layout, image_id, file_names.get(layout.id), sizes.get(layout.id), default_size)
        images.append(entry)
        for obj in layout.objects:
            annotations.append(
                _coco_annotation(obj, next(annotation_ids), image_id, category_ids[obj.label], (entry["width"], entry["height"]))
            )
    return {
        "info": {"description": "written by clis"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": category_ids[label], "name": label, "supercategory": "object"} for label in labels],
    }


# --- entry points -----------------------------------------------------------------------


def _log_warnings(report: ValidationReport) -> None:
    for line in report.warnings:
        logger.warning("warning: %s", line)


def _records(path: Path, data: Any, detected: str, report: ValidationReport) -> list[Any]:
    """The raw layout records of parsed ``data`` in format ``detected``; problems go to ``report``."""
    if detected == "coco":
        if not isinstance(data, dict):
            report.problems.append(f"{path}: top level: COCO instances JSON must be an object")
            return []
        return _coco_records(data, str(path), report)
    if isinstance(data, dict):
        if detected == "canonical" and "layouts" not in data:
            report.problems.append(f"{path}: top level: field layouts: required field is missing")
            return []
        items = data["layouts"] if detected == "canonical" else [data]
    else:
        items = data
    if not isinstance(items, list):
        report.problems.append(f"{path}: top level: field layouts: expected a list of layouts")
        return []
    return _acp_records(str(path), items) if detected == "acp" else items


def validate_file(path: str | Path, format: str = "auto") -> ValidationReport:
    """Read and check a layouts file; never raises for content problems, only reports them."""
    path = Path(path)
    report = ValidationReport(path=str(path), format=None)
    try:
        data = _read_json(path)
    except LayoutFileError as exc:
        report.problems.extend(exc.problems)
        return report
    detected = detect_format(data) if format == "auto" else format
    if detected not in FORMATS:
        report.problems.append(
            f"{path}: top level: not a layouts file (expected a list of layouts, an ACP scene graph or COCO instances JSON)"
        )
        return report
    report.format = detected
    _validate_records(str(path), _records(path, data, detected, report), report)
    return report


def load_layouts(path: str | Path, format: str = "auto") -> list[Layout]:
    """Load and validate a layouts file; raise ``LayoutFileError`` listing every problem.

    Warnings (such as COCO images skipped for having no annotation) are logged.
    """
    report = validate_file(path, format=format)
    if report.problems:
        raise LayoutFileError(str(path), report.problems)
    _log_warnings(report)
    return report.layouts


def layout_to_record(layout: Layout) -> dict[str, Any]:
    return layout.model_dump(exclude_none=True, exclude_defaults=False)


def save_layouts(layouts: Iterable[Layout], path: str | Path, format: str = "canonical") -> Path:
    """Write layouts as canonical JSON (default), ``acp`` or ``coco``, atomically: an interrupted
    write (``clis plan`` saves after every layout) leaves the previous complete file."""
    layouts = list(layouts)
    if format == "canonical":
        data: Any = [layout_to_record(layout) for layout in layouts]
    elif format == "acp":
        data = layouts_to_acp(layouts)
    elif format == "coco":
        data = layouts_to_coco(layouts)
    else:
        raise ValueError(f"unknown layout format {format!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def boxes_close(a: Iterable[float], b: Iterable[float], tol: float = 1e-9) -> bool:
    """True when two boxes agree to ``tol``; pixel round trips differ by float rounding only."""
    return all(math.isclose(x, y, rel_tol=0, abs_tol=tol) for x, y in zip(a, b))

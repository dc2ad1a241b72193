"""Reading, validating and writing layout files.

Four formats are read, and the format is detected from the file's shape:

- **canonical** ``layouts.json``: a JSON list of layouts (see ``clis.layout.Layout``), or an
  object ``{"layouts": [...]}``;
- **ACP scene graph**: a list of (or one) ``{"caption", "layout": [{"object", "bbox"}],
  "attributes", "groups", "layers of depth", "relations"}`` items as written by Auto
  Cherry-Picker's LLM stages (relations nested in captioned groups, or flat), scored ones too
  (``img_dir``, ``score``, ... are kept as extra keys). Object names resolve exactly, else
  ignoring case; a name that names no object is a problem of its layout;
- **COCO instances**: ``{"images", "annotations", "categories"}`` with pixel boxes;
- **InstanceDiffusion input**: a list of (or one) ``{"caption", "width", "height",
  "annos": [{"bbox", "caption"}]}`` items, as ACP feeds InstanceDiffusion;
- **NSR-1K** (LayoutGPT's benchmark, read only): ``{"prompt", "object_list"}`` counting
  records or ``{"prompt", "obj1", "obj2", "relation"}`` spatial ones (``clis.nsr``).

All but NSR-1K are also written by ``save_layouts``; the comments of the ACP and InstanceDiffusion
sections say what their round trips keep.

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
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from clis.errors import LayoutFileError
from clis.files import write_text_atomic
from clis.layout import Layout, LayoutObject, check_box, cross_reference_problems, label_from_object_name
from clis.nsr import is_nsr_item, nsr_record

FORMATS = ("canonical", "acp", "coco", "instancediffusion", "nsr")

logger = logging.getLogger(__name__)


@dataclass
class _Unconvertible:
    """Stands in for a record that could not be converted from another format: its problem
    lines are reported in file order, and the records after it keep their indices.
    ``layout_id`` is the id the record would have had, where one can be read."""

    problems: list[str]
    layout_id: str | None = None
    # What could be converted despite the problems; validated too, so its problems are listed.
    partial: dict[str, Any] | None = None


@dataclass
class InvalidLayout:
    """A layout record of a file that failed validation: where it is and why.

    Commands that run every valid layout (``clis score``, ``pick``, ...) turn it into error
    records; ``layout_id`` is None when the record has no usable id, and ``images`` is the
    record's own list of candidate files where it could be read.
    """

    index: int
    layout_id: str | None
    problems: list[str]
    images: list[str] | None = None
    img_dir: Any = None  # an ACP item's candidates folder, passed to discovery as it is

    def stand_in(self, layout_id: str) -> Layout:
        """A layout of only what candidate discovery reads (id, images, img_dir), unvalidated,
        so that the invalid record still claims its candidate images."""
        extra = {"img_dir": self.img_dir} if self.img_dir is not None else {}
        return Layout.model_construct(id=layout_id, images=self.images, objects=[], relations=[], **extra)

    @property
    def key(self) -> str:
        """The ``layout_id`` of this record's error records: its own id, else ``record <index>``."""
        return self.layout_id if self.layout_id is not None else f"record {self.index}"

    @property
    def error(self) -> str:
        """The first problem on one line, with the count of the others."""
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        return self.problems[0] + more


@dataclass
class ValidationReport:
    """What ``validate_file`` found: the layouts that parsed and one line per problem."""

    path: str
    format: str | None
    layouts: list[Layout] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Things read past on purpose, such as COCO images without annotations: one line each.
    warnings: list[str] = field(default_factory=list)
    # The layout records that failed, each with its own problems (also listed in ``problems``).
    invalid: list[InvalidLayout] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def in_file_order(self) -> list[Layout | InvalidLayout]:
        """Valid layouts and invalid records together, as the file lists them."""
        invalid_at = {bad.index: bad for bad in self.invalid}
        valid = iter(self.layouts)
        return [invalid_at[i] if i in invalid_at else next(valid) for i in range(len(self.layouts) + len(self.invalid))]

    @property
    def file_problems(self) -> list[str]:
        """Problems of the file as a whole (bad JSON, wrong top level, ...): no layout owns them."""
        owned = Counter(line for bad in self.invalid for line in bad.problems)
        left = []
        for line in self.problems:
            if owned[line]:
                owned[line] -= 1
            else:
                left.append(line)
        return left

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
        earlier: list[str] = []
        if isinstance(record, _Unconvertible):
            if record.partial is None:
                report.problems.extend(record.problems)
                # An id an earlier record has cannot name this one's candidates (they are that record's).
                layout_id = record.layout_id if record.layout_id not in ids else None
                if layout_id is not None:
                    ids[layout_id] = index
                report.invalid.append(InvalidLayout(index, layout_id, list(record.problems)))
                continue
            earlier, record = list(record.problems), record.partial
        where = f"{path}: {_record_name(index, record)}"
        if not isinstance(record, dict):
            problem = f"{where}: expected an object, got {type(record).__name__}"
            report.problems.append(problem)
            report.invalid.append(InvalidLayout(index, None, [problem]))
            continue
        problems: list[str] = earlier
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
        if problems:
            report.invalid.append(InvalidLayout(
                index, _usable_id(record_id, ids, index), problems, _listed_images(record), record.get("img_dir")))
        elif layout is not None:
            report.layouts.append(layout)


def _usable_id(record_id: Any, ids: dict[Any, int], index: int) -> str | None:
    """The id an invalid record's candidates are found by, or None when it cannot name them:
    not a string, a path, or the id of an earlier record (whose candidates those are)."""
    if not _is_id(record_id) or ids.get(record_id, index) != index:
        return None
    text = str(record_id)
    if not text.strip() or text in {".", ".."} or "/" in text or "\\" in text:
        return None
    return text


def _listed_images(record: dict[str, Any]) -> list[str] | None:
    images = record.get("images")
    if isinstance(images, list) and all(isinstance(name, str) for name in images):
        return list(images)
    return None


def _read_json(path: Path) -> Any:
    from clis import jsonio
    from clis.errors import InputError

    try:
        # A device (/dev/zero) or FIFO would be read forever, a 40 GB file into memory.
        jsonio.check_input_file(path, "layouts file")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LayoutFileError(str(path), [f"{path}: file not found"]) from None
    except InputError as exc:
        raise LayoutFileError(str(path), [str(exc)]) from None
    except OSError as exc:
        raise LayoutFileError(str(path), [f"{path}: cannot read file: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LayoutFileError(
            str(path), [f"{path}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"]
        ) from None
    try:
        return jsonio.loads(text)
    except json.JSONDecodeError as exc:
        raise LayoutFileError(str(path), [f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"]) from None
    except jsonio.JSONError as exc:
        raise LayoutFileError(str(path), [f"{path}: invalid JSON: {exc}"]) from None


def detect_format(data: Any) -> str | None:
    """Name the format of parsed JSON: ``canonical``, ``acp``, ``coco``, ``instancediffusion``
    (items with ``annos``), ``nsr`` (items with ``object_list`` or ``obj1``), or None."""
    if isinstance(data, dict):
        if "annotations" in data and "images" in data:
            return "coco"
        if "layouts" in data:
            return "canonical"
        if "layout" in data:
            return "acp"
        if "annos" in data:
            return "instancediffusion"
        return None
    if isinstance(data, list):
        if not data:
            return "canonical"
        first = next((item for item in data if isinstance(item, dict)), None)
        if first is None:
            return None
        if "layout" in first and "objects" not in first:
            return "acp"
        if "annos" in first and "objects" not in first:
            return "instancediffusion"
        if is_nsr_item(first):
            return "nsr"
        return "canonical"
    return None


# --- ACP scene graphs -------------------------------------------------------------------
#
# An ACP item as Auto Cherry-Picker's LLM stages write it:
#   caption, attributes: [{name, attributes: "black, fluffy"}], groups: [{id, group: [names]}],
#   "layers of depth": {Foreground|Midground|Background|Immediate Foreground: [group ids]},
#   relations: [{caption, relations: [{subject: [names], object: [names], relation}]}],
#   layout: [{object: name, bbox: [x, y, w, h]}] (normalised),
# and, after a scoring run, img_dir, img_path, score, global_score, local_score_list.
# Also read: a flat ``relations: [{subject, relation, object}]``, ``attributes`` as
# ``{name: [attributes] | "a, b"}`` or ``[{object, attributes}]``.
#
# Every ACP key the canonical model has no field for (groups, layers of depth, the run keys,
# ...) stays on the layout as an extra key of the same name and is written back as it was.
# The canonical model cannot say how the item was written, so the reader records that in
# these layout extras (and only where the default ACP writer would not give the item back):
ACP_ABSENT_KEY = "acp_absent"  # ACP keys the item did not have (id, caption, attributes, relations)
ACP_ATTRIBUTES_KEY = "acp_attributes"  # the item's own ``attributes`` value, verbatim
ACP_RELATION_GROUPS_KEY = "acp_relation_groups"  # nested relations: each group's keys but ``relations``
ACP_GROUP_KEY = "acp_group"  # on a relation: the index of its group in acp_relation_groups
_ACP_BOOKKEEPING = frozenset({ACP_ABSENT_KEY, ACP_ATTRIBUTES_KEY, ACP_RELATION_GROUPS_KEY})
# Keys of an ACP item that map onto canonical fields.
_ACP_FIELDS = ("id", "caption", "layout", "attributes", "relations", "width", "height", "images")
# The depth layers ACP's prompt names (other layer names are accepted too).
ACP_DEPTH_LAYERS = ("Immediate Foreground", "Foreground", "Midground", "Background")
ACP_DEPTH_KEY = "layers of depth"


def _is_id(value: Any) -> bool:
    """COCO and ACP ids are integers or strings; anything else cannot be looked up by value."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _split_attributes(text: str) -> list[str]:
    """``"black, fluffy"`` -> ``["black", "fluffy"]``: split at commas, parts stripped, empty ones dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _join_attributes(attributes: list[str]) -> str | list[str]:
    """The ACP string for ``attributes``, or the list itself when no string splits back to it
    (an attribute with a comma, padding or nothing in it)."""
    text = ", ".join(attributes)
    return text if _split_attributes(text) == list(attributes) else list(attributes)


class _ObjectNames:
    """Resolves the object names an ACP item uses to the ids of its ``layout`` entries.

    An exact name wins; else a name equal to exactly one object's when case and surrounding
    spaces are ignored resolves to that object's own id. Anything else is a problem: ACP's
    own rule (match the number suffix alone) would tie ``collar-4`` to ``steps-4``.
    """

    def __init__(self, names: list[str]):
        self.names = list(dict.fromkeys(names))
        self.exact = set(self.names)
        self.folded: dict[str, list[str]] = defaultdict(list)
        for name in self.names:
            self.folded[name.strip().casefold()].append(name)

    def resolve(self, ref: Any) -> tuple[str | None, str | None]:
        """``(object id, None)``, or ``(None, problem)``."""
        if not isinstance(ref, str):
            return None, f"expected an object name such as 'cat-1', got {type(ref).__name__}"
        if ref in self.exact:
            return ref, None
        matches = self.folded.get(ref.strip().casefold(), [])
        if len(matches) == 1:
            return matches[0], None
        if matches:
            return None, f"name {ref!r} matches several objects when case is ignored ({', '.join(matches)})"
        return None, f"names unknown object {ref!r} (known: {', '.join(self.names)})"


def _acp_attribute_values(
    raw: Any, names: _ObjectNames, problems: list[tuple[str, str]]
) -> dict[str, list[str]]:
    """Attributes per object id from an item's ``attributes`` value, in any of its forms."""
    found: dict[str, list[str]] = {}

    def add(ref: Any, value: Any, name_field: str, value_field: str) -> None:
        object_id, problem = names.resolve(ref)
        if problem:
            problems.append((name_field, problem))
            return
        if isinstance(value, str):
            parts = _split_attributes(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            parts = list(value)
        else:
            problems.append((value_field, f"expected a string such as 'black, fluffy', got {type(value).__name__}"))
            return
        found.setdefault(object_id, []).extend(parts)

    if isinstance(raw, dict):
        for key, value in raw.items():
            add(key, value, f"attributes.{key}", f"attributes.{key}")
    elif isinstance(raw, list):
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict):
                problems.append((f"attributes[{i}]", f"expected an object {{name, attributes}}, got {type(entry).__name__}"))
                continue
            key = "name" if "name" in entry or "object" not in entry else "object"
            if key not in entry:
                problems.append((f"attributes[{i}].name", "required field is missing"))
                continue
            add(entry[key], entry.get("attributes", []), f"attributes[{i}].{key}", f"attributes[{i}].attributes")
    return found


def _acp_attributes_out(objects: list[LayoutObject]) -> list[dict[str, Any]]:
    """``attributes`` as ACP writes it: one ``{name, attributes: "a, b"}`` per object, in order."""
    return [{"name": o.id, "attributes": _join_attributes(list(o.attributes))} for o in objects]


def _acp_relation(rel: Any, where: str, names: _ObjectNames, problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    """A canonical relation dict with resolved ids, or None after listing what is wrong with it."""
    if not isinstance(rel, dict):
        problems.append((where, f"expected an object {{subject, relation, object}}, got {type(rel).__name__}"))
        return None
    out, ok = dict(rel), True
    for side in ("subject", "object"):
        if side not in rel:
            problems.append((f"{where}.{side}", "required field is missing"))
            ok = False
            continue
        single = isinstance(rel[side], str)
        refs = [rel[side]] if single else rel[side]
        if not isinstance(refs, list) or not refs:
            problems.append((f"{where}.{side}", "expected a list of object names, such as ['cat-1']"))
            ok = False
            continue
        resolved = []
        for k, ref in enumerate(refs):
            object_id, problem = names.resolve(ref)
            if problem:
                problems.append((f"{where}.{side}" if single else f"{where}.{side}[{k}]", problem))
                ok = False
            resolved.append(object_id)
        out[side] = resolved
    words = rel.get("relation")
    if "relation" not in rel:
        problems.append((f"{where}.relation", "required field is missing"))
        ok = False
    elif not isinstance(words, str) or not words.strip():
        problems.append((f"{where}.relation", "expected the relation words, such as 'on'"))
        ok = False
    return out if ok else None


def _acp_relations(
    raw: Any, names: _ObjectNames, problems: list[tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """``(relations, group keys)`` from an item's ``relations``: a list of groups
    ``{caption, relations: [...]}``, of flat relations, or both mixed. The group keys are None
    when no entry is a group; a relation of group ``g`` carries ``acp_group: g``."""
    if raw is None:
        return [], None
    if not isinstance(raw, list):
        problems.append(("relations", f"expected a list of {{caption, relations}} groups or of relations, got {type(raw).__name__}"))
        return [], None
    relations: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    for i, entry in enumerate(raw):
        if not (isinstance(entry, dict) and "relations" in entry):
            relation = _acp_relation(entry, f"relations[{i}]", names, problems)
            if relation is not None:
                relations.append(relation)
            continue
        groups.append({k: v for k, v in entry.items() if k != "relations"})
        members = entry["relations"]
        if not isinstance(members, list):
            problems.append((f"relations[{i}].relations", f"expected a list of relations, got {type(members).__name__}"))
            continue
        for j, rel in enumerate(members):
            relation = _acp_relation(rel, f"relations[{i}].relations[{j}]", names, problems)
            if relation is not None:
                relation[ACP_GROUP_KEY] = len(groups) - 1
                relations.append(relation)
    return relations, (groups or None)


def _acp_relations_out(layout: Layout) -> list[dict[str, Any]]:
    """``relations`` as the item had them: nested in groups where it had groups, else flat."""
    groups = _extra(layout).get(ACP_RELATION_GROUPS_KEY)
    if not (isinstance(groups, list) and all(isinstance(g, dict) for g in groups)):
        groups = []
    out: list[dict[str, Any]] = []
    members: list[list[dict[str, Any]]] = []

    def open_groups(upto: int) -> None:
        while len(members) <= upto:
            members.append([])
            out.append({**groups[len(members) - 1], "relations": members[-1]})

    for relation in layout.relations:
        data = relation.model_dump(exclude={ACP_GROUP_KEY})
        group = _extra(relation).get(ACP_GROUP_KEY)
        if isinstance(group, int) and not isinstance(group, bool) and 0 <= group < len(groups):
            open_groups(group)
            members[group].append(data)
        else:
            out.append(data)
    open_groups(len(groups) - 1)
    return out


def _group_matches(ref: Any, group_ids: list[Any]) -> bool:
    """A depth layer's group id names a group: exactly, else ignoring case and spaces."""
    if not _is_id(ref):
        return False
    return ref in group_ids or any(str(ref).strip().casefold() == str(g).strip().casefold() for g in group_ids)


def _acp_group_problems(item: dict[str, Any], names: _ObjectNames) -> list[tuple[str, str]]:
    """Names in ``groups`` that name no object, and depth layers naming unknown groups."""
    found: list[tuple[str, str]] = []
    group_ids: list[Any] = []
    groups = item.get("groups")
    if "groups" in item and not isinstance(groups, list):
        # Depth layers name groups: with no readable groups, checking them would only repeat this.
        return [("groups", f"expected a list of {{id, group: [names]}} items, got {type(groups).__name__}")]
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        if isinstance(group, dict):
            if "id" in group:
                group_ids.append(group["id"])
            if "group" not in group:
                found.append((f"groups[{i}].group", "required field is missing"))
                continue
            members, where = group["group"], f"groups[{i}].group"
        elif isinstance(group, list):
            members, where = group, f"groups[{i}]"
        else:
            found.append((f"groups[{i}]", f"expected an object {{id, group: [names]}}, got {type(group).__name__}"))
            continue
        if not isinstance(members, list):
            found.append((where, f"expected a list of object names, got {type(members).__name__}"))
            continue
        for j, ref in enumerate(members):
            _, problem = names.resolve(ref)
            if problem:
                found.append((f"{where}[{j}]", problem))
    if ACP_DEPTH_KEY not in item:
        return found
    layers = item[ACP_DEPTH_KEY]
    if not isinstance(layers, dict):
        return [*found, (ACP_DEPTH_KEY, f"expected {{layer: [group ids]}}, got {type(layers).__name__}")]
    known = ", ".join(repr(g) for g in group_ids) or "none"
    for layer, refs in layers.items():
        where = f"{ACP_DEPTH_KEY}.{layer}"
        if not isinstance(refs, list):
            found.append((where, f"expected a list of group ids, got {type(refs).__name__}"))
            continue
        for k, ref in enumerate(refs):
            if not _group_matches(ref, group_ids):
                found.append((f"{where}[{k}]", f"names unknown group {ref!r} (known groups: {known})"))
    return found


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
        found.append(("attributes", f"expected a list of {{name, attributes}} items, got {type(item['attributes']).__name__}"))
    return found


def _acp_convert(item: dict[str, Any], index: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A canonical layout record for an ACP item whose shape is sound (see ``_acp_problems``),
    and its name problems as ``(ACP field, message)``. References that do not resolve are left
    out of the record, so that validating it lists only its other problems."""
    problems: list[tuple[str, str]] = []
    names = _ObjectNames([entry["object"] for entry in item["layout"]])
    attributes = _acp_attribute_values(item.get("attributes"), names, problems)
    objects = []
    for entry in item["layout"]:
        name = entry["object"]
        extra = {k: v for k, v in entry.items() if k not in {"object", "bbox"}}
        objects.append(
            {"id": name, "label": label_from_object_name(name), "bbox": entry.get("bbox"),
             "attributes": attributes.get(name, []), **extra}
        )  # fmt: skip
    relations, groups = _acp_relations(item.get("relations"), names, problems)
    problems += _acp_group_problems(item, names)
    record: dict[str, Any] = {
        "id": str(item["id"]) if _is_id(item.get("id")) else str(index),
        "caption": item.get("caption", ""),
        "objects": objects,
        "relations": relations,
    }
    for key in ("width", "height", "images"):
        if key in item:
            record[key] = item[key]
    record.update({k: v for k, v in item.items() if k not in _ACP_FIELDS})
    absent = [key for key in ("id", "caption", "attributes", "relations") if key not in item]
    if absent:
        record[ACP_ABSENT_KEY] = absent
    if groups is not None:
        record[ACP_RELATION_GROUPS_KEY] = groups
    if "attributes" in item and not problems:
        values = [o.get("attributes") for o in objects]
        fresh = None  # an entry's own wrong ``attributes`` is named by validation
        if all(isinstance(v, list) and all(isinstance(a, str) for a in v) for v in values):
            fresh = [{"name": o["id"], "attributes": _join_attributes(v)} for o, v in zip(objects, values)]
        if item["attributes"] != fresh:
            record[ACP_ATTRIBUTES_KEY] = item["attributes"]
    return record, problems


def acp_item_to_record(item: dict[str, Any], index: int) -> dict[str, Any]:
    """Turn one ACP scene-graph item into a canonical layout record (not yet validated).

    Keys the canonical format does not know (groups, layers of depth, img_dir, ...) are kept
    on the layout. Names that do not resolve are left out (``validate_file`` reports them).
    """
    return _acp_convert(item, index)[0]


def _acp_records(path: str, items: list[Any]) -> list[Any]:
    records: list[Any] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            records.append(item)
            continue
        where = f"{path}: {_record_name(index, item)}"
        problems = _acp_problems(item)
        layout_id = str(item["id"]) if _is_id(item.get("id")) else (None if "id" in item else str(index))
        if problems:
            records.append(_Unconvertible([f"{where}: field {name}: {message}" for name, message in problems], layout_id))
            continue
        record, problems = _acp_convert(item, index)
        if problems:
            # One bad name invalidates its own layout only; the rest of the record is still
            # validated, so all of its problems are listed at once.
            lines = [f"{where}: field {name}: {message}" for name, message in problems]
            records.append(_Unconvertible(lines, layout_id, record))
        else:
            records.append(record)
    return records


def _acp_entry(obj: LayoutObject) -> dict[str, Any]:
    entry: dict[str, Any] = {"object": obj.id, "bbox": list(obj.bbox)}
    if obj.label != label_from_object_name(obj.id):
        entry["label"] = obj.label
    if obj.description is not None:
        entry["description"] = obj.description
    entry.update({k: v for k, v in _extra(obj).items() if k not in entry})
    return entry


def layout_to_acp(layout: Layout, index: int | None = None) -> dict[str, Any]:
    """One layout as an ACP scene-graph item (see the comment above ``ACP_ABSENT_KEY``).

    A layout read from ACP comes back as the item it was read from; a canonical layout is
    written in ACP's own shapes (``attributes: [{name, attributes: "a, b"}]``, flat relations)
    plus ``label``/``description`` on a ``layout`` entry where the name does not give them,
    so that reading the item back gives the same layout. ``index`` is the item's position in
    its file: an item read without an id (id = its index) is written without one there.
    """
    extra = _extra(layout)
    absent = extra.get(ACP_ABSENT_KEY)
    absent = set(absent) if isinstance(absent, list) else set()
    item: dict[str, Any] = {}
    if not ("id" in absent and layout.id == str(index)):
        item["id"] = layout.id
    if layout.caption or "caption" not in absent:
        item["caption"] = layout.caption
    item["layout"] = [_acp_entry(o) for o in layout.objects]
    own = {o.id: list(o.attributes) for o in layout.objects}
    if ACP_ATTRIBUTES_KEY in extra:
        check: list[tuple[str, str]] = []
        derived = _acp_attribute_values(extra[ACP_ATTRIBUTES_KEY], _ObjectNames(list(own)), check)
        if not check and {k: derived.get(k, []) for k in own} == own:
            item["attributes"] = extra[ACP_ATTRIBUTES_KEY]
    if "attributes" not in item and not ("attributes" in absent and not any(own.values())):
        item["attributes"] = _acp_attributes_out(list(layout.objects))
    relations = _acp_relations_out(layout)
    if relations or "relations" not in absent:
        item["relations"] = relations
    for key in ("width", "height", "images"):
        if getattr(layout, key) is not None:
            item[key] = getattr(layout, key)
    item.update({k: v for k, v in extra.items() if k not in _ACP_BOOKKEEPING and k not in item})
    return item


def layouts_to_acp(layouts: Iterable[Layout]) -> list[dict[str, Any]]:
    """Write layouts as ACP scene-graph items (``layout: [{object, bbox}]``), see ``layout_to_acp``."""
    return [layout_to_acp(layout, index) for index, layout in enumerate(layouts)]


# --- InstanceDiffusion input ------------------------------------------------------------
#
# The JSON InstanceDiffusion's inference script reads (ACP feeds it this):
#   {caption, width, height, annos: [{bbox: [x, y, w, h], caption, mask?, point?, scribble?}]}
# with boxes in units of width/height (ACP writes width = height = 1.0 and normalised boxes).
# A file holds one such item or a list of them. Reading:
#   - the layout id is ``clis_layout_id``, else the item's index in the file;
#   - an object's label is the anno's ``category_name``, else ``label``, else ``category``,
#     else the last word of its caption (letters and digits only, as written);
#   - its id is ``clis_object_id``, else the anno's ``id`` string, else ``<label>-<k>``, k
#     counting per label from 1;
#   - its description is the anno's caption, unless clis wrote the anno (``clis_object_id``):
#     then ``clis_description`` / ``clis_attributes`` give it back as it was;
#   - ``mask``, ``point``, ``scribble`` and unknown keys are kept on the object, unknown item
#     keys on the layout, and all of them are written back.
# Writing adds what InstanceDiffusion has no field for, unless ``clis_fields=False``:
#   item: clis_layout_id, clis_relations, clis_canvas ([width, height] of the layout),
#         clis_images; anno: clis_object_id, clis_attributes, clis_description;
#   clis_extra (item or anno): extra keys that would collide with these.

ID_ANNO_KEYS = ("mask", "point", "scribble")  # optional per-anno location inputs
_ID_ITEM_OWN = frozenset({"caption", "width", "height", "annos", "clis_layout_id", "clis_relations", "clis_canvas", "clis_images", "clis_extra"})
_ID_ANNO_OWN = frozenset({"bbox", "caption", "category_name", "clis_object_id", "clis_attributes", "clis_description", "clis_extra"})
_LAST_WORD = re.compile(r"([^\W_]+)\W*$")


def _id_label(anno: dict[str, Any]) -> str | None:
    for key in ("category_name", "label", "category"):
        if isinstance(anno.get(key), str) and anno[key].strip():
            return anno[key]
    caption = anno.get("caption")
    match = _LAST_WORD.search(caption) if isinstance(caption, str) else None
    return match.group(1) if match else None


def _id_size(item: dict[str, Any], problems: list[tuple[str, str]]) -> tuple[float, float]:
    size = []
    for key in ("width", "height"):
        value = item.get(key, 1.0)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
            problems.append((key, f"expected a positive number (1.0 for normalised boxes), got {value!r}"))
            value = 1.0
        size.append(float(value))
    return size[0], size[1]


def _id_object(
    anno: Any, where: str, size: tuple[float, float], problems: list[tuple[str, str]], counters: Counter[str]
) -> dict[str, Any] | None:
    if not isinstance(anno, dict):
        problems.append((where, f"expected an object {{bbox, caption}}, got {type(anno).__name__}"))
        return None
    before = len(problems)
    box = anno.get("bbox")
    if "bbox" not in anno:
        problems.append((f"{where}.bbox", "required field is missing"))
    elif not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        problems.append((f"{where}.bbox", "expected [x, y, w, h] numbers"))
    else:
        width, height = size
        box = [box[0] / width, box[1] / height, box[2] / width, box[3] / height]
        try:
            check_box(box)
        except ValueError as exc:
            problems.append((f"{where}.bbox", str(exc)))
    if "caption" in anno and not isinstance(anno["caption"], str):
        problems.append((f"{where}.caption", f"expected a string, got {type(anno['caption']).__name__}"))
    label = _id_label(anno)
    if label is None:
        problems.append((f"{where}.category_name", "no label: give category_name, or a caption whose last word is one"))
    by_clis = "clis_object_id" in anno
    if by_clis and not (isinstance(anno["clis_object_id"], str) and anno["clis_object_id"]):
        problems.append((f"{where}.clis_object_id", "expected an object id string"))
    if len(problems) > before:
        return None
    counters[label] += 1
    own_id = anno.get("id") if isinstance(anno.get("id"), str) and anno["id"].strip() else None
    obj: dict[str, Any] = {
        "id": anno["clis_object_id"] if by_clis else own_id or f"{label}-{counters[label]}",
        "label": label,
        "bbox": box,
    }
    if by_clis:
        for key in ("attributes", "description"):
            if f"clis_{key}" in anno:
                obj[key] = anno[f"clis_{key}"]
    elif "caption" in anno:
        obj["description"] = anno["caption"]
    # mask, point, scribble and unknown keys stay on the object (``label`` is a field).
    obj.update({k: v for k, v in anno.items() if k not in _ID_ANNO_OWN and k not in LayoutObject.model_fields})
    extra = anno.get("clis_extra", {})
    if isinstance(extra, dict):
        obj.update({k: v for k, v in extra.items() if k not in LayoutObject.model_fields})
    return obj


def _id_record(item: dict[str, Any], index: int) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    size = _id_size(item, problems)
    annos = item.get("annos")
    if not isinstance(annos, list):
        problems.append(("annos", "required field is missing" if "annos" not in item else f"expected a list of {{bbox, caption}} items, got {type(annos).__name__}"))
        return None, problems
    if not annos:
        problems.append(("annos", "a layout needs at least one anno"))
    if "caption" in item and not isinstance(item["caption"], str):
        problems.append(("caption", f"expected a string, got {type(item['caption']).__name__}"))
    counters: Counter[str] = Counter()
    objects = [_id_object(anno, f"annos[{i}]", size, problems, counters) for i, anno in enumerate(annos)]
    if problems:
        return None, problems
    layout_id = item.get("clis_layout_id", str(index))
    record: dict[str, Any] = {"id": str(layout_id) if _is_id(layout_id) else layout_id, "caption": item.get("caption", ""), "objects": objects}
    if "clis_relations" in item:
        record["relations"] = item["clis_relations"]
    canvas = item.get("clis_canvas")
    if isinstance(canvas, list) and len(canvas) == 2:
        record.update({k: v for k, v in zip(("width", "height"), canvas) if v is not None})
    elif all(float(v).is_integer() and v > 1 for v in size):
        record["width"], record["height"] = int(size[0]), int(size[1])  # a pixel canvas
    if "clis_images" in item:
        record["images"] = item["clis_images"]
    record.update({k: v for k, v in item.items() if k not in _ID_ITEM_OWN})
    extra = item.get("clis_extra", {})
    if isinstance(extra, dict):
        record.update({k: v for k, v in extra.items() if k not in Layout.model_fields})
    return record, problems


def _converted_records(path: str, items: list[Any], convert, id_key: str) -> list[Any]:
    """The canonical records of another format's ``items``: ``convert(item, index)`` gives a
    record, or the (field, problem) pairs that make the item an invalid layout, named by the
    item's ``id_key`` (else its index). Items that are not objects pass through to validation."""
    records: list[Any] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            records.append(item)
            continue
        record, problems = convert(item, index)
        if problems:
            layout_id = item.get(id_key, str(index))
            where = f"{path}: {_record_name(index, {'id': item.get(id_key)})}"
            records.append(_Unconvertible([f"{where}: field {name}: {message}" for name, message in problems],
                                          str(layout_id) if _is_id(layout_id) else None))
        else:
            records.append(record)
    return records


def _instancediffusion_records(path: str, items: list[Any]) -> list[Any]:
    return _converted_records(path, items, _id_record, "clis_layout_id")


def _nsr_records(path: str, items: list[Any]) -> list[Any]:
    return _converted_records(path, items, nsr_record, "id")


def _inline_extra(target: dict[str, Any], extra: dict[str, Any], own: frozenset[str]) -> None:
    """Extra keys go on ``target`` as they are; those that would collide go under ``clis_extra``."""
    colliding = {k: v for k, v in extra.items() if k in own or k in target}
    target.update({k: v for k, v in extra.items() if k not in colliding})
    if colliding:
        target["clis_extra"] = colliding


def layout_to_instancediffusion(
    layout: Layout, size: tuple[float, float] | None = None, clis_fields: bool = True
) -> dict[str, Any]:
    """One layout as an InstanceDiffusion input item (see the comment above ``ID_ANNO_KEYS``).

    Boxes are normalised with ``width = height = 1.0`` (as ACP writes them) unless ``size``
    gives a ``(width, height)`` canvas to write them in. Each anno's caption is the object's
    phrase and ``category_name`` its label. ``clis_fields=False`` writes only what
    InstanceDiffusion reads (plus ``category_name``): the ids, relations, attributes and extra
    keys are then not written.

    >>> layout = Layout.model_validate({"id": "t", "caption": "a red cup", "objects": [
    ...     {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.25, 0.5, 0.5, 0.25]}]})
    >>> layout_to_instancediffusion(layout, clis_fields=False)
    {'caption': 'a red cup', 'width': 1.0, 'height': 1.0, 'annos': [{'bbox': [0.25, 0.5, 0.5, 0.25], 'caption': 'red cup', 'category_name': 'cup'}]}
    """
    width, height = size or (1.0, 1.0)
    annos = []
    for obj in layout.objects:
        box = list(obj.bbox) if size is None else [v * s for v, s in zip(obj.bbox, (width, height, width, height))]
        anno: dict[str, Any] = {"bbox": box, "caption": obj.phrase, "category_name": obj.label}
        extra = _extra(obj)
        anno.update({k: extra[k] for k in ID_ANNO_KEYS if k in extra})
        if clis_fields:
            anno["clis_object_id"] = obj.id
            if obj.attributes:
                anno["clis_attributes"] = list(obj.attributes)
            if obj.description is not None:
                anno["clis_description"] = obj.description
            _inline_extra(anno, {k: v for k, v in extra.items() if k not in ID_ANNO_KEYS}, _ID_ANNO_OWN)
        annos.append(anno)
    item: dict[str, Any] = {"caption": layout.caption, "width": width, "height": height, "annos": annos}
    if clis_fields:
        item["clis_layout_id"] = layout.id
        if layout.relations:
            item["clis_relations"] = [r.model_dump() for r in layout.relations]
        if layout.width is not None or layout.height is not None or size is not None:
            item["clis_canvas"] = [layout.width, layout.height]
        if layout.images is not None:
            item["clis_images"] = list(layout.images)
        _inline_extra(item, _extra(layout), _ID_ITEM_OWN)
    return item


def layouts_to_instancediffusion(layouts: Iterable[Layout], clis_fields: bool = True) -> list[dict[str, Any]]:
    """Write layouts as a list of InstanceDiffusion input items, see ``layout_to_instancediffusion``."""
    return [layout_to_instancediffusion(layout, clis_fields=clis_fields) for layout in layouts]


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
    layout_id = _coco_layout_id(image)
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


def _coco_layout_id(image: dict[str, Any]) -> str:
    """The layout id of a COCO image: the id clis wrote, else its file's stem, else its id."""
    file_name = image.get("file_name")
    stem = Path(file_name).stem if isinstance(file_name, str) and file_name else None
    return str(image.get("clis_layout_id") or stem or image["id"])


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
        before = len(report.problems)
        record = _coco_image_record(index, image, annotations, categories, source, report)
        if len(report.problems) > before:
            # This image's own problems make it an invalid layout, not a broken file.
            problems = report.problems[before:]
            del report.problems[before:]
            records.append(_Unconvertible(problems, _coco_layout_id(image), record))
        elif record is not None:
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
    if detected == "acp":
        return _acp_records(str(path), items)
    if detected == "instancediffusion":
        return _instancediffusion_records(str(path), items)
    if detected == "nsr":
        return _nsr_records(str(path), items)
    return items


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
            f"{path}: top level: not a layouts file (expected a list of layouts, an ACP scene graph, COCO instances JSON, InstanceDiffusion input or NSR-1K records)"
        )
        return report
    report.format = detected
    _validate_records(str(path), _records(path, data, detected, report), report)
    return report


def read_layouts(path: str | Path, format: str = "auto", strict: bool = False) -> ValidationReport:
    """Load a layouts file for a run over every valid layout.

    Returns the report: ``layouts`` holds the valid layouts, ``invalid`` the records that
    failed, each with its problems, for the caller to turn into error records. Raises
    ``LayoutFileError`` when the file as a whole is unusable (unreadable, not a layouts file),
    when no layout is valid, or, with ``strict``, when any layout is invalid.
    """
    report = validate_file(path, format=format)
    if report.problems and (strict or report.file_problems or not report.layouts):
        raise LayoutFileError(str(path), report.problems)
    _log_warnings(report)
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
    """Write layouts as canonical JSON (default), ``acp``, ``coco`` or ``instancediffusion``,
    atomically: an interrupted write (``clis plan`` saves after every layout) leaves the
    previous complete file."""
    layouts = list(layouts)
    if format == "canonical":
        data: Any = [layout_to_record(layout) for layout in layouts]
    elif format == "acp":
        data = layouts_to_acp(layouts)
    elif format == "coco":
        data = layouts_to_coco(layouts)
    elif format == "instancediffusion":
        data = layouts_to_instancediffusion(layouts)
    elif format == "nsr":
        raise ValueError("NSR-1K is read, not written: save as canonical, acp, coco or instancediffusion")
    else:
        raise ValueError(f"unknown layout format {format!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def boxes_close(a: Iterable[float], b: Iterable[float], tol: float = 1e-9) -> bool:
    """True when two boxes agree to ``tol``; pixel round trips differ by float rounding only."""
    return all(math.isclose(x, y, rel_tol=0, abs_tol=tol) for x, y in zip(a, b))

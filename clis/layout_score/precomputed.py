"""CLIS-L read from a ``clis score-layouts`` file instead of computed: ``clis score --layout-scores``.

:class:`PrecomputedLayoutScores` answers ``score_layouts`` and ``manifest`` as
:class:`~clis.layout_score.scorer.LayoutScorer` does, so the image scorer uses it through the
same seam and never loads the LLM. It is strict, because a score that silently belongs to
other settings or to another version of a layout would corrupt every ``clis`` value:

* the file's manifest (``<file>.manifest.json``, written by ``clis score-layouts``) must have
  the CLIS-L settings this run asks for, else one InputError names the first differing field;
* every scored layout must have a successful line whose ``layout_key`` matches the layout as
  it is now (same objects, boxes and relations), else one InputError names the layout.

Example:
    >>> import json, tempfile, pathlib
    >>> from clis.layout import Layout
    >>> from clis.layout_score import LayoutScoreConfig
    >>> from clis.layout_score.cache import layout_key
    >>> layout = Layout.model_validate({"id": "tea", "objects": [
    ...     {"id": "cup-1", "label": "cup", "bbox": [0.4, 0.3, 0.2, 0.2]}]})
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> settings = LayoutScoreConfig(llm="embedded:smollm2").model_dump(mode="json")
    >>> _ = (folder / "l.jsonl.manifest.json").write_text(json.dumps({"id": "m1", "settings": settings}))
    >>> _ = (folder / "l.jsonl").write_text(json.dumps({"id": "tea", "clis_l": 50.0, "llm": 50.0, "geometry": None,
    ...     "error": None, "layout_key": layout_key(layout)}) + "\\n")
    >>> scores = PrecomputedLayoutScores(folder / "l.jsonl", LayoutScoreConfig(llm="embedded:smollm2"))
    >>> result = scores.score_layouts([layout])[0]
    >>> result.clis_l, scores.manifest()["id"]
    (50.0, 'm1')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from clis.errors import InputError
from clis.files import read_manifest
from clis.layout import Layout
from clis.layout_score.cache import layout_key
from clis.layout_score.scorer import LayoutScore, LayoutScoreConfig

# Keys `clis score-layouts` adds to the scorer's manifest: they say where the run wrote, not
# what it computed, so they are not part of the manifest a score run records.
_RUN_KEYS = ("layouts", "output")
# Settings that decide where or how fast CLIS-L runs, not its values.
_RUN_ONLY = ("device", "batch_size")


def _differences(then: Any, now: Any, where: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(then, dict) and isinstance(now, dict):
        found = []
        for key in dict.fromkeys([*then, *now]):
            found += _differences(then.get(key), now.get(key), f"{where}.{key}" if where else str(key))
        return found
    return [] if then == now else [(where, then, now)]


def layout_score_record(line: str | bytes) -> Optional[dict]:
    """The ``clis score-layouts`` record on one JSONL line, or None when the line is not one
    (not JSON, not an object, no string ``id``, or no ``clis_l`` that is a finite number or null).

    >>> layout_score_record('{"id": "tea", "clis_l": 61.5}')["clis_l"], layout_score_record('[1]')
    (61.5, None)
    """
    from clis import jsonio

    try:
        record = jsonio.loads(line)  # NaN, 1e309 and 100k-deep lines are not records either
    except ValueError:
        return None
    if not (isinstance(record, dict) and isinstance(record.get("id"), str) and "clis_l" in record):
        return None
    score = record["clis_l"]
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        return None
    return record


class PrecomputedLayoutScores:
    """CLIS-L per layout from a ``clis score-layouts`` JSONL file, checked against ``config``."""

    def __init__(self, path: str | Path, config: LayoutScoreConfig):
        self.path = Path(path)
        self.config = config
        manifest_file = self.path.with_name(self.path.name + ".manifest.json")
        hint = "run `clis score-layouts` with these settings, or drop --layout-scores"
        manifest = read_manifest(manifest_file, f"the CLIS-L settings of {self.path}", hint)
        if not isinstance(manifest.get("settings"), dict):
            raise InputError(f"{manifest_file}: not a clis score-layouts manifest (no settings); {hint}")
        then = {k: v for k, v in manifest["settings"].items() if k not in _RUN_ONLY}
        now = {k: v for k, v in config.model_dump(mode="json").items() if k not in _RUN_ONLY}
        changes = _differences(then, now)
        if changes:
            field, old, new = changes[0]
            raise InputError(
                f"{self.path}: made with other CLIS-L settings: {field} is {json.dumps(old)} there and "
                f"{json.dumps(new)} here; {hint}"
            )
        self._manifest = {k: v for k, v in manifest.items() if k not in _RUN_KEYS}
        self._records = self._read()

    def _read(self) -> dict[str, dict]:
        from clis import jsonio

        records: dict[str, dict] = {}
        if not self.path.exists():
            raise InputError(f"{self.path}: layout scores file not found")
        lines = jsonio.read_text(self.path, "layout scores file").splitlines()  # never a FIFO or /dev/zero
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = layout_score_record(line)
            if record is None:
                raise InputError(f"{self.path}: line {number}: not a clis score-layouts record")
            manifest = record.get("manifest")
            if manifest is not None and not isinstance(manifest, dict):
                raise InputError(f"{self.path}: line {number}: field manifest: not a JSON object or null")
            if manifest and manifest.get("id") not in (None, self._manifest.get("id")):
                raise InputError(f"{self.path}: line {number}: field manifest.id: the line was made by another "
                                 f"CLIS-L run than the file's manifest ({self._manifest.get('id')!r})")
            if record.get("error") is None:
                records[record["id"]] = record
        return records

    def manifest(self) -> dict:
        """The manifest of the run that computed the scores (models, settings, prompts, ``id``)."""
        return dict(self._manifest)

    def score_layouts(self, layouts: Sequence[Layout],
                      progress: Optional[Callable[[str, int, int], None]] = None) -> list[LayoutScore]:
        """The stored CLIS-L of each layout; InputError when one has no line for its current version."""
        results = []
        for i, layout in enumerate(layouts):
            record = self._records.get(layout.id)
            if record is None:
                raise InputError(f"{self.path}: no successful CLIS-L line for layout {layout.id!r}; run "
                                 "`clis score-layouts` on this layouts file, or drop --layout-scores")
            if record.get("layout_key") != layout_key(layout):
                raise InputError(f"{self.path}: layout {layout.id!r}: field layout_key: the line was scored from "
                                 "another version of this layout (objects, boxes or relations differ); run "
                                 "`clis score-layouts` again, or drop --layout-scores")
            results.append(LayoutScore(
                layout.id, record.get("clis_l"), llm=record.get("llm"), geometry=record.get("geometry"),
                pairs=list(record.get("pairs") or []), unknown_pairs=int(record.get("unknown_pairs") or 0),
                notes=list(record.get("notes") or []), manifest_id=self._manifest.get("id"),
            ))
            if progress is not None:
                progress("layouts", i + 1, len(layouts))
        return results

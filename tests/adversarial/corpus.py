"""A shared corpus of broken inputs, built in code into a tmp folder (no binary fixtures).

Every file a ``clis`` command reads has a *kind* (a layouts file, a scores JSONL, a settings
file, a CSV, ...). A kind has a valid document, written with the token ``@NUM@`` where one
number sits, so that one case can put ``NaN`` or a 5,000-digit integer exactly where a real
number belongs, inside a file that is otherwise fine. A *case* is one way of breaking a file
of a given kind; each has a short name that becomes part of a test id:

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> path = build("nan", "layouts", folder)
>>> "NaN" in path.read_text()
True
>>> sorted(cases_for("folder"))[:3]
['dev_zero', 'fifo', 'file_not_folder']

``write_baseline`` writes a set of valid inputs (layouts, candidate images, scores, settings,
CSVs, a pool, a result file) that every command accepts, so that in a sweep the broken file is
the only reason for a command to refuse.
"""

from __future__ import annotations

import functools
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# --- kinds ----------------------------------------------------------------------------------

NUM = "@NUM@"


@dataclass(frozen=True)
class Kind:
    """One kind of input file: how it is stored and a valid document with one ``@NUM@``."""

    name: str
    form: str  # json, jsonl, csv or folder
    suffix: str
    template: str = ""
    # The top-level JSON value the kind holds (json form): "list" or "object".
    top: str = "object"
    # What ``@NUM@`` stands for in the valid document.
    number: str = "0.4"
    # Fills in what the template cannot hold as a constant (the layout keys of layout scores).
    finish: Callable[[str], str] | None = None

    @property
    def valid(self) -> str:
        return self.with_number(self.number)

    def with_number(self, text: str) -> str:
        document = self.template.replace(NUM, text)
        return self.finish(document) if self.finish else document

    @property
    def has_number(self) -> bool:
        return NUM in self.template


LABELS = (("cup", "table"), ("cat", "sofa"), ("dog", "chair"), ("bird", "tree"))
LAYOUT_IDS = tuple(f"s{i}" for i in range(len(LABELS)))
CANDIDATES_PER_LAYOUT = 2


def _layout(index: int, x: str = "0.4", layout_id: str | None = None, label: str | None = None) -> str:
    a, b = LABELS[index]
    a = label or a
    return (
        f'{{"id": {json.dumps(layout_id or LAYOUT_IDS[index])}, "caption": {json.dumps(f"a {a} on a {b}")}, '
        f'"width": 64, "height": 64, "objects": ['
        f'{{"id": "{LABELS[index][0]}-1", "label": {json.dumps(a)}, "bbox": [{x}, 0.3, 0.2, 0.2]}}, '
        f'{{"id": "{b}-1", "label": "{b}", "bbox": [0.1, 0.5, 0.8, 0.5]}}], '
        f'"relations": [{{"subject": ["{LABELS[index][0]}-1"], "relation": "on", "object": ["{b}-1"]}}]}}'
    )


def _layouts_template() -> str:
    return "[\n" + ",\n".join(_layout(i, NUM if i == 0 else "0.4") for i in range(len(LABELS))) + "\n]\n"


def candidate_images() -> list[str]:
    """The candidate images of the baseline, relative to its folder, in scores-file order."""
    return [f"images/{layout_id}/{k}.png" for layout_id in LAYOUT_IDS for k in range(CANDIDATES_PER_LAYOUT)]


def _score_record(layout_id: str, image: str, clis: str, k: int) -> str:
    a, b = LABELS[LAYOUT_IDS.index(layout_id)]
    instances = [
        {"object_id": f"{a}-1", "label": a, "phrase": a, "bbox": [0.4, 0.3, 0.2, 0.2], "region": 20.0 + k,
         "grounding": 50.0, "detection": None, "score": 70.0 + k},
        {"object_id": f"{b}-1", "label": b, "phrase": b, "bbox": [0.1, 0.5, 0.8, 0.5], "region": 30.0,
         "grounding": 40.0 + k, "detection": None, "score": 65.0 - k},
    ]
    body = json.dumps({"layout_id": layout_id, "image": image, "clis": 0, "clis_i": 60.0 + k, "clis_l": None,
                       "global": 25.0 + k, "instances": instances, "error": None})
    return body.replace('"clis": 0,', f'"clis": {clis},', 1)


def _scores_template() -> str:
    lines = []
    for n, image in enumerate(candidate_images()):
        layout_id = image.split("/")[1]
        clis = NUM if n == 0 else str(55.0 + 3 * n)
        lines.append(_score_record(layout_id, image, clis, n % CANDIDATES_PER_LAYOUT))
    return "\n".join(lines) + "\n"


def _layout_scores_template() -> str:
    # The layout_key fields are filled in by write_baseline (they hash each layout as it is).
    return "\n".join(
        f'{{"id": "{layout_id}", "clis_l": {NUM if i == 0 else 60.0 + i}, "llm": null, "geometry": null, '
        f'"error": null, "layout_key": "@KEY{i}@"}}'
        for i, layout_id in enumerate(LAYOUT_IDS)
    ) + "\n"


def _pool_template() -> str:
    header = '{"clis_pool": 2, "sources": ["layouts.json"], "examples": 2, "scenes": 2}'
    scenes = [
        '{"scene": [["cup", [0.4, 0.3, 0.2, 0.2]], ["table", [0.1, 0.5, 0.8, 0.5]]], "source": "layout:s0"}',
        '{"scene": [["cat", [0.4, 0.3, 0.2, 0.2]], ["sofa", [0.1, 0.5, 0.8, 0.5]]], "source": "layout:s1"}',
    ]
    examples = [
        f'{{"subject": "cup", "relation": "on", "object": "table", "subject_box": [{NUM}, 19.2, 12.8, 12.8], '
        '"object_box": [6.4, 32.0, 51.2, 32.0], "source": "layout:s0"}',
        '{"subject": "cat", "relation": "on", "object": "sofa", "subject_box": [25.6, 19.2, 12.8, 12.8], '
        '"object_box": [6.4, 32.0, 51.2, 32.0], "source": "layout:s1"}',
    ]
    return "\n".join([header, *scenes, *examples]) + "\n"


def _result_template() -> str:
    return json.dumps({
        "schema": "clis.bench/1", "study": "compare", "clis_version": "0.1.0",
        "created": "2026-01-01T00:00:00+00:00", "inputs": [], "models": {}, "settings": {},
        "metrics": [{"key": "clis_mean", "label": "CLIS (mean)", "description": "mean CLIS over candidates",
                     "higher_is_better": True}],
        "rows": [{"name": "gen", "n_images": 8, "n_layouts": 4, "n_failed": 0,
                  "values": {"clis_mean": {"value": 1.5, "ci_low": 1.0, "ci_high": 2.0}}}],
        "tables": {}, "figures": [], "scorer": None,
    }, indent=1).replace('"value": 1.5', f'"value": {NUM}') + "\n"


def _targets_template() -> str:
    rows = [f"{image},{NUM if n == 0 else round(1.5 * n % 7, 2)}" for n, image in enumerate(candidate_images())]
    return "image,target\n" + "\n".join(rows) + "\n"


def _preferences_template() -> str:
    images = candidate_images()
    # No numeric column: the number cases do not apply to preferences.
    rows = [f"{images[n]},{images[n + 1]},{'a' if n % 4 else 'b'}" for n in range(0, len(images), 2)]
    return "image_a,image_b,chosen\n" + "\n".join(rows) + "\n"


def _labels_template() -> str:
    """Alice's labels of the first candidate of each layout: yes for the object scoring 70,
    no for the one scoring 65, so a threshold reaches any precision (clis bench calibrate)."""
    time = "2026-01-01T00:00:00Z"
    objects, layouts = [], []
    for layout_id, (a, b) in zip(LAYOUT_IDS, LABELS):
        image = f"images/{layout_id}/0.png"
        objects += [{"annotator": "alice", "layout_id": layout_id, "image": image, "object_id": f"{obj}-1",
                     "label": label, "time": time} for obj, label in ((a, "yes"), (b, "no"))]
        layouts.append({"annotator": "alice", "layout_id": layout_id, "best": image, "plausible": "yes", "time": time})
    # No number: the number cases do not apply to labels.
    return json.dumps({"format": "clis.labels/1", "site": {"id": "corpus-site"}, "annotators": ["alice"],
                       "exported": time, "objects": objects, "layouts": layouts}, indent=1) + "\n"


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("layouts", "json", ".json", _layouts_template(), top="list"),
    Kind("scores", "jsonl", ".jsonl", _scores_template(), number="52.0"),
    Kind("layout_scores", "jsonl", ".jsonl", _layout_scores_template(), number="60.0",
         finish=lambda text: fill_layout_keys(text)),
    Kind("score_config", "json", ".json", '{"crop_margin": @NUM@, "batch_size": 4}\n', number="0.1"),
    # No LLM and exact label matching: a run that accepts the settings loads no model.
    Kind("layout_config", "json", ".json", '{"llm": "none", "text_embedder": "none", "percentile": @NUM@}\n',
         number="98"),
    Kind("concepts", "json", ".json", '[{"concepts": ["cup", "table"], "count": @NUM@}]\n', top="list", number="1"),
    Kind("result", "json", ".json", _result_template(), number="1.5"),
    Kind("leaderboard_config", "json", ".json",
         '{"title": "board", "metrics": ["clis_mean"], "decimals": @NUM@}\n', number="2"),
    Kind("pool", "jsonl", ".jsonl", _pool_template(), number="25.6"),
    Kind("targets", "csv", ".csv", _targets_template(), number="0.5"),
    Kind("preferences", "csv", ".csv", _preferences_template(), number="1"),
    Kind("downstream", "csv", ".csv", "lo,hi,ap\n70,75,@NUM@\n75,80,22.3\n80,85,25.0\n", number="20.1"),
    Kind("labels", "json", ".json", _labels_template()),
    Kind("folder", "folder", ""),
)}


# --- cases ----------------------------------------------------------------------------------

FILE_FORMS = frozenset({"json", "jsonl", "csv"})
JSON_FORMS = frozenset({"json", "jsonl"})


@dataclass(frozen=True)
class Case:
    """One broken input: ``make(folder, kind)`` writes it and returns its path."""

    name: str
    forms: frozenset[str]
    make: Callable[[Path, Kind], Path]
    kinds: frozenset[str] | None = None  # only for these kinds (else every kind of ``forms``)
    # The case replaces the kind's number: it needs a kind whose template has one.
    numeric: bool = False
    # Only one record of the file is broken; the others are valid. Commands that score every
    # valid layout must make it an error record, not refuse the file, unless given --strict.
    one_record: bool = False

    def applies(self, kind: Kind) -> bool:
        if kind.form not in self.forms or (self.kinds is not None and kind.name not in self.kinds):
            return False
        return kind.has_number or not self.numeric


def _file(content: bytes | str | Callable[[Kind], bytes | str]) -> Callable[[Path, Kind], Path]:
    def make(folder: Path, kind: Kind) -> Path:
        data = content(kind) if callable(content) else content
        path = folder / f"input{kind.suffix}"
        if isinstance(data, str):
            data = data.encode("utf-8")
        path.write_bytes(data)
        return path

    return make


def _missing(folder: Path, kind: Kind) -> Path:
    return folder / f"missing{kind.suffix}"


def _folder(folder: Path, kind: Kind) -> Path:
    path = folder / f"a-folder{kind.suffix}"
    path.mkdir()
    return path


def _regular_file(folder: Path, kind: Kind) -> Path:
    path = folder / "not-a-folder.json"
    path.write_text(KINDS["layouts"].valid, encoding="utf-8")
    return path


def _fifo(folder: Path, kind: Kind) -> Path:
    path = folder / f"fifo{kind.suffix}"
    os.mkfifo(path)
    return path


def _symlink_loop(folder: Path, kind: Kind) -> Path:
    path, other = folder / f"loop{kind.suffix}", folder / f"loop-back{kind.suffix}"
    path.symlink_to(other.name)
    other.symlink_to(path.name)
    return path


def _dev_zero(folder: Path, kind: Kind) -> Path:
    return Path("/dev/zero")


def _random_bytes(kind: Kind) -> bytes:
    return random.Random(12).randbytes(4096)


def _invalid_utf8(kind: Kind) -> bytes:
    # A Latin-1 "é" (0xe9) where UTF-8 needs two bytes, in a file that is otherwise valid.
    text = kind.valid
    if kind.form == "csv":
        header, _, rest = text.partition("\n")
        return (header + "\ncaf\xe9" + rest).encode("latin-1")
    return text.replace('"', '"caf\xe9', 1).encode("latin-1")


def _truncated(kind: Kind) -> str:
    text = kind.valid
    return text[: len(text) // 2]


def _deep(kind: Kind) -> str:
    depth = 100_000
    return "[" * depth + "]" * depth + "\n"


def _top_level(value: str) -> Callable[[Kind], str]:
    # On a JSONL kind the value is the first line, followed by the valid lines.
    def content(kind: Kind) -> str:
        if kind.form == "jsonl":
            return value + "\n" + kind.valid
        return value + "\n"

    return content


def _wrong_container(kind: Kind) -> str:
    """An array where the kind holds an object, an object where it holds a list."""
    value = '{"x": 1}' if kind.top == "list" else "[1, 2, 3]"
    return _top_level(value)(kind)


def _duplicate_layout_ids(kind: Kind) -> str:
    return "[\n" + _layout(0) + ",\n" + _layout(1, layout_id=LAYOUT_IDS[0]) + "\n]\n"


def _tiny_box(kind: Kind) -> str:
    return "[\n" + _layout(0).replace("[0.4, 0.3, 0.2, 0.2]", "[0.4, 0.3, 5e-324, 5e-324]") + "\n]\n"


def _long_id(kind: Kind) -> str:
    return "[\n" + _layout(0, layout_id="x" * 300) + "\n]\n"


def _duplicate_image(kind: Kind) -> str:
    lines = kind.valid.splitlines()
    return "\n".join([*lines, lines[0]]) + "\n"


def _score_as_text(kind: Kind) -> str:
    return kind.with_number('"high"')


def _scores_without_image(kind: Kind) -> str:
    lines = kind.valid.splitlines()
    record = json.loads(lines[0])
    del record["image"]
    return "\n".join([json.dumps(record), *lines[1:]]) + "\n"


def _unknown_setting(kind: Kind) -> str:
    return '{"no_such_setting": 1}\n'


def _unknown_schema(kind: Kind) -> str:
    return kind.valid.replace('"clis.bench/1"', '"clis.bench/99"')


def _header_only(kind: Kind) -> str:
    return kind.valid.partition("\n")[0] + "\n"


def _text_in_number_column(kind: Kind) -> str:
    return kind.with_number("high")


def _empty_concepts(kind: Kind) -> str:
    return "[]\n"


CASES: tuple[Case, ...] = (
    # What any file can be.
    Case("missing", FILE_FORMS, _missing),
    Case("empty", FILE_FORMS, _file(b"")),
    Case("one_byte", FILE_FORMS, _file(b"x")),
    Case("png_header_and_zeros", FILE_FORMS, _file(b"\x89PNG\r\n\x1a\n" + bytes(2048))),
    Case("random_bytes", FILE_FORMS, _file(_random_bytes)),
    Case("invalid_utf8", FILE_FORMS, _file(_invalid_utf8)),
    Case("utf16_with_bom", FILE_FORMS, _file(lambda kind: kind.valid.encode("utf-16"))),
    Case("folder_not_file", FILE_FORMS, _folder),
    Case("dev_zero", FILE_FORMS | {"folder"}, _dev_zero),
    Case("fifo", FILE_FORMS | {"folder"}, _fifo),
    Case("symlink_loop", FILE_FORMS | {"folder"}, _symlink_loop),
    # JSON that json.loads accepts, or nearly.
    Case("truncated_json", JSON_FORMS, _file(_truncated)),
    Case("nested_100k_deep", JSON_FORMS, _file(_deep)),
    Case("int_5000_digits", FILE_FORMS, _file(lambda kind: kind.with_number("9" * 5000)), numeric=True),
    Case("nan", JSON_FORMS, _file(lambda kind: kind.with_number("NaN")), numeric=True),
    Case("infinity", JSON_FORMS, _file(lambda kind: kind.with_number("-Infinity")), numeric=True),
    Case("float_1e309", FILE_FORMS, _file(lambda kind: kind.with_number("1e309")), numeric=True),
    Case("inf_cell", frozenset({"csv"}), _file(lambda kind: kind.with_number("inf")), numeric=True),
    Case("json_scalar", JSON_FORMS, _file(_top_level("42"))),
    Case("wrong_container", JSON_FORMS, _file(_wrong_container)),
    # Kind-specific content.
    Case("duplicate_layout_ids", JSON_FORMS, _file(_duplicate_layout_ids), frozenset({"layouts"}), one_record=True),
    Case("box_5e-324", JSON_FORMS, _file(_tiny_box), frozenset({"layouts"})),
    Case("layout_id_300_chars", JSON_FORMS, _file(_long_id), frozenset({"layouts"})),
    Case("one_image_twice", JSON_FORMS, _file(_duplicate_image), frozenset({"scores"})),
    Case("score_as_text", JSON_FORMS, _file(_score_as_text), frozenset({"scores", "layout_scores"}), numeric=True),
    Case("record_without_image", JSON_FORMS, _file(_scores_without_image), frozenset({"scores"})),
    Case("unknown_setting", JSON_FORMS, _file(_unknown_setting),
         frozenset({"score_config", "layout_config", "leaderboard_config"})),
    Case("unknown_schema", JSON_FORMS, _file(_unknown_schema), frozenset({"result"})),
    Case("no_concept_sets", JSON_FORMS, _file(_empty_concepts), frozenset({"concepts"})),
    Case("header_only", frozenset({"csv"}), _file(_header_only)),
    Case("text_in_number_column", frozenset({"csv"}), _file(_text_in_number_column), numeric=True),
    # A folder where a folder is expected is fine; these are what it must not be.
    Case("missing", frozenset({"folder"}), lambda folder, kind: folder / "no-such-folder"),
    Case("file_not_folder", frozenset({"folder"}), _regular_file),
)

# Cases whose path can block a reader (a FIFO waits for a writer) or never ends (/dev/zero).
NON_REGULAR = frozenset({"dev_zero", "fifo"})


def cases_for(kind: str) -> list[str]:
    """Names of the cases that apply to files of ``kind``, in corpus order."""
    return [case.name for case in CASES if case.applies(KINDS[kind])]


def build(case: str, kind: str, folder: Path) -> Path:
    """Write case ``case`` of ``kind`` into ``folder`` (created if needed); return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    return case_named(case, kind).make(folder, KINDS[kind])


def case_named(case: str, kind: str) -> Case:
    found = [c for c in CASES if c.name == case and c.applies(KINDS[kind])]
    if not found:
        raise KeyError(f"no case {case!r} for kind {kind!r}")
    return found[0]


def build_beside(case: str, kind: str, folder: Path) -> Path:
    """``build``, plus the files a reader looks for beside the broken one (the manifest of a
    layout scores file), so that the broken file itself is what a reader refuses."""
    path = build(case, kind, folder)
    if kind == "layout_scores" and path.parent == folder:
        add_layout_scores_manifest(path)
    return path


# --- user text that rich would read as markup -------------------------------------------------

# "[red]x[/red]" is eaten as a style, "[/x]" raises MarkupError, "no[red]such" loses its tag.
MARKUP_TEXTS = ("[red]x[/red]", "[/x]", "no[red]such")


def invalid_layouts_with_id(layout_id: str) -> str:
    """A layouts file of one layout, with id, label and caption ``layout_id``, whose box runs
    past the right edge: every reader refuses it, naming the layout."""
    text = _layout(0, x="0.9", layout_id=layout_id, label=layout_id)
    return "[\n" + text + "\n]\n"


def one_line_layouts() -> str:
    """A valid layouts file on one line with no trailing newline (a resume must not take it
    for a cut-off scores file)."""
    return json.dumps(json.loads(KINDS["layouts"].valid))


# --- valid inputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """Paths of valid inputs that each command accepts."""

    root: Path
    layouts: Path
    images: Path
    scores: Path
    layout_scores: Path
    score_config: Path
    layout_config: Path
    concepts: Path
    result: Path
    leaderboard_config: Path
    pool: Path
    targets: Path
    preferences: Path
    downstream: Path
    labels: Path

    def of_kind(self, kind: str) -> Path:
        return self.images if kind == "folder" else getattr(self, kind)


def layout_scores_manifest() -> dict:
    """The manifest ``clis score --layout-scores`` expects beside a layout scores file: the
    CLIS-L settings a default ``clis score`` run asks for."""
    from clis.layout_score import LayoutScoreConfig
    from clis.scorer import ScoreConfig

    settings = LayoutScoreConfig(**ScoreConfig().layout).model_dump(mode="json")
    return {"id": "corpus-layout-scores", "settings": settings}


@functools.lru_cache(maxsize=1)
def baseline_layouts() -> tuple:
    """The layouts of the baseline's layouts file, as ``clis`` reads them."""
    import tempfile

    from clis.formats import load_layouts

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "layouts.json"
        path.write_text(KINDS["layouts"].valid, encoding="utf-8")
        return tuple(load_layouts(path))


def layout_keys() -> tuple[str, ...]:
    """The ``layout_key`` of each baseline layout (what a layout scores line must carry)."""
    from clis.layout_score.cache import layout_key

    return tuple(layout_key(layout) for layout in baseline_layouts())


def fill_layout_keys(text: str) -> str:
    """Put each baseline layout's ``layout_key`` where a layout scores template holds ``@KEYi@``."""
    for i, key in enumerate(layout_keys()):
        text = text.replace(f"@KEY{i}@", key)
    return text


def write_kind(kind: str, path: Path) -> Path:
    """Write the valid document of ``kind`` to ``path``, with what must sit beside it."""
    path.write_text(KINDS[kind].valid, encoding="utf-8")
    if kind == "layout_scores":
        add_layout_scores_manifest(path)
    return path


def add_layout_scores_manifest(path: Path) -> None:
    manifest = path.with_name(path.name + ".manifest.json")
    manifest.write_text(json.dumps(layout_scores_manifest()), encoding="utf-8")


def write_baseline(root: Path) -> Baseline:
    """Write valid inputs of every kind under ``root``."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for n, image in enumerate(candidate_images()):
        path = root / image
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (30 * n % 256, 60, 200 - 20 * n)).save(path)
    paths = {}
    for name, spec in KINDS.items():
        if spec.form == "folder":
            continue
        paths[name] = write_kind(name, root / f"{name}{spec.suffix}")
    return Baseline(root=root, images=root / "images", **paths)


def write(path: Path, content: bytes | str) -> Path:
    """``content`` into ``path``, as bytes or as UTF-8 text; returns ``path``."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path

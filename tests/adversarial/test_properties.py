"""Property-based tests of the readers of user files (hypothesis).

Every reader takes any bytes: it reads them, or refuses them with a ClisError whose message is
one line; never another exception, never a NaN or an infinity in what it returns, never a
scores file that lists one candidate twice. ``clis.jsonio.loads`` accepts exactly what
``json.loads`` accepts, less non-finite numbers, and ``clis validate`` exits 0 or 2 on any
file without a traceback and without touching it.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clis import jsonio
from clis.errors import ClisError

from . import corpus

# Derandomized and without an example database: the same examples on every run and machine,
# so a failure here is a regression, not luck.
SETTINGS = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# --- strategies -----------------------------------------------------------------------------

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
any_floats = st.floats()
short_text = st.text(max_size=12)
json_scalars = st.none() | st.booleans() | st.integers() | finite_floats | short_text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(short_text, children, max_size=4),
    max_leaves=16,
)
# The same with NaN and infinities among the numbers, as json.dumps(allow_nan=True) writes them.
loose_scalars = st.none() | st.booleans() | st.integers() | any_floats | short_text
loose_values = st.recursive(
    loose_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(short_text, children, max_size=4),
    max_leaves=16,
)


def loose_dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


@st.composite
def mangled(draw, texts) -> str:
    """A text with one character inserted, deleted or replaced: mostly invalid, sometimes not."""
    text = draw(texts)
    at = draw(st.integers(0, len(text)))
    how = draw(st.sampled_from(["insert", "delete", "replace"]))
    char = draw(st.sampled_from(list('[]{},:"0.eE-+ \\n') + ["NaN", "Infinity", "1e309", "\x00"]))
    if how == "insert":
        return text[:at] + char + text[at:]
    if how == "delete":
        return text[:at] + text[at + 1:]
    return text[:at] + char + text[at + 1:]


deep_texts = st.integers(1, 3000).map(lambda n: "[" * n + "]" * n) | st.integers(1, 3000).map(
    lambda n: '{"a":' * n + "1" + "}" * n
)
huge_ints = st.integers(4000, 6000).map(lambda n: "9" * n)
json_texts = st.one_of(
    json_values.map(json.dumps),
    loose_values.map(loose_dumps),
    mangled(json_values.map(json.dumps)),
    deep_texts,
    huge_ints,
    st.sampled_from(["NaN", "-Infinity", "1e309", "[1e400]", '{"a": -1e309}', "", " ", "nul", "[1,]", "\ufeff[]"]),
    st.text(max_size=30),
)

# Layouts files: plausible structure with odd values where the readers must look closely.
ids = st.one_of(st.sampled_from(["a", "b", "s0", "[/x]", "no[red]such", "x" * 300, "", " "]), short_text, st.integers())
numbers = st.one_of(st.floats(-0.5, 1.5), any_floats, st.sampled_from([5e-324, 0.0, 1.0, -0.0]), st.integers(-2, 2))
boxes = st.one_of(st.lists(numbers, min_size=4, max_size=4), st.lists(numbers, max_size=6), json_scalars)
objects = st.fixed_dictionaries(
    {"id": ids, "label": st.one_of(short_text, st.integers())},
    optional={"bbox": boxes, "attributes": st.lists(short_text, max_size=2), "description": short_text},
)
relations = st.fixed_dictionaries({"subject": st.lists(ids, max_size=2), "relation": short_text,
                                   "object": st.lists(ids, max_size=2)})
layouts = st.fixed_dictionaries(
    {"id": ids, "objects": st.one_of(st.lists(objects, max_size=3), json_scalars)},
    optional={"caption": st.one_of(short_text, st.integers()), "width": numbers, "height": numbers,
              "relations": st.lists(relations, max_size=2)},
)
layout_documents = st.one_of(
    st.lists(layouts, max_size=3),
    st.fixed_dictionaries({"layouts": st.lists(layouts, max_size=3)}),
    loose_values,
)


def encoded(texts) -> st.SearchStrategy[bytes]:
    """The texts as a user's file might hold them: UTF-8 mostly, else UTF-16 or Latin-1."""
    return st.tuples(texts, st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"])).map(
        lambda pair: pair[0].encode(pair[1], errors="replace")
    )


layout_files = st.one_of(
    encoded(layout_documents.map(loose_dumps)),
    encoded(mangled(layout_documents.map(loose_dumps))),
    encoded(json_texts),
    st.binary(max_size=200),
)

# scores.jsonl files: records as `clis score` writes them, with odd values, and odd lines.
score_values = st.one_of(st.none(), any_floats, st.integers(-5, 200), st.sampled_from(["high", "", "NaN"]),
                         st.booleans())
instances = st.fixed_dictionaries(
    {"object_id": st.sampled_from(["cup-1", "table-1", "x"]), "score": score_values},
    optional={"region": score_values, "grounding": score_values, "label": short_text,
              "detection": st.one_of(st.none(), st.fixed_dictionaries({"found": st.booleans(), "iou": score_values}))},
)
score_records = st.fixed_dictionaries(
    {"layout_id": st.one_of(st.sampled_from(["s0", "s1"]), json_scalars),
     "image": st.one_of(st.sampled_from(["images/s0/0.png", "images/s0/1.png", "images/s1/0.png"]), json_scalars)},
    optional={"clis": score_values, "clis_i": score_values, "clis_l": score_values, "global": score_values,
              "instances": st.one_of(st.lists(instances, max_size=3), json_scalars),
              "error": st.one_of(st.none(), short_text)},
)
score_lines = st.lists(
    st.one_of(score_records.map(loose_dumps), score_records.map(loose_dumps), loose_values.map(loose_dumps),
              mangled(score_records.map(loose_dumps)), st.text(max_size=20), st.just("")),
    max_size=6,
)
score_files = st.one_of(
    encoded(score_lines.map("\n".join)),
    encoded(st.tuples(score_lines, st.booleans()).map(lambda p: "\n".join(p[0]) + ("\n" if p[1] else ""))),
    st.binary(max_size=200),
)

# Inputs each reader has got wrong at some point: always tried, whatever hypothesis draws.
DEEP = "[" * 100_000 + "]" * 100_000
BAD_BOX = '[{"id": "a", "objects": [{"id": "o", "label": "x", "bbox": [%s, 0.1, 0.5, 0.5]}]}]'
BAD_LAYOUT_FILES = [
    (BAD_BOX % "NaN").encode(), (BAD_BOX % "1e309").encode(), (BAD_BOX % ("9" * 5000)).encode(),
    BAD_BOX.replace("0.5, 0.5", "5e-324, 5e-324").replace("%s", "0.1").encode(),
    BAD_BOX.replace('"a"', '"[/x]"').replace("%s", "0.9").encode(),
    DEEP.encode(), "[]".encode("utf-16"), b"\x89PNG\r\n\x1a\n" + bytes(64),
]
GOOD_SCORE = '{"layout_id": "s0", "image": "images/s0/0.png", "clis": %s, "instances": [], "error": null}'
BAD_SCORE_FILES = [
    (GOOD_SCORE % "NaN").encode(), (GOOD_SCORE % "1e309").encode(), (GOOD_SCORE % '"high"').encode(),
    (((GOOD_SCORE % "50") + "\n") * 2).encode(), ((GOOD_SCORE % "50") + "\n" + (GOOD_SCORE % "60")).encode(),
    DEEP.encode(), (GOOD_SCORE % ("9" * 5000)).encode(),
]
BAD_LAYOUT_SCORE_LINES = [
    '{"id": "s0", "clis_l": NaN}', '{"id": "s0", "clis_l": 1e999}', '{"id": "s0", "clis_l": 50, "manifest": true}',
    '{"id": "s0", "clis_l": 50, "manifest": {"id": 1}}', DEEP, "9" * 5000,
]


def examples(values, name: str | None = None):
    """``@example`` for each of ``values``, as the test's argument ``name`` (or its only one)."""
    def decorate(test):
        for value in reversed(values):
            test = (example(**{name: value}) if name else example(value))(test)
        return test

    return decorate


# --- helpers --------------------------------------------------------------------------------


def non_finite(value: Any) -> bool:
    """Whether ``value`` holds NaN or an infinity anywhere (at any depth: no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def python_parse(line: str) -> Any:
    """What plain ``json.loads`` makes of a line, or None when it refuses it."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def scores_must_be_refused(data: bytes) -> bool:
    """A scores file every reader must refuse: a NaN or infinity in a record, or one
    (layout_id, image) listed twice."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    seen = set()
    for line in text.splitlines():
        record = python_parse(line)
        if non_finite(record):
            return True
        key = (record.get("layout_id"), record.get("image")) if isinstance(record, dict) else None
        if key is not None and all(isinstance(part, str) for part in key):
            if key in seen:
                return True
            seen.add(key)
    return False


def assert_one_line(error: BaseException) -> None:
    message = str(error)
    assert message.strip(), repr(error)
    assert "\n" not in message and "\r" not in message, repr(message)


class Scratch:
    """One file in a folder of its own, rewritten for each example."""

    def __init__(self, name: str):
        self._folder = tempfile.TemporaryDirectory(prefix="clis-prop-")
        self.path = Path(self._folder.name) / name

    def write(self, data: bytes) -> Path:
        self.path.write_bytes(data)
        return self.path

    def close(self) -> None:
        self._folder.cleanup()


@pytest.fixture(scope="module")
def scratch():
    files: list[Scratch] = []

    def make(name: str) -> Scratch:
        files.append(Scratch(name))
        return files[-1]

    yield make
    for item in files:
        item.close()


# --- clis.jsonio ----------------------------------------------------------------------------


@SETTINGS
@given(json_values)
def test_jsonio_round_trips_finite_values(value):
    assert jsonio.loads(jsonio.dumps(value)) == value
    assert jsonio.loads(json.dumps(value)) == value
    assert jsonio.dumps(value) == json.dumps(value)


@SETTINGS
@given(json_texts)
@examples(["NaN", '{"a": -Infinity}', "1e309", DEEP, "9" * 5000, "[1,]", "\ufeff[]"])
def test_jsonio_accepts_what_json_accepts_less_non_finite(text):
    try:
        expected = json.loads(text)
        python_error = None
    except (ValueError, RecursionError) as exc:
        python_error = exc
    if python_error is None and not non_finite(expected):
        assert jsonio.loads(text) == expected
        return
    with pytest.raises(ValueError) as refused:
        jsonio.loads(text)
    assert_one_line(refused.value)
    if python_error is None:  # json.loads read a NaN or an infinity
        assert isinstance(refused.value, jsonio.JSONError)
    elif isinstance(python_error, json.JSONDecodeError):
        assert isinstance(refused.value, json.JSONDecodeError)  # keeps line and column


@SETTINGS
@given(loose_values)
def test_jsonio_never_writes_nan(value):
    if non_finite(value):
        with pytest.raises(ValueError):
            jsonio.dumps(value)
    else:
        assert json.loads(jsonio.dumps(value)) == value


# --- layouts files --------------------------------------------------------------------------


@SETTINGS
@given(data=layout_files)
@examples(BAD_LAYOUT_FILES, "data")
def test_read_layouts_reads_or_refuses_in_one_line(data, scratch):
    from clis.formats import read_layouts

    path = scratch("layouts.json").write(data)
    try:
        report = read_layouts(path)
    except ClisError as exc:
        assert_one_line(exc)
        return
    for problem in report.problems:
        assert "\n" not in problem, problem
    for layout in report.layouts:
        for obj in layout.objects:
            assert all(math.isfinite(v) for v in obj.bbox), (layout.id, obj.id, obj.bbox)
            x, y, w, h = obj.bbox
            assert w > 0 and h > 0, (layout.id, obj.id, obj.bbox)


# --- scores files ---------------------------------------------------------------------------


def _bench_reader(path):
    from benchmarks.scorefile import SCORE_COLUMNS, read_scores

    frame = read_scores(path)
    # NaN stands for "not scored" in the table; an infinity is never a score.
    return [column for column in SCORE_COLUMNS if frame[column].isin([math.inf, -math.inf]).any()]


def _pick_reader(path):
    from clis.pick import read_scores_file

    return non_finite(read_scores_file(path))


@pytest.mark.parametrize("reader", [_bench_reader, _pick_reader], ids=["benchmarks.scorefile", "clis.pick"])
@SETTINGS
@given(data=score_files)
@examples(BAD_SCORE_FILES, "data")
def test_scores_readers_read_or_refuse_in_one_line(reader, data, scratch):
    path = scratch("scores.jsonl").write(data)
    refuse = scores_must_be_refused(data)
    try:
        infinite = reader(path)
    except ClisError as exc:
        assert_one_line(exc)
        return
    assert not refuse, f"read a file with a NaN/infinity or a candidate listed twice: {data[:300]!r}"
    assert not infinite


@SETTINGS
@given(line=st.one_of(json_texts, score_lines.map("\n".join), st.binary(max_size=60)))
@examples(BAD_LAYOUT_SCORE_LINES, "line")
def test_layout_score_record_never_raises(line):
    from clis.layout_score.precomputed import layout_score_record

    record = layout_score_record(line)
    assert record is None or (isinstance(record, dict) and isinstance(record["id"], str) and "clis_l" in record)
    assert not non_finite(record), f"a NaN/infinity read as a CLIS-L line: {line!r}"


layout_score_lines = st.fixed_dictionaries(
    {"id": st.one_of(st.sampled_from(list(corpus.LAYOUT_IDS)), json_scalars), "clis_l": score_values},
    optional={"error": st.one_of(st.none(), short_text), "llm": score_values,
              # mostly the key of a baseline layout, so that lines are used, not only refused
              "layout_key": st.one_of(st.integers(0, len(corpus.LAYOUT_IDS) - 1).map(lambda i: corpus.layout_keys()[i]),
                                      short_text),
              "manifest": st.one_of(json_scalars, st.fixed_dictionaries({"id": json_scalars}))},
).map(loose_dumps)
layout_score_files = st.one_of(
    encoded(st.lists(st.one_of(layout_score_lines, json_texts), max_size=5).map("\n".join)),
    st.binary(max_size=200),
)
S0_LINE = '{"id": "s0", "clis_l": %s, "error": null, "layout_key": "%s"}' % ("%s", corpus.layout_keys()[0])


@SETTINGS
@given(data=layout_score_files)
@examples([line.encode() for line in BAD_LAYOUT_SCORE_LINES]
          + [(S0_LINE % value).encode() for value in ("NaN", "-Infinity", "1e309", '"high"', "true")], "data")
def test_precomputed_layout_scores_read_or_refused_in_one_line(data, scratch):
    from clis.layout_score import LayoutScoreConfig
    from clis.layout_score.precomputed import PrecomputedLayoutScores
    from clis.scorer import ScoreConfig

    path = scratch("layout_scores.jsonl").write(data)
    corpus.add_layout_scores_manifest(path)
    try:
        scores = PrecomputedLayoutScores(path, LayoutScoreConfig(**ScoreConfig().layout))
    except ClisError as exc:
        assert_one_line(exc)
        return
    for layout in corpus.baseline_layouts():
        try:
            (result,) = scores.score_layouts([layout])
        except ClisError as exc:  # no line for this layout, or one for another version of it
            assert_one_line(exc)
            continue
        value = result.clis_l
        assert value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                 and math.isfinite(value)), f"CLIS-L {value!r} read from {data[:300]!r}"


# --- clis validate on any file ----------------------------------------------------------------


@settings(SETTINGS, max_examples=50,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=layout_files)
@examples(BAD_LAYOUT_FILES, "data")
def test_validate_exits_0_or_2_and_never_touches_the_file(data, capsys, scratch):
    from pipeline_helpers import run_cli

    path = scratch("any.json").write(data)
    code, output = run_cli(["validate", str(path)], capsys)
    # validate's documented codes: 0 valid, 2 invalid with one line per problem.
    assert code in (0, 2), output
    assert "Traceback" not in output and "unexpected" not in output, output
    assert path.read_bytes() == data

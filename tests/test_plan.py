"""clis plan: JSON repair, validation, retries, clamping, backends (local LM and HTTP endpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from clis.errors import InputError, ModelUnavailableError
from clis.formats import load_layouts
from clis.layout import Layout
from clis.plan import load_concepts, plan_layouts, read_concepts
from clis.planning.backends import BackendError, OpenAIChatBackend, TransformersChatBackend
from clis.planning.parse import PlanParseError, clamp_box, load_json_object, parse_boxes, parse_scene_graph
from pipeline_helpers import CUT_SHORT, HANG_UP, ChatServer, asked_ids, careful_planner, run_cli

IDS = ["cat-1", "sofa-1"]
LABELS = {"cat-1": "cat", "sofa-1": "sofa"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ('```json\n{"a": [1, 2,],}\n```', {"a": [1, 2]}),
        ("Sure, here it is: {'a': 'x', 'b': True}", {"a": "x", "b": True}),
        ('{"a": {"b": [0.1, 0.2', {"a": {"b": [0.1, 0.2]}}),  # cut off mid-answer
        ('[{"a": 1}]', {"a": 1}),
    ],
)
def test_json_slips_are_repaired(text, expected):
    assert load_json_object(text) == expected


@pytest.mark.parametrize("text", ["", "no json here", "{}"])
def test_answers_without_an_object_are_rejected(text):
    with pytest.raises(PlanParseError):
        load_json_object(text)


def test_scene_graph_resolves_ids_and_drops_dangling_relations():
    text = json.dumps({
        "objects": [{"name": "Cat 1", "attributes": "grey, fluffy"}, {"id": "lamp-1", "attributes": []}],
        "relations": [{"subject": "cat", "relation": "on", "object": ["sofa-1"]},
                      {"subject": ["lamp-1"], "relation": "near", "object": ["cat-1"]}],
        "caption": "A grey cat   sleeps on a sofa.",
    })  # fmt: skip
    scene, notes = parse_scene_graph(text, IDS, LABELS)
    assert scene["objects"] == [
        {"id": "cat-1", "label": "cat", "attributes": ["grey", "fluffy"]},
        {"id": "sofa-1", "label": "sofa", "attributes": []},
    ]
    assert scene["relations"] == [{"subject": ["cat-1"], "relation": "on", "object": ["sofa-1"]}]
    assert scene["caption"] == "A grey cat sleeps on a sofa."
    assert any("lamp-1" in n for n in notes) and any("sofa-1: no attributes" in n for n in notes)


def test_caption_must_name_every_object():
    with pytest.raises(PlanParseError, match="does not name: sofa"):
        parse_scene_graph('{"caption": "A cat in a catalogue."}', IDS, LABELS)


def test_boxes_are_clamped_and_reported():
    boxes, notes = parse_boxes('{"boxes": {"cat-1": [0.9, -0.2, 0.3, 0.5], "sofa-1": [0, 0.5, 1, 0.5]}}', IDS, LABELS)
    # x 0.9..1.2 -> 0.9..1.0, y -0.2..0.3 -> 0..0.3
    assert boxes["cat-1"] == pytest.approx([0.9, 0.0, 0.1, 0.3])
    assert boxes["sofa-1"] == [0.0, 0.5, 1.0, 0.5]
    assert len(notes) == 1 and notes[0].startswith("cat-1: box [0.9, -0.2, 0.3, 0.5] clamped")


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"boxes": {"cat-1": [0.1, 0.1, 0.2, 0.2]}}', "no box for sofa-1"),
        ('{"boxes": {"cat-1": [0.1, 0.1, 0.2], "sofa-1": [0, 0, 1, 1]}}', "not four numbers"),
        ('{"boxes": {"cat-1": [1.5, 0.1, 0.2, 0.2], "sofa-1": [0, 0, 1, 1]}}', "outside the canvas"),
    ],
)
def test_unusable_boxes_are_rejected(text, message):
    with pytest.raises(PlanParseError, match=message):
        parse_boxes(text, IDS, LABELS)


def test_clamp_box_inside_is_unchanged():
    assert clamp_box([0.1, 0.2, 0.3, 0.4]) == [0.1, 0.2, 0.3, 0.4]


def test_concepts_file_forms_and_errors(tmp_path):
    sets = read_concepts([["cat", "cat-2", "sofa"], "dog, ball", {"concepts": ["horse"], "count": 3, "id": "Farm"}], count=2)
    assert sets[0].object_ids == ["cat-1", "cat-2", "sofa-1"] and sets[0].count == 2
    assert sets[1].labels == ["dog", "ball"]
    assert (sets[2].count, sets[2].prefix) == (3, "farm")
    path = tmp_path / "concepts.json"
    path.write_text('[["cat"], {"concepts": []}]')
    with pytest.raises(InputError, match=r"concepts.json: concept set \[1\]: field 'concepts'"):
        load_concepts(path)
    path.write_text('[{"concepts": ["cat"], "count": 0}]')
    with pytest.raises(InputError, match=r"concept set \[0\]: field 'count'"):
        load_concepts(path)


class Scripted:
    """A backend that replays answers in order and remembers the seeds it was given."""

    def __init__(self, answers):
        self.answers, self.seeds = list(answers), []

    def chat(self, messages, seed):
        self.seeds.append(seed)
        return self.answers.pop(0)

    def describe(self):
        return {"kind": "scripted"}


GOOD_SCENE = '{"objects": [{"id": "cat-1", "attributes": ["grey"]}], "caption": "A grey cat on a sofa."}'
GOOD_BOXES = '{"boxes": {"cat-1": [0.3, 0.2, 0.3, 0.3], "sofa-1": [0.0, 0.4, 1.0, 0.6]}}'


def test_retries_use_new_seeds_then_succeed():
    backend = Scripted(["I cannot do that.", GOOD_SCENE, '{"boxes": {}}', GOOD_BOXES])
    result = plan_layouts(read_concepts([["cat", "sofa"]]), backend, max_retries=2)
    record = result.records[0]
    assert record["status"] == "ok" and len(result.layouts) == 1
    assert [a["stage"] for a in record["drafts"][0]["failed_attempts"]] == ["scene graph", "layout"]
    assert len(set(backend.seeds)) == 4  # every attempt sampled with its own seed
    layout = result.layouts[0]
    assert layout.id == "000-cat-sofa-0" and layout.get_object("sofa-1").bbox == [0.0, 0.4, 1.0, 0.6]


def test_a_set_that_keeps_failing_is_an_error_record_not_a_crash():
    backend = Scripted(["nonsense"] * 3 + [GOOD_SCENE, GOOD_BOXES])
    result = plan_layouts(read_concepts([["cat", "sofa"], ["cat", "sofa"]]), backend, max_retries=2)
    assert [r["status"] for r in result.records] == ["error", "ok"]
    assert "after 3 attempts" in result.records[0]["error"]
    assert [layout.id for layout in result.layouts] == ["001-cat-sofa-0"]


def test_drafts_keep_the_best_scoring_layout():
    # Three drafts whose cat boxes differ in width; the scorer prefers wider cats.
    answers = []
    for width in (0.2, 0.5, 0.3):
        answers += [GOOD_SCENE, json.dumps({"boxes": {"cat-1": [0.1, 0.1, width, 0.2], "sofa-1": [0, 0.5, 1, 0.5]}})]
    score = lambda layout: 100 * layout.get_object("cat-1").bbox[2]  # noqa: E731
    result = plan_layouts(read_concepts([["cat", "sofa"]]), Scripted(answers), drafts=3, score_layout=score)
    record = result.records[0]
    assert [d["clis_l"] for d in record["drafts"]] == pytest.approx([20.0, 50.0, 30.0])
    assert record["chosen_draft"] == 1 and result.layouts[0].get_object("cat-1").bbox[2] == 0.5
    with pytest.raises(InputError, match="CLIS-L"):
        plan_layouts(read_concepts([["cat"]]), Scripted([]), drafts=2)


def test_openai_endpoint_backend_sends_seed_and_model(monkeypatch):
    monkeypatch.setenv("CLIS_LLM_API_KEY", "secret")
    with ChatServer(lambda body: "hello") as server:
        backend = OpenAIChatBackend(server.url, model="qwen", temperature=0.2)
        assert backend.chat([{"role": "user", "content": "hi"}], seed=7) == "hello"
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret"
    assert request["body"]["seed"] == 7 and request["body"]["model"] == "qwen" and request["body"]["temperature"] == 0.2


def test_cli_plan_through_local_http_endpoint(tmp_path, capsys):
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps([["cat", "sofa", "lamp"], {"concepts": ["person", "horse"], "count": 2}]))
    out = tmp_path / "layouts.json"
    with ChatServer(careful_planner) as server:
        code, output = run_cli(["plan", str(concepts), "--out", str(out), "--llm", server.url], capsys)
    assert code == 0, output
    layouts = load_layouts(out)
    assert [layout.id for layout in layouts] == ["000-cat-sofa-lamp-0", "001-person-horse-0", "001-person-horse-1"]
    first = layouts[0]
    assert [o.id for o in first.objects] == ["cat-1", "sofa-1", "lamp-1"]
    assert first.caption == "A photo of a cat and a sofa and a lamp."
    # The server's last box is [2/3, 0.3, 1/3 + 0.1, 0.5]; clamping cuts it at the right edge.
    assert first.get_object("lamp-1").bbox == pytest.approx([0.6667, 0.3, 0.3333, 0.5], abs=1e-4)
    report = json.loads((tmp_path / "layouts.plan.json").read_text())
    assert report["summary"] == {"slots": 3, "ok": 3, "failed": 0, "clamped_boxes": 3, "failed_attempts": 0}
    assert report["backend"]["kind"] == "openai-compatible"
    assert "3 boxes clamped" in output


def test_cli_plan_endpoint_errors_are_one_line(tmp_path, capsys):
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat"]]')
    with ChatServer(lambda body: (404, "model 'x' not found")) as server:
        code, output = run_cli(["plan", str(concepts), "--out", str(tmp_path / "l.json"), "--llm", server.url], capsys)
    assert code == 2 and "HTTP 404" in output and "Traceback" not in output
    # A port nobody listens on (the server above is closed now).
    code, output = run_cli(["plan", str(concepts), "--out", str(tmp_path / "l.json"), "--llm", server.url], capsys)
    assert code == 2 and "cannot reach the chat endpoint" in output
    with pytest.raises(ModelUnavailableError):
        OpenAIChatBackend(server.url).chat([{"role": "user", "content": "x"}], 0)


def test_tiny_local_lm_is_seeded_and_its_failures_become_records(tiny_models, tmp_path, capsys):
    backend = TransformersChatBackend(tiny_models["causal_lm"], max_new_tokens=12)
    messages = [{"role": "user", "content": "Objects: cat-1"}]
    assert backend.chat(messages, seed=3) == backend.chat(messages, seed=3)
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat", "sofa"]]')
    out = tmp_path / "layouts.json"
    code, output = run_cli(
        ["plan", str(concepts), "--out", str(out), "--llm", tiny_models["causal_lm"], "--mode", "json",
         "--retries", "1", "--max-new-tokens", "12"],
        capsys,
    )
    # In json mode a random tiny LM writes no usable JSON: the slot fails with a record, the run does not crash.
    assert code == 1 and "concept set [0] (cat, sofa) layout 0" in output and "Traceback" not in output
    assert json.loads(out.read_text()) == []
    record = json.loads((tmp_path / "layouts.plan.json").read_text())["records"][0]
    assert record["status"] == "error" and len(record["drafts"][0]["failed_attempts"]) == 2


# Four cat/sofa geometries the tiny LM's CLIS-L tells apart (cat above or below the sofa,
# bigger or smaller than it); the request's seed picks one, so drafts differ.
SEEDED_BOXES = [
    {"cat-1": [0.4, 0.1, 0.2, 0.2], "sofa-1": [0.0, 0.5, 1.0, 0.4]},
    {"cat-1": [0.4, 0.6, 0.2, 0.2], "sofa-1": [0.0, 0.1, 1.0, 0.4]},
    {"cat-1": [0.0, 0.1, 1.0, 0.4], "sofa-1": [0.4, 0.6, 0.2, 0.2]},
    {"cat-1": [0.0, 0.5, 1.0, 0.4], "sofa-1": [0.4, 0.1, 0.2, 0.2]},
]
SEEDED_SCENE = {
    "objects": [{"id": "cat-1", "attributes": ["grey"]}, {"id": "sofa-1", "attributes": ["red"]}],
    "relations": [{"subject": ["cat-1"], "relation": "on", "object": ["sofa-1"]}],
    "caption": "A grey cat on a red sofa.",
}


def seeded_planner(body: dict) -> str:
    """Clean answers (nothing to repair or clamp) whose boxes depend on the request's seed."""
    assert asked_ids(body) == ["cat-1", "sofa-1"]
    if body["messages"][-1]["content"].rstrip().endswith("Layout:"):
        return json.dumps({"boxes": SEEDED_BOXES[body["seed"] % 4]})
    return json.dumps(SEEDED_SCENE)


def test_cli_plan_drafts_keep_the_best_by_clis_l(tiny_models, tmp_path, capsys):
    from clis.layout_score import LayoutScoreConfig, LayoutScorer

    concepts = tmp_path / "concepts.json"
    concepts.write_text('[{"concepts": ["cat", "sofa"], "id": "pet"}]')
    settings = {"llm": tiny_models["causal_lm"], "pool": None, "text_embedder": "none"}
    (tmp_path / "clis_l.json").write_text(json.dumps(settings))
    out = tmp_path / "layouts.json"
    with ChatServer(seeded_planner) as server:
        code, output = run_cli(
            ["plan", str(concepts), "--out", str(out), "--llm", server.url, "--drafts", "3",
             "--layout-config", str(tmp_path / "clis_l.json")], capsys,
        )  # fmt: skip
    assert code == 0, output
    # Each draft asked once for a scene graph, then once for boxes: rebuild its layout from the
    # server's own answer and score it here, apart from the planner.
    layout_seeds = [r["body"]["seed"] for r in server.requests if r["body"]["messages"][-1]["content"].rstrip().endswith("Layout:")]
    assert len(layout_seeds) == 3
    drafts = [
        Layout.model_validate({
            "id": "pet-0", "caption": SEEDED_SCENE["caption"], "relations": SEEDED_SCENE["relations"],
            "objects": [{**o, "label": o["id"][:-2], "bbox": SEEDED_BOXES[seed % 4][o["id"]]} for o in SEEDED_SCENE["objects"]],
        })
        for seed in layout_seeds
    ]  # fmt: skip
    scorer = LayoutScorer(LayoutScoreConfig(**settings))
    scores = [score.clis_l for score in scorer.score_layouts(drafts)]
    best = max(range(3), key=lambda d: scores[d])
    assert len(set(scores)) > 1 and scores.count(scores[best]) == 1, scores  # the drafts really differ
    record = json.loads((tmp_path / "layouts.plan.json").read_text())["records"][0]
    assert [d["clis_l"] for d in record["drafts"]] == pytest.approx(scores)
    assert record["chosen_draft"] == best and record["clis_l"] == pytest.approx(scores[best])
    [kept] = load_layouts(out)
    assert kept.model_dump() == drafts[best].model_dump()


@pytest.mark.parametrize("drop", [HANG_UP, CUT_SHORT])
def test_dropped_connections_are_backend_errors(drop):
    with ChatServer(lambda body: drop) as server:
        with pytest.raises(BackendError, match="connection dropped"):
            OpenAIChatBackend(server.url).chat([{"role": "user", "content": "x"}], 0)


def test_cli_plan_retries_dropped_connections_then_records_them(tmp_path, capsys):
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat", "sofa"], ["dog"]]')
    calls = []

    def flaky(body):
        # The first request hangs up and the second is cut short; then the server behaves for
        # the cat set and keeps hanging up on the dog set.
        calls.append(body)
        if len(calls) <= 2:
            return [HANG_UP, CUT_SHORT][len(calls) - 1]
        return HANG_UP if asked_ids(body) == ["dog-1"] else careful_planner(body)

    out = tmp_path / "layouts.json"
    with ChatServer(flaky) as server:
        code, output = run_cli(["plan", str(concepts), "--out", str(out), "--llm", server.url, "--retries", "2"], capsys)
    assert code == 0, output
    assert "unexpected" not in output and "Traceback" not in output
    assert [layout.id for layout in load_layouts(out)] == ["000-cat-sofa-0"]
    records = json.loads((tmp_path / "layouts.plan.json").read_text())["records"]
    assert [r["status"] for r in records] == ["ok", "error"]
    assert [a["stage"] for a in records[0]["drafts"][0]["failed_attempts"]] == ["scene graph", "scene graph"]
    assert "connection dropped" in records[1]["error"] and "after 3 attempts" in records[1]["error"]


def test_cli_plan_saves_what_was_planned_when_the_run_aborts(tmp_path, capsys):
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat", "sofa"], ["dog"], ["horse"]]')
    # The key is revoked after the first concept set: 401 is not retried, it ends the run.
    answer = lambda body: (401, "key revoked") if asked_ids(body) == ["dog-1"] else careful_planner(body)  # noqa: E731
    out = tmp_path / "layouts.json"
    with ChatServer(answer) as server:
        code, output = run_cli(["plan", str(concepts), "--out", str(out), "--llm", server.url], capsys)
    assert code == 2 and "HTTP 401" in output and "Traceback" not in output
    assert [layout.id for layout in load_layouts(out)] == ["000-cat-sofa-0"]
    report = json.loads((tmp_path / "layouts.plan.json").read_text())
    assert "HTTP 401" in report["aborted"] and [r["layout_id"] for r in report["records"]] == ["000-cat-sofa-0"]


class _Killed(BaseException):
    """What a run ended from outside looks like to the code: not an Exception."""


class _WatchingPlanner:
    """A chat backend that answers like ``careful_planner`` and, at the first request of each
    slot, notes the layout ids --out holds at that moment (None: no file yet)."""

    mode = "json"

    def __init__(self, out, kill_at=None):
        self.out, self.kill_at, self.seen = out, kill_at, []

    def chat(self, messages, seed):
        body = {"messages": messages}
        if not messages[-1]["content"].rstrip().endswith("Layout:"):  # a slot starts with its scene graph
            self.seen.append([layout.id for layout in load_layouts(self.out)] if self.out.exists() else None)
            if asked_ids(body) == self.kill_at:
                raise _Killed()
        return careful_planner(body)

    def describe(self):
        return {"kind": "watching"}


def test_cli_plan_saves_every_finished_slot_before_the_next_starts(tmp_path, capsys, monkeypatch):
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat", "sofa"], {"concepts": ["dog"], "count": 2}]')
    out = tmp_path / "layouts.json"
    planner = _WatchingPlanner(out)
    monkeypatch.setattr("clis.cli.plan.make_backend", lambda *args, **kwargs: planner)
    code, output = run_cli(["plan", str(concepts), "--out", str(out)], capsys)
    assert code == 0, output
    assert planner.seen == [None, ["000-cat-sofa-0"], ["000-cat-sofa-0", "001-dog-0"]]
    assert json.loads((tmp_path / "layouts.plan.json").read_text())["status"] == "complete"


def test_cli_plan_crash_leaves_a_valid_layouts_file(tmp_path, capsys, monkeypatch):
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat", "sofa"], ["dog"], ["horse"]]')
    out = tmp_path / "layouts.json"
    monkeypatch.setattr("clis.cli.plan.make_backend", lambda *args, **kwargs: _WatchingPlanner(out, ["horse-1"]))
    with pytest.raises(_Killed):
        run_cli(["plan", str(concepts), "--out", str(out)], capsys)
    assert [layout.id for layout in load_layouts(out)] == ["000-cat-sofa-0", "001-dog-0"]
    report = json.loads((tmp_path / "layouts.plan.json").read_text())
    assert report["status"] == "aborted" and report["summary"]["slots"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["concepts.json", "layouts.json", "layouts.plan.json"]


def test_cli_plan_killed_mid_run_keeps_the_finished_slots(tmp_path):
    # SIGKILL runs no handler at all: only what was saved before the kill survives.
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat", "sofa"], ["dog"], ["horse"]]')
    out = tmp_path / "layouts.json"
    plan_run = {}

    def answer(body):
        if asked_ids(body) == ["horse-1"]:
            os.kill(plan_run["process"].pid, signal.SIGKILL)
        return careful_planner(body)

    with ChatServer(answer) as server:
        plan_run["process"] = subprocess.Popen(
            [sys.executable, "-c", "from clis.cli import main; main()", "plan", str(concepts), "--out", str(out),
             "--llm", server.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert plan_run["process"].wait(timeout=120) == -signal.SIGKILL
    assert [layout.id for layout in load_layouts(out)] == ["000-cat-sofa-0", "001-dog-0"]
    report = json.loads((tmp_path / "layouts.plan.json").read_text())
    assert report["status"] == "running" and [r["layout_id"] for r in report["records"]] == ["000-cat-sofa-0", "001-dog-0"]

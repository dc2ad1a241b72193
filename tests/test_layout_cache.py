"""The CLIS-L cache: each layout is scored once per settings, across scorers, runs and commands.

Forward passes are counted with a hook on the language model itself, and expected layouts are
written by hand here, so the checks do not depend on how the cache computes its keys.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clis.errors import InputError
from clis.layout import Layout
from clis.layout_score import LayoutScoreConfig, LayoutScorer, LayoutWeights
from clis.layout_score.cache import LayoutScoreCache

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

TEA = {
    "id": "tea", "caption": "a red cup on a wooden table", "width": 640, "height": 480,
    "objects": [
        {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.4, 0.1, 0.2, 0.2]},
        {"id": "table-1", "label": "table", "description": "a wooden table", "bbox": [0.1, 0.5, 0.8, 0.5]},
        {"id": "lamp-1", "label": "lamp", "bbox": [0.75, 0.05, 0.1, 0.3]},
    ],
    "relations": [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"]}],
}
SOFA = {
    "id": "sofa", "caption": "a cat on a sofa",
    "objects": [
        {"id": "cat-1", "label": "cat", "bbox": [0.3, 0.2, 0.3, 0.3]},
        {"id": "sofa-1", "label": "sofa", "bbox": [0.0, 0.45, 1.0, 0.55]},
    ],
}


def layout(data: dict, **changes) -> Layout:
    return Layout.model_validate({**json.loads(json.dumps(data)), **changes})


def with_box(data: dict, object_index: int, box: list[float], **changes) -> Layout:
    copy = json.loads(json.dumps(data))
    copy["objects"][object_index]["bbox"] = box
    return layout(copy, **changes)


class Forwards:
    """Counts forward passes of a scorer's language model (a hook on the model's decoder)."""

    def __init__(self, scorer: LayoutScorer):
        self.count = 0
        self._hook = scorer.llm_model.model.base_model.register_forward_hook(self._seen)

    def _seen(self, *_):
        self.count += 1

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self._hook.remove()


def score(scorer: LayoutScorer, layouts: list[Layout]) -> tuple[list, int]:
    with Forwards(scorer) as forwards:
        results = scorer.score_layouts(layouts)
    return results, forwards.count


@pytest.fixture
def tiny_config(tiny_models):
    return LayoutScoreConfig(llm=tiny_models["causal_lm"], text_embedder="none", batch_size=4)


@pytest.fixture
def cache_file(tmp_path):
    return tmp_path / "cache" / "layout_scores.sqlite"


def test_second_scorer_with_the_same_settings_runs_no_forward_pass(tiny_config, cache_file):
    layouts = [layout(TEA), layout(SOFA)]
    first, cold = score(LayoutScorer(tiny_config, cache=cache_file), layouts)
    assert cold > 0
    again = LayoutScorer(tiny_config, cache=cache_file)
    second, warm = score(again, layouts)
    assert warm == 0
    assert [r.to_dict() for r in second] == [r.to_dict() for r in first]
    # unrounded scores too, so a warm run picks exactly what a cold one picks
    assert [(r.clis_l, r.llm, r.geometry) for r in second] == [(r.clis_l, r.llm, r.geometry) for r in first]
    assert (again.cache_hits, again.cache_misses, again.computed) == (2, 0, 0)
    assert again.cache_info()["path"] == str(cache_file)


def test_the_default_is_the_file_clis_layout_cache_names_and_off_turns_it_off(tiny_config, tmp_path, monkeypatch):
    target = tmp_path / "elsewhere.sqlite"
    monkeypatch.setenv("CLIS_LAYOUT_CACHE", str(target))
    _, cold = score(LayoutScorer(tiny_config), [layout(SOFA)])
    _, warm = score(LayoutScorer(tiny_config), [layout(SOFA)])
    assert cold > 0 and warm == 0 and target.is_file()

    monkeypatch.setenv("CLIS_LAYOUT_CACHE", "off")
    off = LayoutScorer(tiny_config)
    assert off.cache is None and off.cache_info()["path"] is None
    _, again = score(off, [layout(SOFA)])
    assert again == cold  # nothing was read: the same forward passes as the first, cold run


def test_without_the_variable_the_cache_is_in_the_clis_cache_dir(tiny_config, tmp_path, monkeypatch):
    monkeypatch.delenv("CLIS_LAYOUT_CACHE")
    monkeypatch.setenv("CLIS_CACHE_DIR", str(tmp_path / "clis-cache"))
    scorer = LayoutScorer(tiny_config)
    scorer.score_layouts([layout(SOFA)])
    assert scorer.cache_info()["path"] == str(tmp_path / "clis-cache" / "layout_scores.sqlite")
    with sqlite3.connect(tmp_path / "clis-cache" / "layout_scores.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM clis_l_scores_v2").fetchone()[0] == 1


def test_cache_none_turns_it_off(tiny_config, cache_file):
    score(LayoutScorer(tiny_config, cache=cache_file), [layout(SOFA)])
    scorer = LayoutScorer(tiny_config, cache=None)
    _, forwards = score(scorer, [layout(SOFA)])
    assert forwards > 0 and scorer.cache_hits == 0


def test_what_clis_l_does_not_read_does_not_matter(tiny_config, cache_file):
    score(LayoutScorer(tiny_config, cache=cache_file), [layout(TEA)])
    other_text = json.loads(json.dumps(TEA))
    other_text["caption"] = "something else entirely"
    other_text["images"] = ["tea/0.png"]
    other_text["objects"][0]["attributes"] = ["blue", "chipped"]
    other_text["objects"][1]["description"] = "a glass table"
    other_text["objects"][2]["note"] = "an extra key"
    scorer = LayoutScorer(tiny_config, cache=cache_file)
    (result,), forwards = score(scorer, [layout(other_text)])
    assert forwards == 0 and scorer.cache_hits == 1
    assert result.id == "tea" and result.clis_l is not None


@pytest.mark.parametrize("changed", [
    pytest.param(lambda: with_box(TEA, 0, [0.4, 0.6, 0.2, 0.2]), id="box"),
    pytest.param(lambda: with_box(TEA, 2, [0.75, 0.05, 0.1, 0.31]), id="box-by-a-little"),
    pytest.param(lambda: layout(TEA, width=480, height=640), id="canvas"),
    pytest.param(lambda: layout(TEA, relations=[{"subject": ["cup-1"], "relation": "under", "object": ["table-1"]}]),
                 id="relation"),
    pytest.param(lambda: layout(TEA, objects=[{**TEA["objects"][0], "label": "mug"}, *TEA["objects"][1:]]), id="label"),
    pytest.param(lambda: layout(TEA, objects=[{**TEA["objects"][0], "id": "cup-9"}, *TEA["objects"][1:]],
                                relations=[{"subject": ["cup-9"], "relation": "on", "object": ["table-1"]}]),
                 id="object-id"),
    pytest.param(lambda: layout(TEA, objects=list(reversed(TEA["objects"]))), id="object-order"),
])
def test_what_clis_l_reads_is_a_miss(tiny_config, cache_file, changed):
    score(LayoutScorer(tiny_config, cache=cache_file), [layout(TEA)])
    scorer = LayoutScorer(tiny_config, cache=cache_file)
    _, forwards = score(scorer, [changed()])
    assert scorer.cache_hits == 0 and scorer.computed == 1 and forwards > 0


def test_other_settings_miss(tiny_models, tiny_config, cache_file, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    score(LayoutScorer(tiny_config, cache=cache_file), [layout(TEA)])
    # another model: the tiny LM with one weight changed
    other_lm = tmp_path / "other-lm"
    shutil.copytree(tiny_models["causal_lm"], other_lm)
    weights = other_lm / "model.safetensors"
    tensors = load_file(weights)
    name = next(n for n in tensors if n.endswith("embed_tokens.weight"))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, weights, metadata={"format": "pt"})
    for config in (tiny_config.model_copy(update={"llm": str(other_lm)}),
                   tiny_config.model_copy(update={"weights": LayoutWeights(llm=0.7, geometry=0.3)}),
                   tiny_config.model_copy(update={"max_pairs": 1})):
        scorer = LayoutScorer(config, cache=cache_file)
        _, forwards = score(scorer, [layout(TEA)])
        assert scorer.cache_hits == 0 and forwards > 0, config


def test_layouts_with_the_same_content_are_scored_once_and_keep_their_ids(tiny_config, cache_file):
    alone, single = score(LayoutScorer(tiny_config, cache=None), [layout(TEA)])
    scorer = LayoutScorer(tiny_config, cache=cache_file)
    twins = [layout(TEA, id="tea-a"), layout(TEA, id="tea-b", caption="another caption"), layout(SOFA)]
    results, forwards = score(scorer, twins)
    assert [r.id for r in results] == ["tea-a", "tea-b", "sofa"]
    assert scorer.computed == 2
    a, b = (r.to_dict() for r in results[:2])
    assert {**a, "id": None} == {**b, "id": None} == {**alone[0].to_dict(), "id": None}
    results[0].pairs.clear()  # each result is its own object
    assert results[1].pairs
    # later, a third copy under yet another id is a hit that carries its own id
    later = LayoutScorer(tiny_config, cache=cache_file)
    (hit,), forwards = score(later, [layout(TEA, id="tea-c")])
    assert forwards == 0 and hit.id == "tea-c" and hit.to_dict()["manifest"] == a["manifest"]
    with LayoutScoreCache(cache_file) as cache:
        assert len(cache) == 2  # one row per content, not per id


def test_failed_results_are_not_cached(tiny_config, cache_file, monkeypatch):
    broken = LayoutScorer(tiny_config, cache=cache_file)
    real_plan = broken._plan

    def plan(item):
        if item.id == "tea":
            raise RuntimeError("the planner broke")
        return real_plan(item)

    monkeypatch.setattr(broken, "_plan", plan)
    tea, sofa = broken.score_layouts([layout(TEA), layout(SOFA)])
    assert tea.error == "RuntimeError: the planner broke" and sofa.error is None
    with LayoutScoreCache(cache_file) as cache:
        assert len(cache) == 1  # the sofa only
    scorer = LayoutScorer(tiny_config, cache=cache_file)
    (again,), forwards = score(scorer, [layout(TEA)])
    assert again.error is None and forwards > 0 and scorer.cache_hits == 0


def test_a_twin_of_a_failed_layout_fails_under_its_own_name(tiny_config, monkeypatch):
    scorer = LayoutScorer(tiny_config, cache=None)
    real_plan = scorer._plan
    monkeypatch.setattr(scorer, "_plan", lambda item: (_ for _ in ()).throw(KeyError(item.id))
                        if item.id.startswith("tea") else real_plan(item))
    a, b = scorer.score_layouts([layout(TEA, id="tea-a"), layout(TEA, id="tea-b")])
    assert (a.id, a.error) == ("tea-a", "KeyError: 'tea-a'")
    assert (b.id, b.error) == ("tea-b", "KeyError: 'tea-b'")


def test_a_corrupt_cache_file_is_a_one_line_error(tiny_config, tmp_path):
    broken = tmp_path / "layout_scores.sqlite"
    broken.write_bytes(b"this is not an SQLite database, just text that is long enough " * 20)
    with pytest.raises(InputError) as caught:
        LayoutScorer(tiny_config, cache=broken)
    message = str(caught.value)
    assert "\n" not in message and str(broken) in message and "CLIS_LAYOUT_CACHE=off" in message
    with pytest.raises(InputError, match="cannot use as the CLIS-L cache"):
        LayoutScoreCache(tmp_path)  # a folder


def test_score_layouts_command_with_a_corrupt_cache_exits_2_in_one_line(tiny_models, tmp_path, monkeypatch):
    from clis.cli import app

    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"\x00garbage" * 200)
    monkeypatch.setenv("CLIS_LAYOUT_CACHE", str(broken))
    layouts = tmp_path / "layouts.json"
    layouts.write_text(json.dumps([TEA]), encoding="utf-8")
    res = CliRunner().invoke(app, ["score-layouts", str(layouts), "--out", str(tmp_path / "out.jsonl"),
                                   "--llm", tiny_models["causal_lm"]])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(broken) in lines[0], res.output


def test_two_processes_write_the_same_file_at_once(tmp_path):
    path = tmp_path / "shared.sqlite"
    script = textwrap.dedent("""
        import sys
        from clis.layout_score.cache import LayoutScoreCache
        name, path = sys.argv[1], sys.argv[2]
        cache = LayoutScoreCache(path)
        for batch in range(20):
            cache.put_many((f"{name}-{batch}-{i}", "m", {"id": name, "i": i}, {"clis_l": float(i)}) for i in range(25))
            assert len(cache.get_many([f"{name}-{batch}-0"], "m")) == 1
        cache.close()
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script, name, str(path)], stderr=subprocess.PIPE, text=True)
               for name in ("a", "b")]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    with LayoutScoreCache(path) as cache:
        assert len(cache) == 2 * 20 * 25
        hit = cache.get_many(["b-19-24"], "m")["b-19-24"]
        assert hit.record == {"id": "b", "i": 24} and hit.scores["clis_l"] == 24.0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_clis_score_keeps_clis_l_in_the_embedding_cache_file(tiny_models, tmp_path, monkeypatch):
    from clis.scorer import ScoreConfig, Scorer

    monkeypatch.setenv("CLIS_LAYOUT_CACHE", str(tmp_path / "not-this-one.sqlite"))
    shared = tmp_path / "shared.sqlite"
    settings = {"image_model": tiny_models["hf_clip"], "detector": "none", "embedding_cache": str(shared),
                "layout": {"llm": tiny_models["causal_lm"], "text_embedder": "none"}}
    first = Scorer(ScoreConfig.checked(settings))
    with Forwards(first.layout_scorer) as cold:
        first.layout_scores([layout(TEA), layout(SOFA)])
    first.close()
    with sqlite3.connect(shared) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"text_embeddings", "clis_l_scores_v2"} <= tables
    assert not (tmp_path / "not-this-one.sqlite").exists()
    second = Scorer(ScoreConfig.checked(settings))
    with Forwards(second.layout_scorer) as warm:
        scores = second.layout_scores([layout(TEA), layout(SOFA)])
    second.close()
    assert cold.count > 0 and warm.count == 0 and second.layout_scorer.cache_hits == 2
    assert set(scores) == {"tea", "sofa"} and all(v is not None for v in scores.values())

    monkeypatch.setenv("CLIS_LAYOUT_CACHE", "off")  # the off switch wins over --embedding-cache too
    off = Scorer(ScoreConfig.checked(settings))
    assert off.layout_scorer.cache is None
    off.close()


# --- clis bench corrupt, end to end -----------------------------------------------------------------


def _content(item: Layout) -> str:
    """What a layout says about geometry, written out here (not the cache's key)."""
    return json.dumps([item.width, item.height, [(o.id, o.label, list(map(float, o.bbox))) for o in item.objects],
                       [(r.subject, r.relation, r.object) for r in item.relations]])


@pytest.mark.skipif(not (EXAMPLES / "layouts.json").exists(), reason="examples not present")
def test_bench_corrupt_scores_each_distinct_layout_once_and_a_second_run_reuses_all(tiny_models, tmp_path,
                                                                                     monkeypatch):
    from PIL import Image

    from benchmarks.cli import app
    from benchmarks.corruptions import apply
    from clis.discovery import discover_candidates
    from clis.formats import load_layouts
    from clis.layout_score.llm import LogLikelihoodScorer

    # Expected: the clean layout of every example image plus its three shifted versions
    # (blur leaves the layout alone), told apart by content.
    layouts = load_layouts(EXAMPLES / "layouts.json")
    discovery = discover_candidates(EXAMPLES / "images", layouts)
    by_id = {item.id: item for item in layouts}
    expected = set()
    for layout_id, _ in discovery.pairs():
        clean = by_id[layout_id]
        expected.add(_content(clean))
        for level in (1, 2, 3):
            expected.add(_content(apply("shift", level, Image.new("RGB", (8, 8)), clean)[1]))

    planned, calls, forwards = [], [], []
    real_plan, real_score, real_logits = LayoutScorer._plan, LayoutScorer.score_layouts, LogLikelihoodScorer._logits_at

    def plan(self, item):
        planned.append(_content(item))
        return real_plan(self, item)

    def score_layouts(self, items, progress=None):
        calls.append(len(items))
        return real_score(self, items, progress=progress)

    def logits_at(self, ids, *args):
        forwards.append(ids.shape[0])
        return real_logits(self, ids, *args)

    monkeypatch.setattr(LayoutScorer, "_plan", plan)
    monkeypatch.setattr(LayoutScorer, "score_layouts", score_layouts)
    monkeypatch.setattr(LogLikelihoodScorer, "_logits_at", logits_at)
    config = tmp_path / "score.json"
    config.write_text(json.dumps({"layout": {"llm": tiny_models["causal_lm"], "text_embedder": "none"}}))

    def run(out: str) -> dict:
        planned.clear(), calls.clear(), forwards.clear()
        res = CliRunner().invoke(app, [
            "corrupt", str(EXAMPLES / "images"), str(EXAMPLES / "layouts.json"), "-o", str(tmp_path / out),
            "--image-model", tiny_models["hf_clip"], "--detector", "none", "--config", str(config),
            "--kinds", "shift,blur", "--bootstrap", "50", "--no-plot",
        ])
        assert res.exit_code == 0, res.output
        variants = (tmp_path / out / "variants.csv").read_text()
        return {"planned": list(planned), "calls": [n for n in calls if n], "forwards": len(forwards),
                "variants": variants}

    cold = run("cold")
    assert sorted(cold["planned"]) == sorted(expected)  # each distinct layout once, image variants reuse it
    assert len(cold["calls"]) == 1 and cold["forwards"] > 0  # one batched CLIS-L call for the whole study
    warm = run("warm")
    assert warm["planned"] == [] and warm["forwards"] == 0 and len(warm["calls"]) == 1
    assert warm["variants"] == cold["variants"]  # the same scores, every one of them

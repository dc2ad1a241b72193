"""CLIS-L LLM plausibility: verbalisation, batched log-likelihoods, calibration, the real model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from clis.layout import Layout
from clis.layout_score import LayoutScoreConfig, LayoutScorer
from clis.layout_score.llm import (
    LogLikelihoodScorer, pair_llm_score, resolve_aspects, sigmoid, size_aspect, verbalise_pair, vertical_aspect,
    with_article,
)
from clis.models import load_model

PAIRS_FILE = Path(__file__).parent / "data" / "layout_pairs.json"
CUP, TABLE = (0.42, 0.30, 0.12, 0.14), (0.10, 0.44, 0.80, 0.50)


def flip(box):
    x, y, w, h = box
    return (x, 1 - y - h, w, h)


def two_objects(layout_id, a, a_box, b, b_box, caption="", relation="on"):
    return Layout.model_validate({
        "id": layout_id, "caption": caption,
        "objects": [{"id": f"{a}-1", "label": a, "bbox": list(a_box)}, {"id": f"{b}-1", "label": b, "bbox": list(b_box)}],
        "relations": [{"subject": [f"{a}-1"], "relation": relation, "object": [f"{b}-1"]}],
    })


@pytest.fixture(scope="module")
def tiny_lm(tiny_models):
    return load_model(tiny_models["causal_lm"], "causal-lm")


@pytest.fixture(scope="module")
def tiny_scorer(tiny_models):
    return LayoutScorer(LayoutScoreConfig(llm=tiny_models["causal_lm"], pool=None, batch_size=4))


# --- verbalisation -----------------------------------------------------------------------------


def test_geometry_decides_the_statements():
    aspects = verbalise_pair("cup", "table", CUP, TABLE)
    assert [a.name for a in aspects] == ["vertical", "size"]
    assert aspects[0].statement == "The cup is above the table."
    assert aspects[0].comparisons[0].text == "The cup is above the table."
    assert aspects[0].comparisons[0].counterfactual == "The table is above the cup."
    # table area 0.4 vs cup 0.0168: the table is the bigger one
    assert aspects[1].statement == "The table is bigger than the cup."
    flipped = verbalise_pair("cup", "table", flip(CUP), flip(TABLE))
    assert flipped[0].statement == "The table is above the cup."
    assert flipped[1].statement == aspects[1].statement  # sizes did not change


def _words(sentence):
    # Only the sentence's initial capital is undone, so the labels' own capitals must survive in
    # both sentences; articles follow the label they precede ("an iPhone", "a TV stand").
    words = (sentence[:1].lower() + sentence[1:]).strip(".").split()
    return sorted(w for w in words if w not in ("a", "an"))


def test_statement_and_counterfactual_hold_the_same_words():
    for comparison in vertical_aspect("iPhone", "TV stand").comparisons:
        assert _words(comparison.text) == _words(comparison.counterfactual)
        # weights +1 / -1: a log-odds, not a sum
        assert sorted(w for w, _ in comparison.terms) == [-1.0, 1.0]
    sits = vertical_aspect("iPhone", "TV stand").comparisons[-1]
    assert (sits.text, sits.counterfactual) == ("An iPhone sits on a TV stand.", "A TV stand sits on an iPhone.")
    for comparison in size_aspect("table", "cup").comparisons:
        assert sum(w for w, _ in comparison.terms) == 0  # contrast: answer frequency cancels


def test_no_aspect_without_a_clear_difference():
    # centres 0.02 apart vertically (< 0.05), areas 0.04 vs 0.05 (ratio < 2): nothing to assert
    assert verbalise_pair("dog", "cat", (0.1, 0.40, 0.2, 0.2), (0.5, 0.42, 0.25, 0.2)) == []
    # the same label twice: a swap changes nothing
    assert verbalise_pair("cup", "cup", CUP, TABLE) == []


def test_articles():
    assert with_article("apple") == "an apple" and with_article("cup") == "a cup" and with_article("猫") == "a 猫"


# --- calibration -------------------------------------------------------------------------------


def test_calibration_hand_values():
    # A fake model that likes sentences with "cup" first by log(3): log-odds log 3 -> 100 * 3/4 = 75.
    def fake(queries):
        return [math.log(3) if cont.startswith("The cup") else 0.0 for _, cont in queries]

    aspect = vertical_aspect("cup", "table")
    resolve_aspects([aspect], fake)
    # Templates starting "The cup ...": 3 of 5 have +log 3, the other 2 ("There is a", "A cup sits")
    # start differently -> log-odds 0. Mean = 3 log(3) / 5 -> sigmoid = 3^0.6 / (1 + 3^0.6)
    expected = 100 * 3 ** 0.6 / (1 + 3 ** 0.6)
    assert aspect.score == pytest.approx(expected)
    # No preference at all -> exactly 50.
    neutral = vertical_aspect("cup", "table")
    resolve_aspects([neutral], lambda qs: [0.0] * len(qs))
    assert neutral.score == 50.0
    assert sigmoid(-800.0) == pytest.approx(0.0) and sigmoid(800.0) == 1.0  # no overflow


def test_pair_score_is_weighted_mean_of_aspects():
    a, b = vertical_aspect("cup", "table"), size_aspect("table", "cup")
    a.score, b.score = 90.0, 40.0
    assert pair_llm_score([a, b]) == pytest.approx(65.0)  # (90 + 40) / 2 with weights 1, 1
    assert pair_llm_score([]) is None


# --- batched log-likelihoods ---------------------------------------------------------------------


def reference_log_likelihood(loaded, context, continuation):
    """Unbatched full-vocabulary reference: sum of log-softmax of the continuation's tokens."""
    tok = loaded.processor
    context_ids = tok(context, add_special_tokens=True).input_ids
    ids = torch.tensor([context_ids + tok(continuation, add_special_tokens=False).input_ids])
    with torch.no_grad():
        log_probs = loaded.model(ids).logits[0].log_softmax(-1)
    return sum(float(log_probs[i - 1, ids[0, i]]) for i in range(len(context_ids), ids.shape[1]))


def test_batched_log_likelihoods_match_unbatched_reference(tiny_lm):
    queries = [("Question: Which is bigger?\nAnswer:", " table"), ("Facts:\n", "The cup is on the table."),
               ("Facts:\n", "A cat."), ("Facts:\n", "The sofa is above the cat on the table today.")]
    scorer = LogLikelihoodScorer(tiny_lm.model, tiny_lm.processor, batch_size=3)
    batched = scorer(queries)
    for query, value in zip(queries, batched):
        assert value == pytest.approx(reference_log_likelihood(tiny_lm, *query), abs=1e-4)
    assert all(v < 0 for v in batched)
    assert scorer.pending(queries) == 0  # cached


# --- whole layouts ----------------------------------------------------------------------------------


def test_vertical_twin_scores_are_complementary(tiny_scorer):
    # Same size, so only the vertical aspect applies; flipping swaps statement and counterfactual,
    # so the two LLM scores must add up to 100 whatever the model believes.
    a = two_objects("a", "cup", (0.4, 0.1, 0.2, 0.2), "table", (0.35, 0.5, 0.25, 0.25))
    b = two_objects("b", "cup", flip((0.4, 0.1, 0.2, 0.2)), "table", flip((0.35, 0.5, 0.25, 0.25)))
    ra, rb = tiny_scorer.score_layouts([a, b])
    assert [s["aspect"] for s in ra.pairs[0]["statements"]] == ["vertical"]
    assert ra.llm + rb.llm == pytest.approx(100.0, abs=1e-6)
    assert ra.clis_l == ra.llm and rb.geometry is None


def test_caption_does_not_decide(tiny_scorer):
    a = two_objects("a", "cup", CUP, "table", TABLE, caption="a cup on a table")
    b = two_objects("b", "cup", CUP, "table", TABLE, caption="a table on a cup, absurd")
    ra, rb = tiny_scorer.score_layouts([a, b])
    assert ra.llm == pytest.approx(rb.llm)


def test_one_object_layout_is_neutral(tiny_scorer):
    single = Layout.model_validate({"id": "solo", "objects": [{"id": "cat-1", "label": "cat", "bbox": [0.1, 0.1, 0.5, 0.5]}]})
    result = tiny_scorer.score_layouts([single])[0]
    assert result.clis_l == 50.0 and result.llm == 50.0 and result.pairs == []
    assert any("one object" in note for note in result.notes)


def test_unicode_labels(tiny_scorer):
    layout = two_objects("u", "猫", CUP, "ソファ", TABLE, relation="の上")
    result = tiny_scorer.score_layouts([layout])[0]
    assert 0.0 <= result.clis_l <= 100.0
    assert result.pairs[0]["statements"][0]["statement"] == "The 猫 is above the ソファ."
    json.dumps(result.to_dict(), ensure_ascii=False)


def test_many_objects_are_capped(tiny_models):
    scorer = LayoutScorer(LayoutScoreConfig(llm=tiny_models["causal_lm"], pool=None, max_pairs=3))
    objects = [{"id": f"o{i}", "label": f"thing{i}", "bbox": [0.1 * i, 0.1 * i, 0.1, 0.1]} for i in range(5)]
    result = scorer.score_layouts([Layout.model_validate({"id": "many", "objects": objects})])[0]
    assert len(result.pairs) == 3  # 10 pairs, the 3 nearest kept
    assert any("judged the 3" in note for note in result.notes)


class FirstLabelLogLikelihood:
    """Fake LM: a sentence's log-likelihood is the weight of the label it names first.

    Every vertical template names the higher object first, so a comparison's log-odds is
    ``weight[upper] - weight[lower]``.
    """

    def __init__(self, weights):
        self.weights = weights

    def __call__(self, queries, on_batch=None):
        return [next(self.weights[w] for w in text.lower().strip(".").split() if w in self.weights)
                for _, text in queries]

    def pending(self, queries):
        return 0


def test_pairs_named_in_relations_weigh_twice(tiny_scorer, monkeypatch):
    # cup and plate level and of equal size (no aspect); both above the table; areas 0.04 vs
    # 0.0625 (ratio < 2), so every judged pair has the vertical aspect only.
    layout = Layout.model_validate({"id": "w", "objects": [
        {"id": "cup-1", "label": "cup", "bbox": [0.1, 0.1, 0.2, 0.2]},
        {"id": "plate-1", "label": "plate", "bbox": [0.6, 0.1, 0.2, 0.2]},
        {"id": "table-1", "label": "table", "bbox": [0.3, 0.6, 0.25, 0.25]}],
        "relations": [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"]}]})
    fake = FirstLabelLogLikelihood({"cup": math.log(3), "plate": -math.log(3), "table": 0.0})
    monkeypatch.setattr(tiny_scorer, "log_likelihood", fake)
    result = tiny_scorer.score_layouts([layout])[0]
    by_pair = {(p["subject"], p["object"]): p["llm"] for p in result.pairs}
    # related cup/table: log-odds log 3 -> 100 * 3/4 = 75; unrelated plate/table: -log 3 -> 25
    assert by_pair[("cup-1", "table-1")] == pytest.approx(75.0)
    assert by_pair[("plate-1", "table-1")] == pytest.approx(25.0)
    assert by_pair[("cup-1", "plate-1")] is None
    # (2 * 75 + 1 * 25) / (2 + 1) = 175 / 3; equal weights would give 50
    assert result.llm == pytest.approx(175 / 3)


def test_statements_of_different_layouts_share_batches(tiny_models):
    # Two layouts with one vertical-only pair each: 5 templates x (statement, counterfactual)
    # = 10 distinct queries per layout, 20 in all. Batched together at 8 per batch that is
    # ceil(20 / 8) = 3 forward passes of sizes 8, 8, 4; layout by layout it would be 2 + 2 = 4.
    scorer = LayoutScorer(LayoutScoreConfig(llm=tiny_models["causal_lm"], pool=None, batch_size=8))
    layouts = [two_objects("a", "cup", (0.4, 0.1, 0.2, 0.2), "table", (0.35, 0.5, 0.25, 0.25)),
               two_objects("b", "dog", (0.4, 0.1, 0.2, 0.2), "sofa", (0.35, 0.5, 0.25, 0.25))]
    forwards, statements = [], []
    hook = scorer.llm_model.model.base_model.register_forward_hook(
        lambda module, args, kwargs, output: forwards.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        scorer.score_layouts(layouts, progress=lambda stage, done, total: stage == "statements"
                             and statements.append((done, total)))
    finally:
        hook.remove()
    assert sorted(forwards, reverse=True) == [8, 8, 4]
    assert statements == [(8, 20), (16, 20), (20, 20)]


# --- the real embedded model ------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_smollm2_prefers_plausible_layouts():
    pairs = json.loads(PAIRS_FILE.read_text(encoding="utf-8"))["pairs"]
    assert len(pairs) >= 30
    scorer = LayoutScorer(LayoutScoreConfig(llm="embedded:smollm2", pool=None))  # the LLM alone, batched
    layouts = [Layout.model_validate(p[key]) for p in pairs for key in ("plausible", "implausible")]
    results = scorer.score_layouts(layouts)
    wins = {"vertical_swap": [0, 0], "absurd_size": [0, 0]}
    for i, pair in enumerate(pairs):
        plausible, twin = results[2 * i], results[2 * i + 1]
        wins[pair["kind"]][0] += plausible.clis_l > twin.clis_l
        wins[pair["kind"]][1] += 1
    correct = sum(w for w, _ in wins.values())
    accuracy = correct / len(pairs)
    print(f"\nCLIS-L with embedded:smollm2: plausible layout preferred in {correct}/{len(pairs)} pairs "
          f"({accuracy:.1%}); " + ", ".join(f"{k}: {w}/{n}" for k, (w, n) in wins.items()))
    assert accuracy >= 0.75

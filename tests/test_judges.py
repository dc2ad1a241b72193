"""The vqa and acp judges (clis.image_score.judges): formulas, prompts, failures, cache.

The VLM is a scripted stand-in (any object with the clis.vlm.base.VLMClient methods), so each
test knows every answer and checks the numbers against the documented formulas by hand; the
rater is the real clis Rater, talking to the local fake OpenAI-compatible server.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

from clis.image_score.config import ImageScoreConfig
from clis.image_score.detection import Detections
from clis.image_score.engine import Candidate
from clis.image_score.judges import ACPJudge, AnswerCache, CachedVLM, VQAJudge
from clis.image_score.judges.rater import Rater, parse_rating
from clis.layout import Layout
from clis.vlm.base import RequestFailed

from pipeline_helpers import ChatServer

TWO_OBJECTS = Layout.model_validate({
    "id": "desk", "caption": "a red cup next to a blue book", "objects": [
        {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.0, 0.0, 0.5, 1.0]},
        {"id": "book-1", "label": "book", "attributes": ["blue"], "bbox": [0.5, 0.0, 0.5, 1.0]},
    ]})


def red_blue(width: int = 80, height: int = 40) -> Image.Image:
    """Left half red, right half blue: a crop's colour tells which box it came from."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image


class ScriptedVLM:
    """Answers from ``yes(prompt)`` / ``describe(prompt, image)``; records every request."""

    grounding = "qwen2"

    def __init__(self, yes=None, describe=None):
        self.yes, self.describe_fn = yes, describe
        self.requests = []

    def yes_probability(self, requests):
        self.requests += requests
        return [self.yes(r.prompt, r.image) for r in requests]

    def generate(self, requests, seed):
        self.requests += requests
        return [self.describe_fn(r.prompt, r.image) for r in requests]

    def describe(self):
        return {"kind": "scripted"}

    def close(self):
        pass


def mean_colour(image: Image.Image) -> tuple[float, float, float]:
    from PIL import ImageStat

    return tuple(ImageStat.Stat(image.convert("RGB")).mean)


def vqa_answers(prompt: str, image: Image.Image) -> float:
    if prompt.startswith("Does this image show"):
        return 0.7  # whole image
    if "region" in prompt:
        return 0.9 if "red cup" in prompt else 0.6  # in context
    return 0.5 if "red cup" in prompt else 0.25  # crop


def score(judge, layout=TWO_OBJECTS, image=None):
    return next(judge.score_candidates([Candidate(image or red_blue(), layout)]))


def test_vqa_numbers_follow_the_documented_formula():
    record = score(VQAJudge(CachedVLM(ScriptedVLM(yes=vqa_answers), None)))
    cup, book = record["instances"]
    # S_k = (0.8 * 100 P_context + 0.2 * 100 P_crop) / 1.0 (no detector)
    assert cup["score"] == pytest.approx(0.8 * 90 + 0.2 * 50)
    assert book["score"] == pytest.approx(0.8 * 60 + 0.2 * 25)
    assert (cup["context"], cup["crop"], cup["vqa"]) == (90.0, 50.0, {"context": 0.9, "crop": 0.5})
    assert record["global"] == 70.0 and record["judge"] == {"name": "vqa", "global": {"p_yes": 0.7}}
    # CLIS-I = 0.5 * G + 0.5 * mean S_k
    assert record["clis_i"] == pytest.approx(0.5 * 70 + 0.5 * (82 + 53) / 2)
    assert record["clis"] == record["clis_i"] and record["error"] is None
    assert cup["region"] is None and cup["grounding"] is None and cup["detection"] is None


def test_weights_are_configurable_and_a_layout_without_caption_has_no_global_question():
    vlm = ScriptedVLM(yes=vqa_answers)
    config = ImageScoreConfig.model_validate({"weights": {"context": 1.0, "crop": 3.0, "instances": 1.0}})
    no_caption = TWO_OBJECTS.model_copy(update={"caption": ""})
    record = score(VQAJudge(CachedVLM(vlm, None), config), no_caption)
    assert [i["score"] for i in record["instances"]] == pytest.approx([(90 + 3 * 50) / 4, (60 + 3 * 25) / 4])
    assert record["global"] is None and record["judge"]["global"] is None
    assert record["clis_i"] == pytest.approx(((90 + 150) / 4 + (60 + 75) / 4) / 2)
    assert not any(r.prompt.startswith("Does this image show") for r in vlm.requests)
    assert len(vlm.requests) == 4  # 2K questions for K = 2 objects, no caption


def test_prompts_carry_formatted_boxes_and_the_crops_show_their_box():
    vlm = ScriptedVLM(yes=vqa_answers)
    layout = Layout.model_validate({"id": "b", "caption": "c", "objects": [
        {"id": "o", "label": "book", "attributes": ["blue"], "bbox": [0.6, 0.2, 0.3, 0.4]}]})
    score(VQAJudge(CachedVLM(vlm, None)), layout)
    context = [r for r in vlm.requests if "region" in r.prompt]
    crops = [r for r in vlm.requests if r.prompt.startswith("Does this picture")]
    # 0.6 * 1000 = 600, 0.2 * 1000 = 200, (0.6 + 0.3) * 1000 = 900, (0.2 + 0.4) * 1000 = 600
    assert "<|box_start|>(600,200),(900,600)<|box_end|>" in context[0].prompt
    assert "{" not in context[0].prompt.replace("<|box_start|>", "")  # no unformatted placeholder (ACP's bug)
    assert context[0].image.size == (80, 40)
    red, green, blue = mean_colour(crops[0].image)
    assert blue > 200 and red < 20  # the crop of a box in the blue half
    # x: 48..72 px, widened by 10% of 24 px per side to 45.6..74.4, rounded outwards: 45..75;
    # y: 8..24 px, widened by 1.6 px per side to 6.4..25.6: 6..26
    assert crops[0].image.size == (30, 20)


def test_plain_grounding_setting_replaces_the_models_own():
    vlm = ScriptedVLM(yes=vqa_answers)
    config = ImageScoreConfig.model_validate({"judge": {"name": "vqa", "grounding": "qwen"}})
    score(VQAJudge(CachedVLM(vlm, None), config))
    assert any("<box>(0,0),(500,1000)</box>" in r.prompt for r in vlm.requests)


def test_a_failed_request_makes_its_candidate_an_error_record_and_the_run_goes_on():
    def yes(prompt, image):
        # The book's crop fails, but only in the first image: its crop is 36..80 px, 44 px wide
        # (40 px plus 10% per side, clipped at the right edge); in the second it is 66 px wide.
        if image.width == 44 and "blue book" in prompt and prompt.startswith("Does this picture"):
            return RequestFailed("HTTP 500 from the server (after 4 attempts)")
        return vqa_answers(prompt, image)

    judge = VQAJudge(CachedVLM(ScriptedVLM(yes=yes), None))
    records = list(judge.score_candidates([Candidate(red_blue(), TWO_OBJECTS), Candidate(red_blue(120, 40), TWO_OBJECTS)]))
    assert records[0]["error"] is not None and records[0]["clis"] is None
    assert "object 'book-1' (crop)" in records[0]["error"] and "HTTP 500" in records[0]["error"]
    assert records[1]["error"] is None and records[1]["clis"] is not None


class FakeDetector:
    """Finds every query at the one box ``box`` (normalised xyxy) with score 0.9."""

    def __init__(self, box):
        self.box = box

    def detect(self, images, queries):
        return [{q: Detections(torch.tensor([self.box]), torch.tensor([0.9])) for q in qs} for qs in queries]

    def check_queries(self, queries):
        pass


def test_the_detector_term_joins_the_vlm_terms_with_its_weight():
    layout = TWO_OBJECTS.model_copy(update={"objects": TWO_OBJECTS.objects[:1]})
    # The cup's box is [0, 0, 0.5, 1]; the detection [0, 0, 0.25, 1] covers half of it: IoU 0.5.
    judge = VQAJudge(CachedVLM(ScriptedVLM(yes=vqa_answers), None), detector=FakeDetector([0.0, 0.0, 0.25, 1.0]))
    cup = score(judge, layout)["instances"][0]
    assert cup["detection"]["iou"] == pytest.approx(0.5)
    assert cup["score"] == pytest.approx((0.8 * 90 + 0.2 * 50 + 0.4 * 50) / 1.4)


def rating_server(ratings: dict[str, object]):
    """A rater server: the answer is chosen by the description in the prompt."""

    def answer(body):
        prompt = body["messages"][-1]["content"]
        description = re.search(r"Description of the picture: (.*)", prompt).group(1)
        reply = ratings[description]
        return reply(body) if callable(reply) else reply

    return ChatServer(answer)


def acp_descriptions(prompt: str, image: Image.Image) -> str:
    if prompt.startswith("Describe this image"):
        return "whole"
    return "in context" if "region" in prompt else "crop"


def json_rating(score, note="because"):
    return json.dumps({"score": score, "explanation": note})


def test_acp_rates_each_description_against_its_intended_text():
    layout = TWO_OBJECTS.model_copy(update={"objects": TWO_OBJECTS.objects[:1]})
    with rating_server({"whole": json_rating(4), "in context": json_rating(5), "crop": json_rating(2, "odd")}) as server:
        rater = Rater(server.url, model="judge-llm", concurrency=2)
        vlm = ScriptedVLM(describe=acp_descriptions)
        record = score(ACPJudge(CachedVLM(vlm, None), rater), layout)
    # G = 20 * 4; S = 0.8 * 20 * 5 + 0.2 * 20 * 2; CLIS-I = 0.5 G + 0.5 S
    assert record["global"] == 80.0
    cup = record["instances"][0]
    assert (cup["context"], cup["crop"], cup["score"]) == (100.0, 40.0, pytest.approx(88.0))
    assert record["clis_i"] == pytest.approx(84.0)
    assert cup["acp"]["crop"] == {"description": "crop", "rating": 2.0, "explanation": "odd"}
    assert record["judge"]["global"]["description"] == "whole"
    intended = {re.search(r"Description of the picture: (.*)", r["body"]["messages"][-1]["content"]).group(1):
                re.search(r"made from: (.*)", r["body"]["messages"][-1]["content"]).group(1) for r in server.requests}
    assert intended == {"whole": layout.caption, "in context": "red cup", "crop": "red cup"}
    assert all(r["body"]["model"] == "judge-llm" for r in server.requests)
    assert len(vlm.requests) == 3 and len(server.requests) == 3  # 1 + 2K VLM calls and 1 + 2K rater calls, K = 1


def test_an_unparsable_rating_is_asked_again_with_a_new_seed_then_fails_its_candidate():
    layout = TWO_OBJECTS.model_copy(update={"objects": TWO_OBJECTS.objects[:1]})
    crop_answers = iter(["I think it is good", json_rating(3)])
    with rating_server({"whole": json_rating(4), "in context": json_rating(5),
                        "crop": lambda body: next(crop_answers)}) as server:
        record = score(ACPJudge(CachedVLM(ScriptedVLM(describe=acp_descriptions), None), Rater(server.url)), layout)
        crop_seeds = [r["body"]["seed"] for r in server.requests if "picture: crop" in r["body"]["messages"][-1]["content"]]
    assert record["error"] is None and record["instances"][0]["crop"] == 60.0
    assert len(crop_seeds) == 2 and crop_seeds[0] != crop_seeds[1]

    with rating_server({"whole": json_rating(4), "in context": "{\"score\": 9}", "crop": json_rating(1)}) as server:
        record = score(ACPJudge(CachedVLM(ScriptedVLM(describe=acp_descriptions), None), Rater(server.url)), layout)
    assert record["clis"] is None and "in context" in record["error"]
    assert "not a 0-5 JSON score after 2 tries" in record["error"]


def test_parse_rating_accepts_only_scores_on_the_scale():
    assert parse_rating('{"score": 0, "explanation": "no"}') == (0.0, "no")
    assert parse_rating('noise {"a": 1} then {"score": 2.5}') == (2.5, None)
    for text in ('{"score": -1}', '{"score": 6}', '{"score": true}', '{"score": "4"}', "{broken", ""):
        assert parse_rating(text) is None, text


def test_answers_are_cached_so_a_second_run_asks_nothing(tmp_path):
    layout = TWO_OBJECTS.model_copy(update={"objects": TWO_OBJECTS.objects[:1]})
    ratings = {"whole": json_rating(4), "in context": json_rating(5), "crop": json_rating(2)}
    records = []
    with rating_server(ratings) as server:  # one server: its URL is part of the rater's identity
        for _ in range(2):
            cache = AnswerCache(tmp_path / "answers.sqlite")
            vlm = ScriptedVLM(describe=acp_descriptions)
            judge = ACPJudge(CachedVLM(vlm, cache), Rater(server.url, cache=cache), answer_cache=cache)
            before = len(server.requests)
            records.append(score(judge, layout))
            asked = (len(vlm.requests), len(server.requests) - before, judge.stats())
            judge.close()
            if len(records) == 1:
                assert asked[:2] == (3, 3)
    assert asked[:2] == (0, 0)
    assert asked[2] == {"vlm_cached": 3, "vlm_asked": 0, "rater_cached": 3, "rater_asked": 0}
    assert records[0] == records[1]


def test_a_cached_answer_is_keyed_by_the_image_pixels(tmp_path):
    cache = AnswerCache(tmp_path / "answers.sqlite")
    vlm = ScriptedVLM(yes=vqa_answers)
    judge = VQAJudge(CachedVLM(vlm, cache))
    score(judge)
    first = len(vlm.requests)
    score(judge, image=red_blue().transpose(Image.Transpose.FLIP_LEFT_RIGHT))  # same size, other pixels
    assert len(vlm.requests) == 2 * first
    cache.close()


def test_the_guided_rater_picks_the_most_likely_digit(tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clis.image_score.judges.rater import rating_messages

    rater = Rater(tiny_models["causal_lm"])
    assert rater.mode == "guided"
    [rating] = rater.rate_many([("a red cup", "a cup, red")], seed=0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["causal_lm"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["causal_lm"]).eval()
    text = tokenizer.apply_chat_template(rating_messages("a red cup", "a cup, red"), add_generation_prompt=True,
                                         tokenize=False) + '{"score": '
    with torch.no_grad():
        logits = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
    digits = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(6)]
    assert rating.score == float(int(torch.argmax(logits[digits])))
    assert rating.explanation is None

"""``clis score --judge vqa|acp`` end to end: a served VLM (the local fake server), an in-process
tiny VLM, the manifest, --resume, the answer cache, and pick / bench compare on judge scores."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from clis.formats import load_layouts
from pipeline_helpers import HANG_UP, ChatServer, run_cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IMAGES, LAYOUTS = EXAMPLES / "images", EXAMPLES / "layouts.json"
TOP_KEYS = ["layout_id", "image", "clis", "clis_i", "clis_l", "global", "instances", "error", "layout_sha256", "judge"]


def candidates_and_objects() -> tuple[int, int]:
    """How many candidate images the examples have, and how many objects they hold in all."""
    layouts = {layout.id: layout for layout in load_layouts(LAYOUTS)}
    images = [p for p in IMAGES.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    from clis.discovery import discover_candidates

    found = discover_candidates(IMAGES, list(layouts.values()))
    pairs = list(found.pairs())
    assert len(pairs) == len(images)
    return len(pairs), sum(len(layouts[layout_id].objects) for layout_id, _ in pairs)


def request_image(body: dict) -> Image.Image:
    parts = body["messages"][0]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def request_prompt(body: dict) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else next(p["text"] for p in content if p["type"] == "text")


def p_yes_for(prompt: str) -> float:
    """The scripted P(Yes): a function of the question only, so the test can recompute it."""
    return 0.8 if prompt.startswith("Does this image") else 0.6 if "region" in prompt else 0.3


def logprobs_reply(p: float) -> dict:
    top = [{"token": "Yes", "logprob": math.log(p)}, {"token": "No", "logprob": math.log(1 - p)}]
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Yes"},
                         "logprobs": {"content": [{"token": "Yes", "logprob": math.log(p), "top_logprobs": top}]}}]}


def judge_server(seen: list | None = None, fail=lambda body: None, delay: float = 0.0):
    """One server for both models: a VLM request has an image part, a rater request is text."""

    def answer(body):
        time.sleep(delay)
        failure = fail(body)
        if failure is not None:
            return failure
        content = body["messages"][-1]["content"]
        if isinstance(content, str):  # the rater
            return json.dumps({"score": 3, "explanation": "fine"})
        image = request_image(body)
        if seen is not None:
            seen.append((request_prompt(body), image.size))
        if body.get("logprobs"):
            assert body["max_tokens"] == 1 and body["top_logprobs"] >= 2
            return logprobs_reply(p_yes_for(request_prompt(body)))
        return "a thing in a place"

    return ChatServer(answer)


def score_args(server, out: Path, *extra: str, judge: str = "vqa") -> list[str]:
    return ["score", str(IMAGES), str(LAYOUTS), "--out", str(out), "--judge", judge, "--vlm", server.url,
            "--vlm-model", "tiny-vlm", "--detector", "none", "--no-layout-score", "-q", *extra]


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_vqa_on_a_served_vlm_scores_every_candidate_with_the_documented_numbers(tmp_path, capsys):
    seen: list = []
    with judge_server(seen, delay=0.01) as server:  # slow enough for the client's requests to overlap
        code, output = run_cli(score_args(server, tmp_path / "scores.jsonl", "--concurrency", "3"), capsys)
    assert server.max_in_flight == 3
    assert code == 0, output
    records = read_records(tmp_path / "scores.jsonl")
    n_candidates, n_objects = candidates_and_objects()
    assert len(records) == n_candidates and len(seen) == n_candidates + 2 * n_objects  # 1 + 2K per candidate
    for record in records:
        assert list(record) == TOP_KEYS and record["error"] is None
        # G = 100 * 0.8; S_k = 0.8 * 60 + 0.2 * 30 = 54; CLIS-I = 0.5 * 80 + 0.5 * 54
        assert record["global"] == pytest.approx(80.0)
        assert all(i["score"] == pytest.approx(54.0) for i in record["instances"])
        assert record["clis"] == pytest.approx(67.0) and record["clis_l"] is None
    manifest = json.loads((tmp_path / "scores.jsonl.manifest.json").read_text())
    judge = manifest["models"]["judge"]
    assert judge["name"] == "vqa" and judge["vlm"]["model"] == "tiny-vlm" and judge["grounding"] == "plain"
    assert judge["prompts"]["ask_box"].count("{box}") == 1
    assert manifest["settings"]["judge"]["name"] == "vqa" and manifest["models"]["image_model"] is None
    assert manifest["weights"]["clis_i"] == {"global": 0.5, "instances": 0.5, "detection": 0.4, "context": 0.8,
                                             "crop": 0.2}
    # Boxes are given on the 0..1000 grid: the first example's first box.
    first = load_layouts(LAYOUTS)[0].objects[0]
    x, y, w, h = first.bbox
    box = f"[{round(x * 1000)}, {round(y * 1000)}, {round((x + w) * 1000)}, {round((y + h) * 1000)}]"
    assert any(box in prompt and first.phrase in prompt for prompt, _ in seen)


def test_resume_and_reruns_ask_nothing_twice_and_resume_refuses_another_judge(tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    with judge_server() as server:
        assert run_cli(score_args(server, out), capsys)[0] == 0
        first = read_records(out)
        asked = len(server.requests)
        out.write_text("".join(json.dumps(r) + "\n" for r in first[:3]))  # as if cut short after 3 candidates
        code, output = run_cli(score_args(server, out, "--resume"), capsys)
        assert code == 0, output
        assert len(server.requests) == asked  # every answer came from the cache
        assert read_records(out) == first
        code, output = run_cli(score_args(server, out, "--resume", judge="acp"), capsys)
    assert code == 2 and "--judge vqa" in output and "--judge acp" in output and len(output.strip().splitlines()) == 1
    code, output = run_cli(["score", str(IMAGES), str(LAYOUTS), "--out", str(out), "--resume", "--detector", "none",
                            "--no-layout-score", "-q", "--image-model", "/nonexistent"], capsys)
    assert code == 2 and "judge" in output


def test_without_the_cache_every_question_is_asked_again(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLIS_JUDGE_CACHE", "off")
    with judge_server() as server:
        assert run_cli(score_args(server, tmp_path / "a.jsonl"), capsys)[0] == 0
        once = len(server.requests)
        assert run_cli(score_args(server, tmp_path / "b.jsonl"), capsys)[0] == 0
    assert len(server.requests) == 2 * once


def test_a_dropped_connection_is_retried_and_a_failing_request_becomes_an_error_record(tmp_path, capsys):
    dropped = set()

    def fail(body):
        prompt = request_prompt(body)
        if isinstance(body["messages"][-1]["content"], str):
            return None
        if prompt not in dropped:
            dropped.add(prompt)
            return HANG_UP  # every distinct question's first try is cut off
        if "helmet" in prompt and "region" in prompt:
            return (500, "out of memory")
        return None

    with judge_server(fail=fail) as server:
        code, output = run_cli(score_args(server, tmp_path / "scores.jsonl"), capsys)
    records = read_records(tmp_path / "scores.jsonl")
    failed = [r for r in records if r["error"]]
    assert code == 1 and len(failed) == 1 and failed[0]["layout_id"] == "astronaut"
    assert "helmet-1" in failed[0]["error"] and "500" in failed[0]["error"]
    assert all(r["clis"] is not None for r in records if not r["error"])


def test_acp_on_served_models_then_pick_and_bench_compare_read_its_scores(tmp_path, capsys):
    with judge_server() as server:
        code, output = run_cli(score_args(server, tmp_path / "a.jsonl", "--rater", server.url, "--rater-model", "r",
                                          judge="acp"), capsys)
        assert code == 0, output
        rater_requests = [r for r in server.requests if isinstance(r["body"]["messages"][-1]["content"], str)]
    records = read_records(tmp_path / "a.jsonl")
    # every rating is 3: each term is 60, and so is every score
    assert all(r["clis"] == pytest.approx(60.0) for r in records)
    n_candidates, n_objects = candidates_and_objects()
    assert len(rater_requests) == n_candidates + 2 * n_objects
    instance = records[0]["instances"][0]
    assert instance["acp"]["context"]["description"] == "a thing in a place" and instance["acp"]["crop"]["rating"] == 3
    assert any(re.search(r"made from: " + re.escape(instance["phrase"]) + r"\n", request_prompt(r["body"]))
               for r in rater_requests)
    code, output = run_cli(["pick", str(IMAGES), str(LAYOUTS), "--scores", str(tmp_path / "a.jsonl"), "--out",
                            str(tmp_path / "dataset"), "--min-instance", "50"], capsys)
    assert code == 0, output
    code, output = run_cli(["bench", "compare", f"a={tmp_path / 'a.jsonl'}", f"b={tmp_path / 'a.jsonl'}", "-o",
                            str(tmp_path / "compare"), "--bootstrap", "100", "--no-plot"], capsys)
    assert code == 0, output
    assert json.loads((tmp_path / "compare" / "result.json").read_text())["study"] == "compare"


def test_flags_of_another_judge_are_refused_in_one_line(tmp_path, capsys):
    code, output = run_cli(["score", str(IMAGES), str(LAYOUTS), "--out", str(tmp_path / "s.jsonl"),
                            "--rater", "http://127.0.0.1:9/v1", "--judge", "vqa"], capsys)
    assert code == 2 and "--rater is read only with --judge acp" in output
    code, output = run_cli(["score", str(IMAGES), str(LAYOUTS), "--out", str(tmp_path / "s.jsonl"),
                            "--vlm", "http://127.0.0.1:9/v1"], capsys)
    assert code == 2 and "--vlm is read only with --judge vqa or --judge acp" in output
    code, output = run_cli(["score", str(IMAGES), str(LAYOUTS), "--out", str(tmp_path / "s.jsonl"),
                            "--judge", "gpt"], capsys)
    assert code == 2 and "--judge 'gpt'" in output and len(output.strip().splitlines()) == 1


def test_an_unreachable_vlm_server_is_one_line(tmp_path, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, output = run_cli(["score", str(IMAGES), str(LAYOUTS), "--out", str(tmp_path / "s.jsonl"), "--judge", "vqa",
                            "--vlm", f"http://127.0.0.1:{port}/v1", "--detector", "none", "--no-layout-score", "-q"],
                           capsys)
    assert code == 2 and "Traceback" not in output and len(output.strip().splitlines()) == 1


@pytest.mark.parametrize("judge", ["vqa", "acp"])
def test_in_process_tiny_vlm_end_to_end(tmp_path, capsys, tiny_models, judge):
    extra = ["--rater", tiny_models["causal_lm"]] if judge == "acp" else []
    code, output = run_cli(["score", str(IMAGES), str(LAYOUTS), "--out", str(tmp_path / "s.jsonl"), "--judge", judge,
                            "--vlm", tiny_models["vlm"], "--detector", "none", "--no-layout-score", "-q", *extra],
                           capsys)
    assert code == 0, output
    records = read_records(tmp_path / "s.jsonl")
    assert len(records) == candidates_and_objects()[0]
    for record in records:
        assert record["error"] is None and 0 <= record["clis"] <= 100
        for instance in record["instances"]:
            if judge == "vqa":
                assert 0 < instance["vqa"]["context"] < 1 and instance["context"] == pytest.approx(
                    100 * instance["vqa"]["context"], abs=1e-3)
            else:
                assert instance["acp"]["crop"]["rating"] in (0, 1, 2, 3, 4, 5)
                assert isinstance(instance["acp"]["crop"]["description"], str)
    manifest = json.loads((tmp_path / "s.jsonl.manifest.json").read_text())
    assert manifest["models"]["judge"]["vlm"]["kind"] == "transformers"
    if judge == "acp":
        assert manifest["models"]["judge"]["rater"]["mode"] == "guided"


def test_embedding_cache_file_also_keeps_the_judge_answers(tmp_path, capsys):
    import sqlite3

    cache = tmp_path / "shared.sqlite"
    with judge_server() as server:
        assert run_cli(score_args(server, tmp_path / "a.jsonl", "--embedding-cache", str(cache)), capsys)[0] == 0
        asked = len(server.requests)
        assert run_cli(score_args(server, tmp_path / "b.jsonl", "--embedding-cache", str(cache)), capsys)[0] == 0
        assert len(server.requests) == asked
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM judge_answers_v1").fetchone()[0] == asked


def test_each_crop_request_carries_exactly_its_box_and_the_others_the_whole_image(tmp_path, capsys):
    import math as m

    layout = next(lay for lay in load_layouts(LAYOUTS) if lay.id == "horse")
    (tmp_path / "one").mkdir()
    source = next(p for p in IMAGES.iterdir() if p.stem == "horse")
    (tmp_path / "one" / source.name).write_bytes(source.read_bytes())
    (tmp_path / "layouts.json").write_text(json.dumps([json.loads(layout.model_dump_json(by_alias=True, exclude_none=True))]))
    bodies = []
    with judge_server() as server:
        code, output = run_cli(["score", str(tmp_path / "one"), str(tmp_path / "layouts.json"), "--out",
                                str(tmp_path / "s.jsonl"), "--judge", "vqa", "--vlm", server.url, "--detector", "none",
                                "--no-layout-score", "-q"], capsys)
        bodies = [r["body"] for r in server.requests]
    assert code == 0, output
    full = Image.open(source).convert("RGB")
    for obj in layout.objects:
        # The box widened by 10% of its side on each side, rounded outwards, clipped to the image.
        x, y, w, h = obj.bbox
        W, H = full.size
        cx, cy, hw, hh = (x + w / 2) * W, (y + h / 2) * H, max(w * W * 1.2, 16) / 2, max(h * H * 1.2, 16) / 2
        window = (max(0, m.floor(cx - hw)), max(0, m.floor(cy - hh)), min(W, m.ceil(cx + hw)), min(H, m.ceil(cy + hh)))
        [crop_body] = [b for b in bodies if request_prompt(b) == f'Does this picture show "{obj.phrase}"? Answer yes or no.']
        assert request_image(crop_body).tobytes() == full.crop(window).tobytes()
        assert request_image(crop_body).size == full.crop(window).size
    for body in bodies:
        if not request_prompt(body).startswith("Does this picture"):
            assert request_image(body).tobytes() == full.tobytes()
    assert len(bodies) == 1 + 2 * len(layout.objects)


def test_bench_compare_scores_a_folder_with_the_judge_of_its_config(tmp_path, capsys):
    with judge_server() as server:
        config = tmp_path / "judge.json"
        config.write_text(json.dumps({"judge": {"name": "vqa", "vlm": server.url, "vlm_model": "m"},
                                      "detector": "none", "layout_score": False}))
        code, output = run_cli(["bench", "compare", f"a={IMAGES}", "--layouts", str(LAYOUTS), "-o", str(tmp_path / "c"),
                                "--config", str(config), "--bootstrap", "100", "--no-plot"], capsys)
        assert code == 0, output
        assert server.requests
    records = read_records(tmp_path / "c" / "a" / "scores.jsonl")
    assert records and all(r["judge"]["name"] == "vqa" and r["clis"] == pytest.approx(67.0) for r in records)

"""Bad input and interruptions with the VLM judges: one line, exit 2, nothing the user gave lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline_helpers import ChatServer, run_cli
from test_judge_cli import IMAGES, LAYOUTS, judge_server

BASE = ["--detector", "none", "--no-layout-score", "-q"]


def one_line_exit_2(code: int, output: str) -> str:
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_the_answer_cache_may_not_be_an_output_or_an_input(tmp_path, capsys, monkeypatch):
    out = tmp_path / "scores.jsonl"
    config = tmp_path / "judge.json"
    config.write_text(json.dumps({"judge": {"name": "vqa", "vlm": "http://127.0.0.1:9/v1", "cache": str(out)}}))
    line = one_line_exit_2(*run_cli(["score", str(IMAGES), str(LAYOUTS), "--out", str(out), "--config", str(config),
                                     *BASE], capsys))
    assert "judge answer cache" in line and not out.exists()
    layouts_copy = tmp_path / "layouts.json"
    layouts_copy.write_bytes(LAYOUTS.read_bytes())
    monkeypatch.setenv("CLIS_JUDGE_CACHE", str(layouts_copy))
    line = one_line_exit_2(*run_cli(["score", str(IMAGES), str(layouts_copy), "--out", str(out), "--judge", "vqa",
                                     "--vlm", "http://127.0.0.1:9/v1", *BASE], capsys))
    assert "judge answer cache" in line and layouts_copy.read_bytes() == LAYOUTS.read_bytes()


@pytest.mark.parametrize("args, expected", [
    (["--judge", "vqa", "--weight", "context=0", "--weight", "crop=0"], "context + crop must be > 0"),
    (["--weight", "region=0", "--weight", "grounding=0"], "region + grounding must be > 0"),
    (["--judge", "vqa", "--weight", "region=0.5"], "--weight region=... is read only with --judge clip"),
    (["--weight", "crop=0.5"], "--weight crop=... is read only with --judge vqa or --judge acp"),
    (["--judge", "vqa", "--image-model", "hf:x/y"], "--image-model is read only with --judge clip"),
    (["--judge", "acp", "--rater", "embedded:smollm2", "--rater-model", "m"], "--rater-model names the model on a server"),
])
def test_weights_and_flags_the_judge_cannot_use_are_refused(tmp_path, capsys, args, expected):
    vlm = ["--vlm", "http://127.0.0.1:9/v1"] if "--judge" in args else []
    line = one_line_exit_2(*run_cli(["score", str(IMAGES), str(LAYOUTS), "--out", str(tmp_path / "s.jsonl"), *BASE,
                                     *vlm, *args], capsys))
    assert expected in line


@pytest.mark.parametrize("judge, expected", [
    ('"vqa"', "judge: expected a table of judge settings"),
    ('{name = "acp", seed = 18446744073709551616}', "judge.seed"),
    ('{name = "vqa", temperature = nan}', "not a finite number"),
])
def test_bad_judge_settings_in_a_config_file(tmp_path, capsys, judge, expected):
    config = tmp_path / "c.toml"
    config.write_text(f"judge = {judge}\n")
    line = one_line_exit_2(*run_cli(["score", str(IMAGES), str(LAYOUTS), "--out", str(tmp_path / "s.jsonl"),
                                     "--config", str(config), "--vlm", "http://127.0.0.1:9/v1", *BASE], capsys))
    assert expected in line


def test_ctrl_c_with_requests_in_flight_exits_at_once(tmp_path):
    release = threading.Event()
    started = threading.Event()

    def answer(body):
        started.set()
        release.wait(60)  # a server that takes a minute per answer
        return "late"

    env = {**os.environ, "CLIS_JUDGE_CACHE": "off"}
    with ChatServer(answer) as server:
        process = subprocess.Popen(
            [sys.executable, "-c", "from clis.cli import main; main()", "score", str(IMAGES), str(LAYOUTS), "--out", str(tmp_path / "s.jsonl"),
             "--judge", "vqa", "--vlm", server.url, *BASE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert started.wait(60)
            time.sleep(0.5)
            process.send_signal(signal.SIGINT)
            began = time.monotonic()
            _, err = process.communicate(timeout=30)
            waited = time.monotonic() - began
        finally:
            release.set()
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130, err
    assert waited < 10  # not the minute the answers in flight would take
    manifest = json.loads((tmp_path / "s.jsonl.manifest.json").read_text())
    assert manifest["run"]["status"] == "interrupted"


def test_a_failing_local_rater_fails_its_rating_not_the_run(tiny_models, monkeypatch):
    from clis.image_score.judges.rater import Rater
    from clis.vlm.base import RequestFailed

    rater = Rater(tiny_models["causal_lm"])

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(rater.backend.loaded.model, "forward", out_of_memory)
    [rating] = rater.rate_many([("a cup", "a cup")], seed=0)
    assert isinstance(rating, RequestFailed) and "out of memory" in rating.reason


def test_the_answer_cache_tells_precisions_apart(tiny_models, tmp_path):
    from PIL import Image

    from clis.image_score.judges.answers import AnswerCache, CachedVLM
    from clis.vlm.base import VLMRequest
    from clis.vlm.transformers_vlm import TransformersVLM

    cache = AnswerCache(tmp_path / "a.sqlite")
    request = [VLMRequest(Image.new("RGB", (32, 32), "red"), "Is it red?")]
    full = CachedVLM(TransformersVLM(tiny_models["vlm"]), cache)
    full.yes_probability(request)
    half = CachedVLM(TransformersVLM(tiny_models["vlm"], dtype="bfloat16"), cache)
    half.yes_probability(request)
    again = CachedVLM(TransformersVLM(tiny_models["vlm"]), cache)
    again.yes_probability(request)
    assert (full.asked, half.asked, again.asked, again.hits) == (1, 1, 0, 1)
    cache.close()


def test_the_python_api_gives_acp_no_detector_unless_asked(tiny_models):
    from clis.scorer import ScoreConfig, Scorer

    base = ScoreConfig(image_model=tiny_models["hf_clip"], layout_score=False)
    scorer = Scorer(base, judge={"name": "acp", "vlm": tiny_models["vlm"], "rater": tiny_models["causal_lm"]})
    assert scorer.detector is None and scorer.config.detector == "none"
    scorer.close()


def test_a_served_vlm_with_a_rater_url_that_is_a_local_folder_needs_no_server(tmp_path, capsys, tiny_models):
    # the rater runs in process while the VLM is served: one run, two kinds of backend
    with judge_server() as server:
        code, output = run_cli(["score", str(IMAGES), str(LAYOUTS), "--out", str(tmp_path / "s.jsonl"), "--judge", "acp",
                                "--vlm", server.url, "--rater", tiny_models["causal_lm"], *BASE], capsys)
    assert code == 0, output
    records = [json.loads(line) for line in Path(tmp_path / "s.jsonl").read_text().splitlines()]
    assert all(r["instances"][0]["acp"]["crop"]["explanation"] is None for r in records)  # guided: no explanation

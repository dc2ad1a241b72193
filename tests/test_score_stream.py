"""``Scorer.score_folder`` in the memory of a batch: records streamed to the file, CLIS-L in
chunks just ahead of the images, resume and reordering by byte offsets, the engine seam."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from clis.cli import app
from clis.formats import read_layouts

runner = CliRunner()
BAD_BOX = [0.9, 0.5, 0.3, 0.3]  # ends outside the canvas: the layout is invalid


def _folder(tmp_path: Path, n_layouts: int, per_layout: int, invalid: tuple[int, ...] = ()) -> tuple[Path, Path]:
    """images/L<i>/<j>.png, one colour each, and layouts L0..L<n-1> of a cup and a plate (a pair for
    CLIS-L to ask the LLM about); ``invalid`` ones have a bad box."""
    images = tmp_path / "images"
    layouts = []
    for i in range(n_layouts):
        folder = images / f"L{i}"
        folder.mkdir(parents=True)
        for j in range(per_layout):
            Image.new("RGB", (40, 32), (37 * i % 256, 91 * j % 256, 128)).save(folder / f"{j}.png")
        bbox = BAD_BOX if i in invalid else [0.1 + 0.05 * (i % 4), 0.2, 0.4, 0.5]
        layouts.append({"id": f"L{i}", "caption": "a cup left of a plate",
                        "objects": [{"id": "cup-1", "label": "cup", "bbox": bbox},
                                    {"id": "plate-1", "label": "plate", "bbox": [0.6, 0.5, 0.3, 0.3]}]})
    path = tmp_path / "layouts.json"
    path.write_text(json.dumps(layouts))
    return images, path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _close(a, b, where: str = "record") -> None:
    """Equal records, floats to 1e-3 (a forward pass batched with other images may differ in the last bits)."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, abs_tol=1e-3), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            _close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{k}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture
def clip_config(tiny_models):
    from clis.scorer import ScoreConfig

    return ScoreConfig(image_model=tiny_models["hf_clip"], detector="none", layout_score=False, batch_size=4,
                       num_workers=0)


@pytest.fixture
def clis_l_config(tiny_models, monkeypatch):
    from clis.scorer import ScoreConfig

    monkeypatch.setenv("CLIS_LAYOUT_CACHE", "off")  # every CLIS-L below is computed, none read back
    return ScoreConfig(image_model=tiny_models["hf_clip"], detector="none", batch_size=4, num_workers=0,
                       layout={"llm": tiny_models["causal_lm"], "text_embedder": "none"})


def test_the_file_holds_what_scoring_each_pair_alone_gives_in_input_order(clis_l_config, tmp_path, monkeypatch):
    import clis.scorer
    from clis.scorer import Scorer

    monkeypatch.setattr(clis.scorer, "LAYOUT_CHUNK", 2)
    images, layouts_file = _folder(tmp_path, n_layouts=5, per_layout=2, invalid=(2,))
    report = read_layouts(layouts_file)
    out = tmp_path / "s.jsonl"
    run = Scorer(clis_l_config).score_folder(images, report.layouts, out=out, invalid=report.invalid,
                                             layouts_source=str(layouts_file))
    written = _lines(out)
    by_id = {layout.id: layout for layout in report.layouts}
    alone = Scorer(clis_l_config)
    expected_keys = [(f"L{i}", str(images / f"L{i}" / f"{j}.png")) for i in range(5) for j in range(2)]
    assert [(r["layout_id"], r["image"]) for r in written] == expected_keys  # the layouts file's order
    for record in written:
        if record["layout_id"] == "L2":
            assert record["error"].startswith("invalid layout: ") and record["layout_sha256"] is None
            continue
        (reference,) = alone.score_pairs([(record["image"], by_id[record["layout_id"]])])
        _close(record, reference, record["image"])
        assert record["clis_l"] is not None
    # The run's counts and values are the file's, and iterating it reads the file back.
    assert (run.total, run.scored, run.failed, run.resumed) == (10, 8, 2, 0)
    assert run.first_error == written[4]["error"]
    assert sorted(run.values["clis"]) == sorted(r["clis"] for r in written if r["clis"] is not None)
    assert list(run) == written


def test_clis_l_in_chunks_equals_one_call_for_every_layout(clis_l_config, tmp_path, monkeypatch):
    import clis.scorer
    from clis.layout import Layout
    from clis.scorer import Scorer

    monkeypatch.setattr(clis.scorer, "LAYOUT_CHUNK", 2)
    images, layouts_file = _folder(tmp_path, n_layouts=5, per_layout=1)
    layouts = [Layout.model_validate(item) for item in json.loads(layouts_file.read_text())]
    seen: list[tuple[str, int, int]] = []
    Scorer(clis_l_config).score_folder(images, layouts, out=tmp_path / "s.jsonl",
                                       on_layout_progress=lambda *step: seen.append(step))
    at_once = Scorer(clis_l_config).layout_scores(layouts)  # all five in one call, nothing cached
    for record in _lines(tmp_path / "s.jsonl"):
        assert record["clis_l"] == pytest.approx(at_once[record["layout_id"]], abs=1e-3)
    # Progress counts the layouts across the chunks (2 + 2 + 1), against all five.
    layouts_done = [(done, total) for stage, done, total in seen if stage == "layouts"]
    assert layouts_done == [(k, 5) for k in range(1, 6)]
    statements = [(done, total) for stage, done, total in seen if stage == "statements"]
    assert statements and all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(statements, statements[1:]))


def test_resume_after_an_interruption_writes_the_same_file(clip_config, tmp_path):
    from clis.scorer import Scorer

    images, layouts_file = _folder(tmp_path, n_layouts=4, per_layout=3, invalid=(1,))
    report = read_layouts(layouts_file)

    def run(out: Path, **kwargs):
        return Scorer(clip_config).score_folder(images, report.layouts, out=out, invalid=report.invalid,
                                                layouts_source=str(layouts_file), **kwargs)

    reference = tmp_path / "reference.jsonl"
    run(reference)
    out = tmp_path / "s.jsonl"
    seen: list[dict] = []

    def interrupt_after_four(record: dict) -> None:
        seen.append(record)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(out, on_record=interrupt_after_four)
    assert json.loads(Path(f"{out}.manifest.json").read_text())["run"]["status"] == "interrupted"
    with open(out, "a") as handle:  # a line cut short by the interruption
        handle.write('{"layout_id": "L3", "image": "')
    rescored: list[dict] = []
    resumed = run(out, resume=True, on_record=rescored.append)
    assert len(rescored) == 9 - 4  # nine valid candidates, four finished before the interruption
    assert out.read_bytes() == reference.read_bytes()
    assert (resumed.resumed, resumed.scored, resumed.failed) == (4, 9, 3)
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())["run"]
    assert (manifest["status"], manifest["resumed"], manifest["scored"], manifest["failed"]) == ("complete", 4, 9, 3)


def test_the_scorer_keeps_no_state_that_grows_with_the_candidates(clip_config, tmp_path, monkeypatch):
    import clis.scorer
    from clis.layout import Layout
    from clis.scorer import Scorer

    chunk = 3
    monkeypatch.setattr(clis.scorer, "LAYOUT_CHUNK", chunk)
    images, layouts_file = _folder(tmp_path, n_layouts=12, per_layout=2)
    layouts = [Layout.model_validate(item) for item in json.loads(layouts_file.read_text())]
    scorer = Scorer(clip_config)
    held: list[int] = []
    run = scorer.score_folder(images, layouts, out=tmp_path / "s.jsonl",
                              on_record=lambda _: held.append(max(len(scorer._clis_l), len(scorer._layout_hashes))))
    n = len(_lines(tmp_path / "s.jsonl"))
    assert n == 24 and run.scored == 24
    # While the run goes, a chunk ahead and the rest of the current one; after it, nothing.
    assert max(held) <= 2 * chunk
    assert scorer._clis_l == {} and scorer._layout_hashes == {}
    # No container on the Scorer, its image scorer or the run holds one entry per candidate
    # (texts are shared by every layout here, so the text memos stay at a few entries).
    for owner in (scorer, scorer.image_scorer, scorer.text_cache):
        for name, value in vars(owner).items():
            if isinstance(value, (dict, list, set, tuple)):
                assert len(value) < 12, f"{type(owner).__name__}.{name} holds {len(value)} entries"
    assert run._kept is None


def test_the_engine_seam_runs_every_image_through_the_ray_engine(clip_config, tmp_path, monkeypatch):
    from clis.engines.config import EngineConfig
    from clis.scorer import Scorer, resume_signature

    calls: list[int] = []

    class FakeRayEngine:
        """Stands in for clis.engines.ray_engine: the CLIS-I records of the local scorer, counted."""

        def __init__(self, config):
            assert config.name == "ray" and config.workers == 2

        def image_records(self, scorer, candidates):
            for record in scorer.image_scorer.score_candidates(candidates):
                calls.append(1)
                yield record

    monkeypatch.setitem(sys.modules, "clis.engines.ray_engine", types.SimpleNamespace(RayEngine=FakeRayEngine))
    pytest.importorskip("ray")  # Scorer checks that Ray is installed before loading any model
    images, layouts_file = _folder(tmp_path, n_layouts=3, per_layout=2)
    local, ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    Scorer(clip_config).score_folder(images, layouts_file, out=local)
    config = clip_config.model_copy(update={"engine": EngineConfig(name="ray", workers=2)})
    Scorer(config).score_folder(images, layouts_file, out=ray)
    assert len(calls) == 6 and ray.read_bytes() == local.read_bytes()
    # The engine never changes the numbers, so a run may resume with another one.
    manifests = [json.loads(Path(f"{path}.manifest.json").read_text()) for path in (local, ray)]
    assert manifests[1]["settings"]["engine"]["name"] == "ray"
    assert resume_signature(manifests[0]) == resume_signature(manifests[1])


@pytest.mark.parametrize("args, message", [
    (["--workers", "2"], "error: --workers is read only with --engine ray, and this run uses --engine local"),
    (["--engine", "spark"], "error: --engine 'spark': expected one of local, ray"),
    (["--dtype", "float8"], "error: --dtype 'float8': expected one of float16, bfloat16, float32"),
])
def test_engine_and_dtype_flags_are_checked_in_one_line(tiny_models, tmp_path, args, message):
    images, layouts_file = _folder(tmp_path, n_layouts=1, per_layout=1)
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, ["score", str(images), str(layouts_file), "--out", str(out), "--image-model",
                                 tiny_models["hf_clip"], "--detector", "none", "--no-layout-score", "-q", *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [message] and "Traceback" not in result.output
    assert not out.exists()  # refused before anything ran


def test_a_parquet_out_holds_the_jsonl_records_and_resumes_from_its_journal(tiny_models, tmp_path):
    scoretable = pytest.importorskip("clis.scoretable")
    images, layouts_file = _folder(tmp_path, n_layouts=3, per_layout=2, invalid=(1,))
    jsonl, parquet = tmp_path / "s.jsonl", tmp_path / "s.parquet"
    journal = Path(f"{parquet}.partial.jsonl")

    def score(out: Path, *extra: str):
        return runner.invoke(app, ["score", str(images), str(layouts_file), "--out", str(out), "--image-model",
                                   tiny_models["hf_clip"], "--detector", "none", "--no-layout-score", "-q",
                                   "--batch-size", "3", *extra])

    assert score(jsonl, "--csv", str(tmp_path / "j.csv")).exit_code == 1  # the invalid layout's records
    result = score(parquet, "--csv", str(tmp_path / "p.csv"))
    assert result.exit_code == 1, result.output
    assert list(scoretable.iter_parquet_records(parquet)) == _lines(jsonl)
    assert (tmp_path / "p.csv").read_bytes() == (tmp_path / "j.csv").read_bytes()
    assert not journal.exists() and Path(f"{parquet}.manifest.json").is_file()
    # An interrupted run leaves its journal, which a plain run refuses to replace and --resume continues.
    journal.write_text(jsonl.read_text().splitlines(keepends=True)[0])
    parquet.unlink()
    result = score(parquet)
    assert result.exit_code == 2 and "the journal of an interrupted run" in result.output
    assert score(parquet, "--resume").exit_code == 1
    assert list(scoretable.iter_parquet_records(parquet)) == _lines(jsonl) and not journal.exists()
    manifest = json.loads(Path(f"{parquet}.manifest.json").read_text())["run"]
    assert (manifest["status"], manifest["resumed"]) == ("complete", 1)
    # A finished Parquet run resumes too: its successful records are kept, none scored again.
    assert score(parquet, "--resume").exit_code == 1
    assert list(scoretable.iter_parquet_records(parquet)) == _lines(jsonl)
    assert json.loads(Path(f"{parquet}.manifest.json").read_text())["run"]["resumed"] == 4
    # Resuming with other settings is refused before the Parquet file is copied to a journal.
    before = parquet.read_bytes()
    result = score(parquet, "--resume", "--weight", "global=0.9")
    assert result.exit_code == 2 and "--resume needs the models and settings" in result.output
    assert parquet.read_bytes() == before and not journal.exists()


def _parquet_score(tiny_models, images: Path, layouts_file: Path, out: Path, *extra: str):
    return runner.invoke(app, ["score", str(images), str(layouts_file), "--out", str(out), "--image-model",
                               tiny_models["hf_clip"], "--detector", "none", "--no-layout-score", "-q",
                               "--batch-size", "3", *extra])


def test_a_parquet_file_whose_manifest_is_of_an_unfinished_run_is_not_resumed(tiny_models, tmp_path):
    """A finished Parquet run, then an --overwrite with other weights cut short whose journal is gone:
    the Parquet's records are of the first run, so taking them as the second's is refused."""
    pytest.importorskip("clis.scoretable")
    images, layouts_file = _folder(tmp_path, n_layouts=2, per_layout=1)
    parquet, other = tmp_path / "s.parquet", tmp_path / "b.parquet"
    assert _parquet_score(tiny_models, images, layouts_file, parquet).exit_code == 0
    assert _parquet_score(tiny_models, images, layouts_file, other, "--weight", "global=0.9").exit_code == 0
    manifest = json.loads(Path(f"{other}.manifest.json").read_text())
    manifest["run"]["status"] = "interrupted"
    Path(f"{parquet}.manifest.json").write_text(json.dumps(manifest))
    before = parquet.read_bytes()
    result = _parquet_score(tiny_models, images, layouts_file, parquet, "--resume", "--weight", "global=0.9")
    assert result.exit_code == 2 and "did not finish" in result.output, result.output
    assert parquet.read_bytes() == before and not Path(f"{parquet}.partial.jsonl").exists()


def test_a_run_cut_short_while_writing_its_parquet_file_keeps_its_journal(tiny_models, tmp_path, monkeypatch):
    """Until the Parquet file is written the manifest does not call the run complete, and the journal
    stays: --resume then finishes the file without scoring anything again."""
    scoretable = pytest.importorskip("clis.scoretable")
    import clis.scorer as scorer_module

    images, layouts_file = _folder(tmp_path, n_layouts=2, per_layout=2)
    jsonl, parquet = tmp_path / "s.jsonl", tmp_path / "s.parquet"
    journal = Path(f"{parquet}.partial.jsonl")
    assert _parquet_score(tiny_models, images, layouts_file, jsonl).exit_code == 0
    real = scorer_module._journal_to_parquet

    def cut_short(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(scorer_module, "_journal_to_parquet", cut_short)
    _parquet_score(tiny_models, images, layouts_file, parquet)
    assert not parquet.exists() and _lines(journal) == _lines(jsonl)
    assert json.loads(Path(f"{parquet}.manifest.json").read_text())["run"]["status"] != "complete"
    monkeypatch.setattr(scorer_module, "_journal_to_parquet", real)
    assert _parquet_score(tiny_models, images, layouts_file, parquet, "--resume").exit_code == 0
    assert list(scoretable.iter_parquet_records(parquet)) == _lines(jsonl) and not journal.exists()
    run = json.loads(Path(f"{parquet}.manifest.json").read_text())["run"]
    assert (run["status"], run["resumed"]) == ("complete", 4)


@pytest.mark.parametrize("judge", ["clip", "vqa"])
def test_a_ray_driver_without_a_gpu_loads_its_models_on_the_cpu(tiny_models, judge):
    """--device cuda --engine ray: the GPUs are the workers'; the driver only needs fingerprints."""
    import torch

    from clis.scorer import Scorer

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so the driver could load on it either way")
    settings = {"judge": {"name": "vqa", "vlm": tiny_models["vlm"]}} if judge == "vqa" else {
        "image_model": tiny_models["hf_clip"]}
    scorer = Scorer(**settings, detector="none", layout_score=False, device="cuda",
                    engine={"name": "ray", "gpus_per_worker": 1})
    try:
        assert scorer.manifest()["settings"]["device"] == "cuda"
    finally:
        scorer.close()


@pytest.mark.parametrize("weights", [{}, {"instances": 0.0}], ids=["instances", "global-only"])
def test_the_manifest_names_the_same_cut_texts_under_either_engine(clip_config, tmp_path, monkeypatch, weights):
    """The texts CLIP cuts are what the image stage encodes: with instances the phrases and the
    distractors, global-only the captions alone, wherever the stage runs."""
    from clis.engines.config import EngineConfig
    from clis.scorer import Scorer

    class FakeRayEngine:
        def __init__(self, config):
            pass

        def image_records(self, scorer, candidates):
            yield from scorer.image_scorer.score_candidates(candidates)

    monkeypatch.setitem(sys.modules, "clis.engines.ray_engine", types.SimpleNamespace(RayEngine=FakeRayEngine))
    pytest.importorskip("ray")
    long = " ".join(["striped"] * 120)  # far past any CLIP text context
    images, layouts_file = _folder(tmp_path, n_layouts=1, per_layout=1)
    layouts = json.loads(layouts_file.read_text())
    layouts[0]["objects"][0]["description"] = f"a {long} cup"
    layouts_file.write_text(json.dumps(layouts))
    config = clip_config.model_copy(update={"distractors": [f"a {long} box"], "weights": clip_config.weights.model_copy(
        update=weights)})
    cut = []
    for n, engine in enumerate(("local", "ray")):
        out = tmp_path / f"{engine}.jsonl"
        Scorer(config.model_copy(update={"engine": EngineConfig(name=engine)})).score_folder(images, layouts_file, out=out)
        cut.append(json.loads(Path(f"{out}.manifest.json").read_text())["truncated_texts"])
    expected = [] if weights else sorted([f"a {long} box", f"a {long} cup"])
    assert cut == [expected, expected]


def test_a_gpu_device_under_ray_without_gpus_per_worker_is_refused_before_any_model_loads(monkeypatch):
    pytest.importorskip("ray")
    import clis.scorer as scorer_module
    from clis.errors import InputError

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were refused")

    monkeypatch.setattr(scorer_module, "_load_or_explain", no_model)
    with pytest.raises(InputError, match="needs --gpus-per-worker > 0"):
        scorer_module.Scorer(device="cuda", layout_score=False, engine={"name": "ray"})


def test_engine_settings_docstring_examples_hold():
    import doctest

    import clis.engines.config

    result = doctest.testmod(clis.engines.config)
    assert result.attempted > 0 and result.failed == 0

"""Attacks on `clis generate` and `clis plan` (issue 12, items 10, 11, 13, 14, 15, 17 and 19).

Every refusal is one line, exit 2, before a model loads or a file is written, and leaves the
user's files as they were. Models are never loaded here: generate runs the `shapes` adapter,
plan a canned backend, and a stand-in that fails the test stands for any model load.
"""

from __future__ import annotations

import json
import math

import pytest

from clis.errors import InputError
from clis.outputs import OutputLock
from pipeline_helpers import careful_planner, run_cli

from .corpus import write

LAYOUTS = [{"id": "tea", "caption": "a red cup", "objects": [{"id": "cup-1", "label": "cup", "bbox": [0.25, 0.25, 0.5, 0.5]}]}]
SMALL = ["--generator", "shapes", "--n", "1", "--width", "32", "--height", "32"]


def one_error_line(code: int, output: str) -> str:
    """The single line of a clean refusal (exit 2, no traceback, no 'unexpected')."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert len(lines) == 1, output
    assert "Traceback" not in output and "unexpected" not in output, output
    assert lines[0].startswith("error: "), output
    return lines[0]


@pytest.fixture
def layouts(tmp_path):
    path = tmp_path / "layouts.json"
    path.write_text(json.dumps(LAYOUTS))
    return path


@pytest.fixture
def no_generator(monkeypatch):
    """Any adapter being built (a model being loaded) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("an adapter was built before the options were checked")

    monkeypatch.setattr("generators.cli.create_generator", refuse)


class CannedPlanner:
    """A json-mode chat backend answering like ``careful_planner``."""

    mode = "json"

    def chat(self, messages, seed):
        return careful_planner({"messages": messages})

    def describe(self):
        return {"kind": "canned"}


@pytest.fixture
def planner(monkeypatch):
    made = []

    def make(*args, **kwargs):
        made.append(kwargs)
        return CannedPlanner()

    monkeypatch.setattr("clis.cli.plan.make_backend", make)
    return made


# --- item 10: the canvas of `clis generate` is capped like the images of `clis score` --------


def test_generate_huge_canvas_is_one_line_before_any_adapter(layouts, tmp_path, capsys, no_generator):
    out = tmp_path / "candidates"
    code, output = run_cli(["generate", str(layouts), "--out", str(out), "--generator", "shapes",
                            "--width", "100000", "--height", "100000"], capsys)  # fmt: skip
    line = one_error_line(code, output)
    assert "100000x100000" in line and "40000000" in line and "--max-pixels" in line
    assert not out.exists()


def test_generate_max_pixels_raises_and_lowers_the_cap(layouts, tmp_path, capsys):
    code, output = run_cli(["generate", str(layouts), "--out", str(tmp_path / "a"), *SMALL, "--max-pixels", "1023"], capsys)
    assert "1024 pixels exceeds the limit of 1023" in one_error_line(code, output)
    code, output = run_cli(["generate", str(layouts), "--out", str(tmp_path / "b"), *SMALL, "--max-pixels", "1024"], capsys)
    assert code == 0, output
    assert (tmp_path / "b" / "tea" / "0.png").is_file()


def test_generate_cap_is_the_figure_of_clis_score_and_is_documented(capsys):
    from clis.image_score.images import DEFAULT_MAX_PIXELS
    from generators.base import MAX_PIXELS

    assert MAX_PIXELS == DEFAULT_MAX_PIXELS
    code, output = run_cli(["generate", "--help"], capsys)
    assert code == 0 and "--max-pixels" in output


# --- item 11: non-finite options ----------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309"])
def test_generate_non_finite_guidance_is_refused_before_any_model(value, layouts, tmp_path, capsys, no_generator):
    code, output = run_cli(["generate", str(layouts), "--out", str(tmp_path / "c"), "--generator", "gligen",
                            "--guidance", value], capsys)  # fmt: skip
    assert "--guidance must be a finite number" in one_error_line(code, output)


def test_generate_non_finite_beta_is_refused_before_any_model(layouts, tmp_path, capsys, no_generator):
    code, output = run_cli(["generate", str(layouts), "--out", str(tmp_path / "c"), "--generator", "gligen",
                            "--scheduled-sampling-beta", "nan"], capsys)  # fmt: skip
    assert "--scheduled-sampling-beta" in one_error_line(code, output)


def test_diffusion_adapter_refuses_nan_guidance_before_loading(monkeypatch):
    from generators import create_generator
    from generators.diffusion import DiffusersGenerator

    monkeypatch.setattr(DiffusersGenerator, "_load", lambda self: pytest.fail("pipeline loaded"))
    with pytest.raises(InputError, match="--guidance must be a finite number"):
        create_generator("sd", guidance=float("nan"))


def test_generate_manifest_is_never_written_with_nan(tmp_path):
    from generators.runner import _write_json_atomic

    with pytest.raises(ValueError):
        _write_json_atomic(tmp_path / "manifest.json", {"guidance": math.nan})
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_plan_bad_temperature_is_refused_before_any_model(value, tmp_path, capsys, planner):
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat"]]')
    code, output = run_cli(["plan", str(concepts), "--out", str(tmp_path / "l.json"), "--temperature", value], capsys)
    assert "--temperature must be a finite number >= 0" in one_error_line(code, output)
    assert planner == [] and not (tmp_path / "l.json").exists()


def test_make_backend_refuses_nan_temperature():
    from clis.planning.backends import make_backend

    with pytest.raises(InputError, match="--temperature"):
        make_backend("http://127.0.0.1:9/v1", temperature=math.nan)


# --- item 13: repeated concept-set ids ----------------------------------------------------


@pytest.mark.parametrize(
    "sets, named",
    [
        ([{"concepts": ["cat"], "id": "x"}, {"concepts": ["dog"], "id": "x"}], "'x-0'"),
        # Ids become slugs: these two would both write living-room-0.
        ([{"concepts": ["cat"], "id": "Living Room"}, ["dog"], {"concepts": ["sofa"], "id": "living-room"}],
         "'living-room-0'"),
        # An explicit id equal to the default prefix of another set.
        ([["cat"], {"concepts": ["dog"], "id": "000-cat", "count": 2}], "'000-cat-0'"),
    ],
)
@pytest.mark.parametrize("strict", [False, True])
def test_plan_refuses_concept_sets_that_make_the_same_layout_ids(sets, named, strict, tmp_path, capsys, planner):
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps(sets))
    out = tmp_path / "layouts.json"
    code, output = run_cli(["plan", str(concepts), "--out", str(out), *(["--strict"] if strict else [])], capsys)
    line = one_error_line(code, output)
    last = len(sets) - 1
    assert str(concepts) in line and f"concept sets [0] and [{last}]" in line and named in line, line
    assert planner == [] and not out.exists()


def test_plan_distinct_ids_still_plan_every_set(tmp_path, capsys, planner):
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps([{"concepts": ["cat"], "id": "x", "count": 2}, {"concepts": ["dog"], "id": "x-1"}]))
    out = tmp_path / "layouts.json"
    code, output = run_cli(["plan", str(concepts), "--out", str(out)], capsys)
    assert code == 0, output
    ids = [record["id"] for record in json.loads(out.read_text())]
    assert ids == ["x-0", "x-1", "x-1-0"]


# --- item 17: outputs are checked before any work -----------------------------------------


def test_generate_file_as_out_is_refused_before_any_adapter(layouts, tmp_path, capsys, no_generator):
    out = tmp_path / "candidates"
    out.write_text("mine")
    code, output = run_cli(["generate", str(layouts), "--out", str(out), *SMALL], capsys)
    assert "is a file; give a folder" in one_error_line(code, output)
    assert out.read_text() == "mine"


def test_generate_folder_where_the_manifest_goes_is_refused(layouts, tmp_path, capsys, no_generator):
    out = tmp_path / "candidates"
    (out / "manifest.json").mkdir(parents=True)
    code, output = run_cli(["generate", str(layouts), "--out", str(out), *SMALL], capsys)
    assert "manifest.json: is a folder" in one_error_line(code, output)


def test_generate_into_its_own_backgrounds_folder_is_refused(layouts, tmp_path, capsys, no_generator):
    backgrounds = tmp_path / "backgrounds"
    backgrounds.mkdir()
    code, output = run_cli(["generate", str(layouts), "--out", str(backgrounds), "--generator", "copy-paste",
                            "--cutouts", str(tmp_path), "--backgrounds", str(backgrounds)], capsys)  # fmt: skip
    assert "--backgrounds" in one_error_line(code, output)


def test_generate_second_writer_on_one_out_is_refused(layouts, tmp_path, capsys, no_generator):
    out = tmp_path / "candidates"
    with OutputLock(out / "manifest.json"):
        code, output = run_cli(["generate", str(layouts), "--out", str(out), *SMALL], capsys)
    assert "another clis run is writing it" in one_error_line(code, output)


def test_plan_folder_as_out_is_refused_before_any_model(tmp_path, capsys, planner):
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat"]]')
    out = tmp_path / "layouts.json"
    out.mkdir()
    code, output = run_cli(["plan", str(concepts), "--out", str(out)], capsys)
    assert "is a folder; give a file name" in one_error_line(code, output)
    assert planner == []


@pytest.mark.parametrize("out_name", ["concepts.json", "layouts.json"])
def test_plan_never_writes_over_its_concepts_file(out_name, tmp_path, capsys, planner):
    # --out concepts.json writes the layouts over it; --out layouts.json with concepts named
    # layouts.plan.json writes the report over it.
    concepts = tmp_path / ("concepts.json" if out_name == "concepts.json" else "layouts.plan.json")
    concepts.write_text('[["cat"]]')
    code, output = run_cli(["plan", str(concepts), "--out", str(tmp_path / out_name)], capsys)
    assert "CONCEPTS" in one_error_line(code, output)
    assert concepts.read_text() == '[["cat"]]' and planner == []


def test_plan_second_writer_on_one_out_is_refused(tmp_path, capsys, planner):
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat"]]')
    out = tmp_path / "layouts.json"
    out.write_text("[]")
    with OutputLock(out):
        code, output = run_cli(["plan", str(concepts), "--out", str(out)], capsys)
    assert "another clis run is writing it" in one_error_line(code, output)
    assert out.read_text() == "[]" and planner == []


def test_plan_leaves_no_lock_file_behind(tmp_path, capsys, planner):
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat"]]')
    code, output = run_cli(["plan", str(concepts), "--out", str(tmp_path / "layouts.json")], capsys)
    assert code == 0, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["concepts.json", "layouts.json", "layouts.plan.json"]


# --- items 15 and 19: strict JSON for every file these commands read ----------------------

def test_plan_empty_concepts_file_is_refused(tmp_path, capsys, planner):
    concepts = write(tmp_path / "concepts.json", "[]")
    code, output = run_cli(["plan", str(concepts), "--out", str(tmp_path / "l.json")], capsys)
    assert "no concept sets" in one_error_line(code, output)
    assert planner == [] and not (tmp_path / "l.json").exists()


BROKEN_JSON = {
    "deep": "[" * 100_000,
    "huge_int": '[{"concepts": ["cat"], "count": 1' + "0" * 5000 + "}]",
    "nan": '[{"concepts": ["cat"], "count": NaN}]',
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe",
}


@pytest.mark.parametrize("case", sorted(BROKEN_JSON))
def test_plan_broken_concepts_file_is_one_line_naming_it(case, tmp_path, capsys, planner):
    concepts = write(tmp_path / "concepts.json", BROKEN_JSON[case])
    code, output = run_cli(["plan", str(concepts), "--out", str(tmp_path / "l.json")], capsys)
    assert str(concepts) in one_error_line(code, output)
    assert planner == []


@pytest.mark.parametrize("case", sorted(BROKEN_JSON))
def test_plan_broken_layout_config_is_one_line_naming_it(case, tmp_path, capsys, planner):
    concepts = write(tmp_path / "concepts.json", '[["cat"]]')
    config = write(tmp_path / "clis-l.json", BROKEN_JSON[case])
    code, output = run_cli(["plan", str(concepts), "--out", str(tmp_path / "l.json"), "--drafts", "2",
                            "--layout-config", str(config)], capsys)  # fmt: skip
    assert str(config) in one_error_line(code, output)
    assert planner == []


def _generated(layouts, tmp_path, capsys):
    out = tmp_path / "candidates"
    code, output = run_cli(["generate", str(layouts), "--out", str(out), *SMALL], capsys)
    assert code == 0, output
    return out


@pytest.mark.parametrize("case", ["deep", "huge_int", "nan", "binary", "items_not_objects", "image_path_not_text"])
def test_generate_resume_with_a_broken_manifest_is_one_line_naming_it(case, layouts, tmp_path, capsys):
    out = _generated(layouts, tmp_path, capsys)
    manifest = out / "manifest.json"
    data = json.loads(manifest.read_text())
    text = {
        "deep": "[" * 100_000,
        "huge_int": manifest.read_text().replace('"seed": 0', '"seed": 1' + "0" * 5000),
        # In the image record (the last width), where no settings check would notice it.
        "nan": '"width": NaN,'.join(manifest.read_text().rsplit('"width": 32,', 1)),
        "binary": b"\xff\xfe\x00garbage",
        "items_not_objects": json.dumps({**data, "items": [7]}),
        "image_path_not_text": json.dumps({**data, "items": [{**data["items"][0], "images": [{"path": 3}]}]}),
    }[case]
    write(manifest, text)
    before = manifest.read_bytes()
    code, output = run_cli(["generate", str(layouts), "--out", str(out), *SMALL, "--resume"], capsys)
    assert str(manifest) in one_error_line(code, output)
    assert manifest.read_bytes() == before


@pytest.mark.parametrize("case", ["deep", "huge_int", "binary"])
def test_generate_broken_coco_cutouts_file_is_one_line_naming_it(case, layouts, tmp_path, capsys):
    coco = write(tmp_path / "cutouts.json", {
        "deep": '{"images": ' + "[" * 100_000,
        "huge_int": '{"images": [{"id": 1' + "0" * 5000 + ', "file_name": "a.png"}], "annotations": [], "categories": []}',
        "binary": b"\x89PNG\r\n\x1a\n\x00\xff",
    }[case])  # fmt: skip
    code, output = run_cli(["generate", str(layouts), "--out", str(tmp_path / "c"), "--generator", "copy-paste",
                            "--cutouts", str(coco)], capsys)  # fmt: skip
    assert str(coco) in one_error_line(code, output)


def test_chat_server_reply_nested_too_deeply_is_a_retried_failure(monkeypatch):
    from clis.planning.backends import BackendError, OpenAIChatBackend

    class Reply:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"[" * 100_000

    monkeypatch.setattr("urllib.request.urlopen", lambda *args, **kwargs: Reply())
    with pytest.raises(BackendError, match="nested too deeply"):
        OpenAIChatBackend("http://127.0.0.1:9/v1").chat([{"role": "user", "content": "hi"}], seed=0)


# --- item 14: user text is printed as plain text ------------------------------------------


def test_generate_prints_an_out_path_with_brackets_as_it_is(layouts, tmp_path, capsys):
    out = tmp_path / "c[/x] [bold]y"
    code, output = run_cli(["generate", str(layouts), "--out", str(out), *SMALL], capsys)
    assert code == 0, output
    assert f"images in {out}; manifest: {out / 'manifest.json'}" in " ".join(output.split())


def test_plan_prints_an_out_path_with_brackets_as_it_is(tmp_path, capsys, planner):
    concepts = tmp_path / "concepts.json"
    concepts.write_text('[["cat"]]')
    out = tmp_path / "l[/x] [red]y.json"
    code, output = run_cli(["plan", str(concepts), "--out", str(out)], capsys)
    assert code == 0, output
    assert f"-> {out}; report:" in " ".join(output.split())

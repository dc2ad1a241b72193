"""Parquet score files (clis.scoretable): exact round trips, other readers, pick and bench on them.

The records come from a real `clis score` run over the examples with tiny random models (one
candidate made unreadable, so an error record is among them) and from the vqa and acp judges
with scripted answers. Every round trip is checked as JSON text, which compares keys, key order,
value types (64 is not 64.0) and values at once.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from clis.errors import InputError
from clis.scoretable import (
    ParquetRecordWriter, is_parquet, is_score_table, iter_parquet_records, iter_parquet_rows, iter_score_records,
    jsonl_to_parquet, parquet_to_jsonl,
)  # fmt: skip
from pipeline_helpers import run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BROKEN = "rocket"  # the example whose image is replaced by junk bytes: its record is an error record


def as_text(records) -> list[str]:
    return [json.dumps(r) for r in records]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def real_run(tiny_models, tmp_path_factory):
    """`clis score` of the examples with tiny CLIP and OWLv2 (detection dicts in every instance)."""
    from clis.cli import app

    root = tmp_path_factory.mktemp("run")
    candidates = root / "images"
    shutil.copytree(EXAMPLES / "images", candidates)
    (candidates / f"{BROKEN}.jpg").write_bytes(b"not a jpeg at all")
    out = root / "scores.jsonl"
    result = CliRunner().invoke(app, [
        "score", str(candidates), str(EXAMPLES / "layouts.json"), "--out", str(out),
        "--image-model", tiny_models["hf_clip"], "--detector", tiny_models["owlv2"], "--no-layout-score",
    ])  # fmt: skip
    # exit 1: a run with a failed candidate says so, having scored the rest
    assert result.exit_code == 1 and "6 scored, 1 failed" in result.output, result.output
    return candidates, out


class ScriptedVLM:
    """P(yes) and descriptions from the prompt alone, so the judges' records are known in advance."""

    grounding = "qwen2"

    def yes_probability(self, requests):
        return [0.7 if r.prompt.startswith("Does this image show") else 0.25 for r in requests]

    def generate(self, requests, seed):
        return ["a whole picture" if r.prompt.startswith("Describe this image") else "a part" for r in requests]

    def describe(self):
        return {"kind": "scripted"}


class FixedRater:
    """Rates every description 4 of 5, with no explanation (as a guided rater does)."""

    def rate_many(self, pairs, seed):
        from clis.image_score.judges.rater import Rating

        return [Rating(4.0, None, '{"score": 4}') for _ in pairs]


@pytest.fixture(scope="module")
def judge_records():
    """Records of the vqa and acp judges on two example layouts (one image without a caption)."""
    from clis.formats import load_layouts
    from clis.image_score.engine import Candidate
    from clis.image_score.judges import ACPJudge, CachedVLM, VQAJudge

    layouts = load_layouts(EXAMPLES / "layouts.json")[:2]
    uncaptioned = layouts[1].model_copy(update={"caption": ""})
    candidates = [Candidate(Image.new("RGB", (64, 48), (200, 30, 30)), layout) for layout in (layouts[0], uncaptioned)]
    vqa = list(VQAJudge(CachedVLM(ScriptedVLM(), None), num_workers=0).score_candidates(candidates))
    acp = list(ACPJudge(CachedVLM(ScriptedVLM(), None), FixedRater(), num_workers=0).score_candidates(candidates))
    return vqa + acp


def test_judge_records_have_the_documented_shape(judge_records):
    """The fixture holds what the judges really write: their own keys per instance and a judge key."""
    vqa, acp = judge_records[0], judge_records[2]
    assert vqa["judge"] == {"name": "vqa", "global": {"p_yes": 0.7}}
    assert judge_records[1]["judge"] == {"name": "vqa", "global": None}  # no caption, no whole-image term
    assert vqa["instances"][0]["vqa"] == {"context": 0.25, "crop": 0.25}
    assert acp["judge"]["global"] == {"description": "a whole picture", "rating": 4.0, "explanation": None}
    assert acp["instances"][0]["acp"]["crop"] == {"description": "a part", "rating": 4.0, "explanation": None}


def test_real_records_round_trip_exactly(real_run, judge_records, tmp_path):
    _, scores = real_run
    records = read_jsonl(scores)
    assert sum(1 for r in records if r["error"]) == 1 and all(
        isinstance(i["detection"], dict) for r in records if not r["error"] for i in r["instances"])
    both = write_jsonl(tmp_path / "both.jsonl", records + judge_records)
    assert jsonl_to_parquet(both, tmp_path / "both.parquet") == len(records) + len(judge_records)
    back = list(iter_parquet_records(tmp_path / "both.parquet"))
    assert as_text(back) == as_text(read_jsonl(both))
    # and back to JSONL: the same lines as the JSON encoder writes them
    assert parquet_to_jsonl(tmp_path / "both.parquet", tmp_path / "again.jsonl") == len(back)
    assert (tmp_path / "again.jsonl").read_text() == "".join(json.dumps(r) + "\n" for r in read_jsonl(both))
    metadata = pq.read_schema(tmp_path / "both.parquet").metadata
    assert metadata[b"clis.schema"] == b"clis.scores/1"


def test_records_no_column_holds_as_they_are_still_round_trip(tmp_path):
    records = [
        # keys out of order, some missing, an integer score, a user's own keys at both levels
        {"image": "a.png", "layout_id": "x", "clis": 64, "generator": "sdxl", "seed": 7,
         "instances": [{"score": 50.5, "object_id": "o", "bbox": [0, 0, 1, 1], "note": {"by": "me"}}]},
        # a string where a number belongs (pick refuses it later, but the table keeps it)
        {"layout_id": "x", "image": "b.png", "clis": "high", "instances": None,
         "judge": {"name": "vqa", "global": None}},
        # instances that are not a list of objects; a lone surrogate, which UTF-8 cannot hold
        {"layout_id": "x", "image": "c\ud800.png", "instances": [1, 2], "error": None},
        # a detection with a key of its own, and an empty object
        {"layout_id": "x", "image": "d.png", "instances": [{"object_id": "o", "detection": {"found": True, "extra": 1}},
                                                           {"object_id": "p", "detection": {}}]},
        {"layout_id": "x", "image": "e.png"},
    ]
    with ParquetRecordWriter(tmp_path / "odd.parquet", row_group_size=2) as writer:
        writer.write_many(records)
    assert as_text(iter_parquet_records(tmp_path / "odd.parquet")) == as_text(records)


def test_pandas_reads_the_table_as_it_is(real_run, tmp_path):
    import pandas as pd

    _, scores = real_run
    records = read_jsonl(scores)
    jsonl_to_parquet(scores, tmp_path / "s.parquet")
    frame = pd.read_parquet(tmp_path / "s.parquet")
    assert len(frame) == len(records)
    assert frame["layout_id"].tolist() == [r["layout_id"] for r in records]
    for value, record in zip(frame["clis"], records):
        assert (math.isnan(value) and record["clis"] is None) or value == record["clis"]
    for cell, record in zip(frame["instances"], records):
        instances = list(cell)
        assert all(isinstance(i, dict) for i in instances)
        assert [(i["object_id"], i["score"], i["detection"] and i["detection"]["iou"]) for i in instances] == [
            (i["object_id"], i["score"], i["detection"]["iou"]) for i in record["instances"]]


def test_duckdb_queries_the_table_and_its_instances(real_run, tmp_path):
    import duckdb

    _, scores = real_run
    records = read_jsonl(scores)
    path = tmp_path / "s.parquet"
    jsonl_to_parquet(scores, path)
    rows = duckdb.sql(f"SELECT layout_id, clis FROM '{path}'").fetchall()
    assert rows == [(r["layout_id"], r["clis"]) for r in records]
    per_object = duckdb.sql(
        f"SELECT layout_id, i.object_id, i.score, i.detection.found FROM '{path}', UNNEST(instances) AS t(i)"
    ).fetchall()
    assert sorted(per_object) == sorted(
        (r["layout_id"], i["object_id"], i["score"], i["detection"]["found"]) for r in records for i in r["instances"])
    # A copy that DuckDB filters and writes again still reads back exactly (each row describes itself).
    kept = [r for r in records if r["error"] is None]
    duckdb.sql(f"COPY (SELECT * FROM '{path}' WHERE error IS NULL) TO '{tmp_path / 'kept.parquet'}' (FORMAT parquet)")
    assert as_text(iter_parquet_records(tmp_path / "kept.parquet")) == as_text(kept)


def test_hf_datasets_reads_the_table(real_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import Dataset

    _, scores = real_run
    records = read_jsonl(scores)
    jsonl_to_parquet(scores, tmp_path / "s.parquet")
    dataset = Dataset.from_parquet(str(tmp_path / "s.parquet"), cache_dir=str(tmp_path / "hf-cache"))
    assert dataset.num_rows == len(records)
    assert dataset["image"][:] == [r["image"] for r in records] and dataset["clis"][:] == [r["clis"] for r in records]
    # datasets gives a list of structs as a dict of lists, or as a list of dicts
    first = dataset[0]["instances"]
    ids = first["object_id"] if isinstance(first, dict) else [i["object_id"] for i in first]
    assert ids == [i["object_id"] for i in records[0]["instances"]]


def test_streaming_writer_writes_row_groups_and_reads_back_in_order(real_run, judge_records, tmp_path):
    _, scores = real_run
    records = read_jsonl(scores) + judge_records
    path = tmp_path / "s.parquet"
    with ParquetRecordWriter(path, row_group_size=3) as writer:
        for record in records:
            writer.write(record)
            assert writer.rows <= len(records)
    assert pq.ParquetFile(path).metadata.num_row_groups == math.ceil(len(records) / 3)
    assert [pq.ParquetFile(path).metadata.row_group(g).num_rows for g in range(2)] == [3, 3]
    assert as_text(r for _, r in iter_parquet_rows(path)) == as_text(records)
    assert [n for n, _ in iter_score_records(path)] == list(range(1, len(records) + 1))
    # an empty run is a valid empty table
    ParquetRecordWriter(tmp_path / "empty.parquet").close()
    assert list(iter_parquet_records(tmp_path / "empty.parquet")) == []


def test_format_is_recognised_by_name_or_magic(tmp_path):
    table = tmp_path / "scores.data"
    with ParquetRecordWriter(table) as writer:
        writer.write({"layout_id": "x", "image": "a.png"})
    jsonl = write_jsonl(tmp_path / "scores.jsonl", [{"layout_id": "x", "image": "a.png"}])
    pd_table = tmp_path / "ratings.parquet"
    pq.write_table(pa.table({"image": ["a.png"], "human": [3.0]}), pd_table)
    assert (is_parquet(table), is_parquet(jsonl), is_parquet(tmp_path / "missing.parquet")) == (True, False, True)
    assert (is_score_table(table), is_score_table(pd_table), is_score_table(jsonl)) == (True, False, False)
    expected = [(1, {"layout_id": "x", "image": "a.png"})]
    assert list(iter_score_records(table)) == list(iter_score_records(jsonl)) == expected


def _dataset(folder: Path) -> tuple[dict, dict]:
    annotations = json.loads((folder / "annotations.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("scores")
    return annotations, summary


def test_pick_gives_the_same_dataset_from_parquet(real_run, tmp_path, capsys):
    candidates, scores = real_run
    table = tmp_path / "scores.parquet"
    jsonl_to_parquet(scores, table)
    layouts = EXAMPLES / "layouts.json"
    outputs = []
    for source, out in ((scores, tmp_path / "from-jsonl"), (table, tmp_path / "from-parquet")):
        code, output = run_cli(["pick", str(candidates), str(layouts), "--scores", str(source), "--out", str(out),
                                "--min-instance", "0", "--min-layout", "0"], capsys)
        assert code == 0, output
        outputs.append(_dataset(out))
    assert outputs[0] == outputs[1]
    annotations, summary = outputs[0]
    # every readable example is kept (one candidate per layout), the broken one is dropped as failed
    assert summary["images_kept"] == len(read_jsonl(scores)) - 1 == len(annotations["images"])
    assert summary["images_dropped_by_reason"] == {"scoring failed": 1}


def test_bench_compare_gives_the_same_figures_from_parquet(real_run, tmp_path):
    from benchmarks.compare import compare
    from benchmarks.scorefile import read_scores
    from benchmarks.stats import BootstrapConfig

    _, scores = real_run
    table = tmp_path / "scores.parquet"
    jsonl_to_parquet(scores, table)
    frames = read_scores(scores), read_scores(table)
    assert frames[0].equals(frames[1])
    fast = BootstrapConfig(n_resamples=50, seed=0)
    results = [compare([f"tiny={path}"], tmp_path / name, bootstrap=fast, plot=False)
               for path, name in ((scores, "a"), (table, "b"))]
    assert [r.values for r in results[0].rows] == [r.values for r in results[1].rows]
    assert results[0].rows[0].values  # figures were computed, not two empty rows


def _pick(tmp_path, capsys, scores: Path) -> tuple[int, str]:
    candidates = tmp_path / "cand"
    candidates.mkdir(exist_ok=True)
    return run_cli(["pick", str(candidates), str(EXAMPLES / "layouts.json"), "--scores", str(scores),
                    "--out", str(tmp_path / "ds")], capsys)


def one_line_error(code: int, output: str) -> str:
    assert code == 2 and "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_bad_parquet_is_a_one_line_error_naming_file_row_and_field(tmp_path, capsys):
    bad = tmp_path / "scores.parquet"
    bad.write_text('{"layout_id": "x"}\n')
    assert "scores.parquet: not a readable Parquet file" in one_line_error(*_pick(tmp_path, capsys, bad))

    pq.write_table(pa.table({"id": ["x"], "clis": [50.0]}), bad)
    assert "no column 'layout_id'" in one_line_error(*_pick(tmp_path, capsys, bad))

    # a NaN score, written by another tool: the same check as a JSONL record, naming the row
    pq.write_table(pa.table({"layout_id": ["astronaut", "camera"], "image": ["astronaut.jpg", "camera.jpg"],
                             "clis": [50.0, float("nan")]}), bad)
    message = one_line_error(*_pick(tmp_path, capsys, bad))
    assert "scores.parquet: row 2: field 'clis': expected a finite number" in message

    with ParquetRecordWriter(bad) as writer:
        writer.write({"layout_id": "astronaut", "image": "astronaut.jpg", "instances": [{"object_id": 3}]})
    message = one_line_error(*_pick(tmp_path, capsys, bad))
    assert "row 1: field 'instances[0].object_id': expected a string" in message

    # a row whose bookkeeping column is corrupt
    table = pq.read_table(bad)
    keys = table.column("_clis").to_pylist()
    keys[0]["keys"] = "not json"
    pq.write_table(table.set_column(table.schema.get_field_index("_clis"), "_clis",
                                    pa.array(keys, table.schema.field("_clis").type)), bad)
    assert "row 1: field '_clis.keys'" in one_line_error(*_pick(tmp_path, capsys, bad))

    pq.write_table(pa.table({"layout_id": ["x"], "image": ["a"]}).replace_schema_metadata(
        {"clis.schema": "clis.scores/9"}), bad)
    assert "schema 'clis.scores/9'; this clis reads 'clis.scores/1'" in one_line_error(*_pick(tmp_path, capsys, bad))


def test_bench_names_the_row_of_a_bad_parquet_record(tmp_path):
    from benchmarks.scorefile import read_scores

    bad = tmp_path / "scores.parquet"
    with ParquetRecordWriter(bad) as writer:
        writer.write({"layout_id": "x", "image": "a.png", "clis": 50.0})
        writer.write({"layout_id": "x", "image": "b.png", "clis": "high"})
        writer.write({"layout_id": "x", "image": "a.png", "clis": 50.0})
    with pytest.raises(InputError, match=r"scores.parquet: row 2, field 'clis': expected a number"):
        read_scores(bad)
    with ParquetRecordWriter(bad) as writer:
        writer.write({"layout_id": "x", "image": "a.png", "clis": 50.0})
        writer.write({"layout_id": "x", "image": "a.png", "clis": 50.0})
    with pytest.raises(InputError, match=r"scored twice \(rows 1 and 2\)"):
        read_scores(bad)


def test_leaderboard_reads_the_candidates_of_a_parquet_file(real_run, tmp_path):
    from leaderboard.details import read_scores

    _, scores = real_run
    table = tmp_path / "scores.parquet"
    jsonl_to_parquet(scores, table)
    from_jsonl, from_parquet = read_scores(scores), read_scores(table)
    assert from_jsonl.problems == from_parquet.problems == []
    assert from_jsonl.candidates == from_parquet.candidates  # row numbers are the line numbers here
    assert len(from_parquet.candidates) == len(read_jsonl(scores))


def test_a_flat_table_of_another_tool_is_read_column_by_column(tmp_path):
    """A table without the bookkeeping column (pandas wrote it): each column is a key."""
    import pandas as pd

    from benchmarks.scorefile import read_scores

    frame = pd.DataFrame({"layout_id": ["x", "y"], "image": ["x/0.png", "y/0.png"], "clis": [61.5, None]},
                         index=pd.Index([10, 20], name="n"))
    frame.to_parquet(tmp_path / "flat.parquet")
    assert list(iter_parquet_records(tmp_path / "flat.parquet")) == [
        {"layout_id": "x", "image": "x/0.png", "clis": 61.5, "n": 10},
        {"layout_id": "y", "image": "y/0.png", "clis": None, "n": 20},
    ]
    frame.reset_index(drop=True).set_axis([7, 8]).to_parquet(tmp_path / "unnamed.parquet")
    assert [sorted(r) for r in iter_parquet_records(tmp_path / "unnamed.parquet")] == [["clis", "image", "layout_id"]] * 2
    scores = read_scores(tmp_path / "flat.parquet")
    assert scores["clis"].iloc[0] == 61.5 and math.isnan(scores["clis"].iloc[1])


def test_docstring_examples_hold():
    import doctest

    import clis.scoretable

    assert doctest.testmod(clis.scoretable).failed == 0


# -- hostile files (review): each case was a traceback, a silent wrong value or a memory blow-up --


def _row_file(path: Path, columns: dict, keys: str, instance_keys=None, extra=None) -> Path:
    """A one-row table of the scores schema whose ``_clis`` says exactly what the test wants."""
    from clis.scoretable import SCHEMA

    row = {"layout_id": "a", "image": "0.png", **columns,
           "_clis": {"keys": keys, "instance_keys": instance_keys, "extra": extra}}
    pq.write_table(pa.Table.from_pylist([row], schema=SCHEMA), path)
    return path


@pytest.mark.parametrize("columns, keys, instance_keys, extra, message", [
    # 100k-deep key list: json's RecursionError, not a ValueError, escaped before
    ({}, "[" * 100_000 + "]" * 100_000, None, None, r"row 1: field '_clis.keys': .*nested too deeply"),
    # a key that no column holds and no extra gives was read as null
    ({}, '["layout_id","image","clis_x"]', None, None, r"row 1: field '_clis.keys': key 'clis_x' is neither a column"),
    # instance extras that are not an object per instance were ignored
    ({"instances": [{"object_id": "x"}]}, '["layout_id","image","instances"]', ['["object_id"]'],
     '{"record": {}, "instances": {"0": [1]}}', r"row 1: field '_clis.extra': instance extras '0'"),
    ({"instances": [{"object_id": "x"}]}, '["layout_id","image","instances"]', ['["object_id"]'],
     '{"record": {}, "instances": {"7": {"score": 1}}}', r"row 1: field '_clis.extra': instance extras '7'"),
    # an object shape over a null struct
    ({}, '["layout_id","image",["judge",["name"]]]', None, None, r"key 'judge' is listed as an object"),
])  # fmt: skip
def test_a_corrupt_bookkeeping_column_is_one_line_naming_row_and_field(tmp_path, columns, keys, instance_keys, extra,
                                                                       message):
    path = _row_file(tmp_path / "s.parquet", columns, keys, instance_keys, extra)
    with pytest.raises(InputError, match=message) as caught:
        list(iter_parquet_rows(path))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("instance, field", [
    ({"object_id": "x", "detection": {"iou": math.nan}}, "instances[0].detection.iou"),
    ({"object_id": "x", "bbox": [0.0, math.inf]}, "instances[0].bbox[1]"),
    ({"object_id": "x", "acp": {"crop": {"rating": -math.inf}}}, "instances[0].acp.crop.rating"),
])
def test_a_nan_anywhere_is_refused_as_the_jsonl_line_would_be(tmp_path, instance, field):
    from clis.pick import read_scores_lines

    record = {"layout_id": "a", "image": "0.png", "instances": [instance]}
    # the same record as a JSONL line (Python's json writes NaN and Infinity): refused there
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 1"):
        read_scores_lines(jsonl)
    shape = json.dumps(["layout_id", "image", "instances"])
    path = _row_file(tmp_path / "s.parquet", {"instances": [instance]}, shape, [json.dumps(list(instance))])
    with pytest.raises(InputError, match=rf"row 1: field '{re.escape(field)}': expected a finite number or null"):
        read_scores_lines(path)
    with pytest.raises(InputError, match="row 1"):  # was a ValueError traceback from json.dumps
        parquet_to_jsonl(path, tmp_path / "back.jsonl")


def test_columns_json_cannot_hold_and_bad_utf8_are_refused(tmp_path):
    import datetime

    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"layout_id": ["a"], "image": ["0.png"], "when": [datetime.datetime(2024, 1, 1)]}), path)
    with pytest.raises(InputError, match=r"row 1: field 'when': its column's type timestamp\[us\] is not a JSON"):
        parquet_to_jsonl(path, tmp_path / "out.jsonl")  # was a TypeError traceback
    # a column that no record names (a copy's own column) is no obstacle
    record = {"layout_id": "a", "image": "0.png", "clis": 50}
    with ParquetRecordWriter(path) as writer:
        writer.write(record)
    table = pq.read_table(path)
    pq.write_table(table.append_column("when", pa.array([datetime.datetime(2024, 1, 1)])), path)
    assert list(iter_parquet_records(path)) == [record]
    # Parquet does not check UTF-8: bytes 0xff 0xfe stored as a string column
    image = pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(b"\0\0\0\0\5\0\0\0\7\0\0\0"),
                                                   pa.py_buffer(b"0.png\xff\xfe")])
    pq.write_table(pa.table({"layout_id": ["a", "b"], "image": image}), path)
    with pytest.raises(InputError, match=r"s.parquet: row 2: field 'image': a string that is not UTF-8"):
        list(iter_parquet_rows(path))


def test_a_row_group_that_inflates_past_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIS_MAX_INPUT_BYTES", str(4 * 2**20))  # 1 MiB per row group
    path = tmp_path / "bomb.parquet"
    with ParquetRecordWriter(path) as writer:
        writer.write({"layout_id": "a", "image": "0.png"})
        writer.write({"layout_id": "a", "image": "1.png", "note": " " * (3 * 2**20)})
    assert path.stat().st_size < 64 * 1024  # zstd: the file itself is tiny
    with pytest.raises(InputError, match=r"rows 1\.\.2 \(row group 0\) hold [\d,]+ bytes uncompressed, over the "
                                         r"1,048,576-byte limit"):
        next(iter_parquet_rows(path))  # before the first row: nothing was decoded
    monkeypatch.setenv("CLIS_MAX_INPUT_BYTES", str(256 * 2**20))  # 64 MiB per row group, 4 MiB per row
    assert [len(r.get("note", "")) for r in iter_parquet_records(path)] == [0, 3 * 2**20]


def test_rows_that_dictionary_encoding_hides_are_read_in_bounded_slices_or_refused(tmp_path, monkeypatch):
    """One value repeated in every row is stored once: the row group claims about one copy."""
    monkeypatch.setenv("CLIS_MAX_INPUT_BYTES", str(64 * 2**20))  # 16 MiB per row group, 1 MiB per row
    path = tmp_path / "repeated.parquet"
    note = "n" * (256 * 1024)
    with ParquetRecordWriter(path) as writer:
        for n in range(200):  # 50 MiB of notes once decoded
            writer.write({"layout_id": "a", "image": f"{n}.png", "note": note})
    assert pq.ParquetFile(path).metadata.row_group(0).total_byte_size < 2 * 2**20
    # read in slices of at most 1 MiB (a few rows each), in order, none lost or repeated
    assert [(number, r["image"], len(r["note"])) for number, r in iter_parquet_rows(path)] == [
        (n + 1, f"{n}.png", len(note)) for n in range(200)]
    with ParquetRecordWriter(path) as writer:
        for n in range(20):
            writer.write({"layout_id": "a", "image": f"{n}.png", "note": note * 8})  # 2 MiB each
    assert pq.ParquetFile(path).metadata.row_group(0).total_byte_size < 16 * 2**20  # passes the group check
    with pytest.raises(InputError, match=r"repeated.parquet: row 1: [\d,]+ bytes once decoded, over the "
                                         r"1,048,576-byte limit of one row"):
        next(iter_parquet_rows(path))


def test_long_key_lists_are_not_kept_by_the_shape_cache(tmp_path):
    from clis import scoretable

    keys = json.dumps(["layout_id", "image"] + [f"k{n}" for n in range(2000)])  # 16 KB
    extra = json.dumps({"record": {f"k{n}": n for n in range(2000)}})
    path = _row_file(tmp_path / "s.parquet", {}, keys, extra=extra)
    scoretable._cached_shape.cache_clear()
    assert len(next(iter_parquet_records(path))) == 2002
    assert scoretable._cached_shape.cache_info().currsize == 0

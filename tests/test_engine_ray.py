"""``--engine ray``: the same records and images as ``--engine local``, in input order, resumable,
and a worker killed mid-run is replaced while the candidate that killed it twice becomes an error
record. One Ray for the module: Ray's own two-node test cluster on this machine (1 CPU each)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

from clis.cli import app  # noqa: E402
from clis.engines import EngineConfig  # noqa: E402
from clis.errors import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
EXAMPLES = ROOT / "examples"
runner = CliRunner()
# Four of the example candidates (horse is the poison of the fault test), two per Ray batch.
SUBSET = ["coffee", "grace_hopper", "horse", "rocket"]
# Records are rounded to 4 decimals, so float noise between two batchings of the same forwards
# shows as at most one unit of the last place (1e-4, give or take its binary representation).
TOLERANCE = 1e-4 + 1e-9


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    saved = os.environ.get("PYTHONPATH")
    # The nodes' workers import the test stages (tests/ray_helpers.py) by module name.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), *([saved] if saved else [])])
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        head.add_node(num_cpus=1)
        ray.init(address=head.address)
        yield head
    finally:
        ray.shutdown()
        head.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def ray_engine(workers: int) -> EngineConfig:
    return EngineConfig(name="ray", workers=workers)


def assert_same(local, remote, where: str = "record") -> None:
    """Equal records, numbers to TOLERANCE (the actors batch texts and rows differently)."""
    if isinstance(local, float) or isinstance(remote, float):
        assert isinstance(remote, (int, float)) and math.isclose(local, remote, abs_tol=TOLERANCE), where
    elif isinstance(local, dict):
        assert isinstance(remote, dict) and list(local) == list(remote), where
        for key in local:
            assert_same(local[key], remote[key], f"{where}.{key}")
    elif isinstance(local, list):
        assert isinstance(remote, list) and len(local) == len(remote), where
        for k, (a, b) in enumerate(zip(local, remote)):
            assert_same(a, b, f"{where}[{k}]")
    else:
        assert local == remote, where


def example_candidates():
    from clis.formats import load_layouts
    from clis.image_score.engine import Candidate

    layouts = {layout.id: layout for layout in load_layouts(EXAMPLES / "layouts.json")}
    return [Candidate(str(EXAMPLES / "images" / f"{name}.jpg"), layouts[name]) for name in SUBSET]


def subset_folder(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """The SUBSET candidates as a folder and layouts file of their own, for the CLI runs, and their
    ids in the layouts file's order (the order of the records)."""
    images = tmp_path / "images"
    images.mkdir()
    for name in SUBSET:
        (images / f"{name}.jpg").write_bytes((EXAMPLES / "images" / f"{name}.jpg").read_bytes())
    data = json.loads((EXAMPLES / "layouts.json").read_text())
    records = data["layouts"] if isinstance(data, dict) else data
    layouts = tmp_path / "layouts.json"
    kept = [r for r in records if r["id"] in SUBSET]
    layouts.write_text(json.dumps({**data, "layouts": kept} if isinstance(data, dict) else kept))
    return images, layouts, [r["id"] for r in kept]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- without models ------------------------------------------------------------------------------


def test_in_order_buffer_releases_by_index_and_spills_past_its_limit():
    from clis.engines.ray_engine import _InOrder

    order = _InOrder(limit=2)
    released = []
    for index in (3, 1, 4, 2):  # 0 is missing: nothing may come out yet
        order.put(index, json.dumps({"i": index}))
        released += list(order.ready())
    assert released == [] and order.spill is not None and len(order.memory) == 2
    order.put(0, json.dumps({"i": 0}))
    assert [r["i"] for r in order.ready()] == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="twice"):
        order.put(2, "{}")
    order.close()


def test_missing_ray_and_unreachable_cluster_are_one_line(monkeypatch):
    from clis.engines import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match=r"install clis\[ray\]"):
        ray_engine.import_ray()
    monkeypatch.undo()

    class Unreachable:
        data = object()

        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def init(**kwargs):
            raise ConnectionError(f"could not connect to {kwargs['address']}\nafter 3 tries")

    monkeypatch.setattr(ray_engine, "import_ray", lambda: Unreachable)
    with pytest.raises(InputError) as caught:
        ray_engine.start_ray(EngineConfig(name="ray", address="10.0.0.9:6379"))
    assert str(caught.value).startswith("--ray-address 10.0.0.9:6379: cannot start or reach Ray")
    assert "\n" not in str(caught.value)



def test_without_ray_score_layouts_and_generate_stop_before_touching_their_output(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "layouts.jsonl"
    out.write_text('{"kept": true}\n')
    result = runner.invoke(app, ["score-layouts", str(EXAMPLES / "layouts.json"), "--out", str(out), "--llm", "none",
                                 "--text-embedder", "none", "-q", "--engine", "ray", "--overwrite"])
    assert result.exit_code == 2 and "install clis[ray]" in result.output, result.output
    assert out.read_text() == '{"kept": true}\n'
    folder = tmp_path / "generated"
    result = runner.invoke(app, ["generate", str(EXAMPLES / "layouts.json"), "--out", str(folder), "--generator",
                                 "shapes", "--n", "1", "--engine", "ray"])
    assert isinstance(result.exception, InputError) and "install clis[ray]" in str(result.exception)
    assert not folder.exists()

@pytest.mark.slow
def test_map_stage_gives_each_row_its_result_in_input_order(cluster):
    from ray_helpers import Square

    from clis.engines.ray_engine import map_stage

    results = list(map_stage(Square, {}, [{"x": x} for x in range(20)], 3, ray_engine(workers=2)))
    assert [r["square"] for r in results] == [x * x for x in range(20)]  # seven batches, two actors


# -- CLIS-I, CLIS-L and generation against the local engine --------------------------------------


@pytest.mark.slow
def test_image_records_equal_the_local_image_scorer(cluster, tiny_models):
    from clis.engines.ray_engine import RayEngine
    from clis.scorer import ScoreConfig, Scorer

    scorer = Scorer(ScoreConfig(image_model=tiny_models["hf_clip"], detector=tiny_models["grounding_dino"],
                                layout_score=False, batch_size=2))
    candidates = example_candidates()
    local = list(scorer.image_scorer.score_candidates(candidates))
    remote = list(RayEngine(ray_engine(workers=1)).image_records(scorer, candidates))
    assert [r["layout_id"] for r in remote] == SUBSET
    assert all(r["error"] is None and r["instances"][0]["detection"] is not None for r in local)
    assert_same(local, remote)


@pytest.mark.slow
def test_a_parquet_manifest_is_read_by_the_workers_and_comes_back_in_its_index_order(cluster, tiny_models, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clis.engines.ray_engine import RayEngine
    from clis.scorer import ScoreConfig, Scorer

    config = ScoreConfig(image_model=tiny_models["hf_clip"], detector="none", layout_score=False, batch_size=2)
    candidates = example_candidates()
    local = list(Scorer(config).image_scorer.score_candidates(candidates))
    # Rows stored in another order than their index: the output follows the index.
    stored = [3, 1, 0, 2]
    manifest = tmp_path / "candidates.parquet"
    pq.write_table(pa.table({"index": stored, "layout_id": [SUBSET[i] for i in stored],
                             "image": [str(candidates[i].image) for i in stored]}), manifest)
    remote = list(RayEngine(ray_engine(workers=1)).manifest_records(config, manifest, EXAMPLES / "layouts.json"))
    assert_same(local, remote)


@pytest.mark.slow
def test_score_cli_ray_equals_local_and_resume_scores_only_the_rest(cluster, tiny_models, tmp_path, monkeypatch):
    from clis.engines import ray_engine as engine_module

    images, layouts, ids = subset_folder(tmp_path)
    common = ["--image-model", tiny_models["hf_clip"], "--detector", "none", "--no-layout-score", "--batch-size",
              "2", "-q"]
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    result = runner.invoke(app, ["score", str(images), str(layouts), "--out", str(local_out), *common])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["score", str(images), str(layouts), "--out", str(ray_out), *common,
                                 "--engine", "ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    local = read_jsonl(local_out)
    assert [r["layout_id"] for r in local] == ids
    assert_same(local, read_jsonl(ray_out))

    # An interrupted run: its first record kept, the rest to do. The resumed run sends only those.
    ray_out.write_text(ray_out.read_text().splitlines(keepends=True)[0])
    sent = []
    map_stage = engine_module.map_stage

    def counting(stage_cls, kwargs, rows, batch_size, config):
        rows = list(rows)
        sent.append([row["layout"]["id"] for row in rows])
        return map_stage(stage_cls, kwargs, rows, batch_size, config)

    monkeypatch.setattr(engine_module, "map_stage", counting)
    result = runner.invoke(app, ["score", str(images), str(layouts), "--out", str(ray_out), *common,
                                 "--engine", "ray", "--workers", "2", "--resume"])
    assert result.exit_code == 0, result.output
    assert sent == [ids[1:]]
    assert_same(local, read_jsonl(ray_out))


@pytest.mark.slow
def test_score_layouts_ray_equals_local(cluster, tmp_path):
    layouts = EXAMPLES / "layouts.json"
    args = ["--llm", "none", "--text-embedder", "none", "-q"]
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    result = runner.invoke(app, ["score-layouts", str(layouts), "--out", str(local_out), *args])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["score-layouts", str(layouts), "--out", str(ray_out), *args, "--engine", "ray"])
    assert result.exit_code == 0, result.output
    local = read_jsonl(local_out)
    assert len(local) == 7 and any(r["clis_l"] is not None for r in local)
    assert_same(local, read_jsonl(ray_out))


@pytest.mark.slow
def test_generate_ray_writes_the_same_images_and_manifest_items(cluster, tmp_path):
    layouts = EXAMPLES / "layouts.json"
    args = ["--generator", "shapes", "--n", "2", "--seed", "7", "--width", "96", "--height", "64"]
    for name, extra in (("local", []), ("ray", ["--engine", "ray", "--workers", "2"])):
        result = runner.invoke(app, ["generate", str(layouts), "--out", str(tmp_path / name), *args, *extra])
        assert result.exit_code == 0, result.output
    local_images = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.png"))
    assert len(local_images) == 14
    assert local_images == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*.png"))
    for path in local_images:
        assert (tmp_path / "local" / path).read_bytes() == (tmp_path / "ray" / path).read_bytes(), path

    def items(name):
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        return [{k: v for k, v in item.items() if k != "seconds"} for item in manifest["items"]]

    assert items("local") == items("ray")


# -- faults --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_candidate_that_kills_its_worker_twice_is_an_error_record_and_the_run_goes_on(cluster, tiny_models):
    from ray_helpers import POISON, PoisonStage

    from clis.engines.ray_engine import WORKER_DIED, RayEngine
    from clis.scorer import ScoreConfig, Scorer

    scorer = Scorer(ScoreConfig(image_model=tiny_models["hf_clip"], detector="none", layout_score=False,
                                batch_size=2))
    candidates = example_candidates()
    local = list(scorer.image_scorer.score_candidates(candidates))
    # One actor: each of its deaths is a restart of the same worker, the cheapest way to see four.
    remote = list(RayEngine(ray_engine(workers=1), stage_cls=PoisonStage).image_records(scorer, candidates))
    assert [r["layout_id"] for r in remote] == SUBSET
    for mine, theirs in zip(local, remote):
        if mine["layout_id"] == POISON:
            assert theirs["error"] == WORKER_DIED and theirs["clis_i"] is None and theirs["image"] == mine["image"]
        else:
            assert_same(mine, theirs)

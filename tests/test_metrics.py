"""clis.metrics.CLISScore: values, accumulation, failures, clones, and the DDP sync over gloo.

The reference values come from ``ImageScorer.score_candidates`` on the same images and
layouts, scored in one pass instead of the metric's batches; the DDP test compares two gloo
ranks with one process holding all the data.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from clis.errors import InputError
from clis.image_score.engine import Candidate, ImageScorer
from clis.layout import Layout
from clis.metrics import CLISScore, clis_score
from clis.models import load_model
from clis.models.clip import ClipEncoder

LAYOUTS = [
    {"id": "cup", "caption": "a red cup on a table", "objects": [
        {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.1, 0.1, 0.4, 0.4]},
        {"id": "table-1", "label": "table", "bbox": [0.0, 0.5, 1.0, 0.5]}]},
    {"id": "cat", "caption": "a cat", "objects": [{"id": "cat-1", "label": "cat", "bbox": [0.2, 0.2, 0.6, 0.6]}]},
    {"id": "dog", "caption": "", "objects": [
        {"id": "dog-1", "label": "dog", "bbox": [0.0, 0.0, 0.5, 1.0]},
        {"id": "dog-2", "label": "dog", "bbox": [0.5, 0.0, 0.5, 1.0]},
        {"id": "bird-1", "label": "bird", "attributes": ["blue"], "bbox": [0.4, 0.1, 0.2, 0.2]}]},
]
N = 6
# Scores are written with 4 decimals; an image scored in another batch may land on the
# neighbouring fourth decimal.
TOL = 2e-4


def sample_pixels(index: int) -> np.ndarray:
    """Image ``index`` as HWC uint8 noise, the same in every process."""
    rng = np.random.default_rng(1000 + index)
    return rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)


def sample_layout(index: int) -> dict:
    return LAYOUTS[index % len(LAYOUTS)]


@pytest.fixture(scope="module")
def encoder(tiny_models):
    return ClipEncoder(load_model(tiny_models["hf_clip"], "clip"))


@pytest.fixture(scope="module")
def reference(encoder):
    """The engine's records for samples 0..N-1, all scored in one call."""
    scorer = ImageScorer(encoder, num_workers=0)
    candidates = [Candidate(Image.fromarray(sample_pixels(i)), Layout.model_validate(sample_layout(i)))
                  for i in range(N)]
    records = list(scorer.score_candidates(candidates))
    assert all(r["error"] is None for r in records)
    return records


def as_tensor(indices) -> torch.Tensor:
    return torch.stack([torch.from_numpy(sample_pixels(i)).permute(2, 0, 1) for i in indices])


def nan_or(value):
    return math.nan if value is None else value


def assert_matches_records(result: dict, records: list[dict], ids: list[int]) -> None:
    """``result``'s rows for ``ids`` hold exactly what ``records[id]`` say."""
    per_sample, per_instance = result["per_sample"], result["per_instance"]
    row_of = {int(s): k for k, s in enumerate(per_sample["sample_id"].tolist())}
    assert sorted(row_of) == sorted(ids)
    for sid in ids:
        record, row = records[sid], row_of[sid]
        for key in ("clis_i", "global"):
            np.testing.assert_allclose(float(per_sample[key][row]), nan_or(record[key]), atol=TOL)
        scores = [inst["score"] for inst in record["instances"]]
        np.testing.assert_allclose(float(per_sample["instance"][row]), sum(scores) / len(scores), atol=TOL)
        mine = (per_instance["sample_id"] == sid).nonzero().flatten().tolist()
        assert [int(per_instance["object_index"][j]) for j in mine] == list(range(len(record["instances"])))
        for j, inst in zip(mine, record["instances"]):
            for key in ("score", "region", "grounding"):
                np.testing.assert_allclose(float(per_instance[key][j]), inst[key], atol=TOL)
            assert math.isnan(float(per_instance["detection"][j]))  # no detector


def test_values_equal_engine_records_over_several_updates(encoder, reference):
    metric = CLISScore(encoder, num_workers=0)
    metric.update(as_tensor(range(0, 4)), [sample_layout(i) for i in range(0, 4)])
    # The second batch as PIL images and Layout objects: the same pixels, the other input path.
    metric.update([Image.fromarray(sample_pixels(i)) for i in range(4, N)],
                  [Layout.model_validate(sample_layout(i)) for i in range(4, N)])
    result = metric.compute()
    assert int(result["n"]) == N and int(result["failed"]) == 0
    assert result["per_sample"]["sample_id"].tolist() == list(range(N))  # default ids: this rank's count
    assert result["per_sample"]["rank"].tolist() == [0] * N
    assert_matches_records(result, reference, list(range(N)))
    assert result["per_instance"]["sample_id"].numel() == sum(len(r["instances"]) for r in reference)


def test_means_and_weights_by_hand(encoder, reference):
    out = clis_score(as_tensor(range(N)), [sample_layout(i) for i in range(N)], image_model=encoder,
                     clis_l=[60.0, None, 20.0, None, None, 90.0], num_workers=0)
    clis_i = [r["clis_i"] for r in reference]
    glob = [r["global"] for r in reference if r["global"] is not None]
    assert len(glob) == 4  # the "dog" layouts (samples 2 and 5) have no caption
    np.testing.assert_allclose(float(out["clis_i"]), sum(clis_i) / N, atol=TOL)
    np.testing.assert_allclose(float(out["global"]), sum(glob) / len(glob), atol=TOL)
    np.testing.assert_allclose(float(out["clis_l"]), (60.0 + 20.0 + 90.0) / 3)
    # clis = 0.5 clis_i + 0.5 clis_l where clis_l is given, clis_i elsewhere (clis score's rule).
    combined = [0.5 * c + 0.5 * l if l is not None else c for c, l in zip(clis_i, [60.0, None, 20.0, None, None, 90.0])]
    np.testing.assert_allclose(out["per_sample"]["clis"].tolist(), combined, atol=TOL)
    np.testing.assert_allclose(float(out["clis"]), sum(combined) / N, atol=TOL)
    # CLIS-I = 0.5 global + 0.5 mean instance score; without a caption the instances alone.
    for row in range(N):
        g, inst = float(out["per_sample"]["global"][row]), float(out["per_sample"]["instance"][row])
        expected = inst if math.isnan(g) else 0.5 * g + 0.5 * inst
        np.testing.assert_allclose(float(out["per_sample"]["clis_i"][row]), expected, atol=1e-3)


def test_built_from_a_spec_with_weights(tiny_models):
    metric = CLISScore(image_model=tiny_models["hf_clip"], detector="none", weights={"global": 1.0, "instances": 0.0},
                       num_workers=0)
    metric.update(as_tensor([0, 1]), [sample_layout(0), sample_layout(1)])
    per_sample = metric.compute()["per_sample"]
    # With the instance weight at 0, CLIS-I is the global term.
    np.testing.assert_allclose(per_sample["clis_i"].tolist(), per_sample["global"].tolist(), atol=TOL)
    with pytest.raises(InputError, match=r"weights\.region"):
        CLISScore(image_model=tiny_models["hf_clip"], weights={"region": -1.0})


def test_reset_and_float_images(encoder, reference):
    metric = CLISScore(encoder, num_workers=0)
    metric.update(as_tensor([0, 1]), [sample_layout(0), sample_layout(1)])
    assert int(metric.compute()["n"]) == 2
    metric.reset()
    # Floats are read as 0..1: x / 255 is the same image as the uint8 x.
    metric.update(as_tensor([2, 3]).float() / 255.0, [sample_layout(2), sample_layout(3)], sample_ids=[2, 3])
    result = metric.compute()
    assert int(result["n"]) == 2
    assert_matches_records(result, reference, [2, 3])


def test_broken_samples_are_nan_and_counted(encoder, reference, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    nan_image = as_tensor([0])[0].float() / 255.0
    nan_image[0, 0, 0] = math.nan
    off_canvas = {**sample_layout(1), "objects": [{"id": "cat-1", "label": "cat", "bbox": [0.8, 0.8, 0.5, 0.5]}]}
    images = [Image.fromarray(sample_pixels(0)), str(broken), nan_image, Image.fromarray(sample_pixels(1))]
    layouts = [sample_layout(0), sample_layout(1), sample_layout(0), off_canvas]
    metric = CLISScore(encoder, num_workers=0)
    metric.update(images, layouts, sample_ids=[0, 10, 11, 12])
    result = metric.compute()
    assert result["per_sample"]["failed"].tolist() == [0, 1, 1, 1]
    assert int(result["failed"]) == 3 and int(result["n"]) == 4
    assert all(math.isnan(v) for v in result["per_sample"]["clis_i"][1:].tolist())
    assert result["per_instance"]["sample_id"].tolist() == [0, 0]  # failed samples have no objects
    # The one good sample decides the means.
    np.testing.assert_allclose(float(result["clis_i"]), reference[0]["clis_i"], atol=TOL)


def test_bad_input_is_one_line_errors(encoder):
    with pytest.raises(InputError, match="judge.name: 'vqa'"):
        CLISScore(encoder, config={"judge": {"name": "vqa"}})
    metric = CLISScore(encoder, num_workers=0)
    with pytest.raises(InputError, match="2 images but 1 layouts"):
        metric.update(as_tensor([0, 1]), [sample_layout(0)])
    with pytest.raises(InputError, match=r"sample 0: float image tensor has values in \[-1"):
        metric.update(as_tensor([0]).float() / 127.5 - 1.0, [sample_layout(0)])
    with pytest.raises(InputError, match=r"expected \[3, H, W\]"):
        metric.update(torch.zeros(1, 4, 8, 8, dtype=torch.uint8), [sample_layout(0)])
    with pytest.raises(InputError, match="sample_ids: 1 values for 2 images"):
        metric.update(as_tensor([0, 1]), [sample_layout(0), sample_layout(1)], sample_ids=[3])
    with pytest.raises(InputError, match=r"clis_l\[0\]: inf is not a finite number"):
        metric.update(as_tensor([0]), [sample_layout(0)], clis_l=[math.inf])


def test_clones_share_the_model_and_forward_accumulates(encoder, reference):
    metric = CLISScore(encoder, num_workers=0)
    twin = metric.clone()
    assert twin.scorer.encoder.model is metric.scorer.encoder.model
    assert metric.state_dict() == {}  # neither the CLIP weights nor (non-persistent) states
    metric.compute()  # before any update, outside DDP: nothing to sync, so no state changes
    assert all(value == [] for value in metric.metric_state.values())
    first = metric(as_tensor([0, 1]), [sample_layout(0), sample_layout(1)])  # forward: this batch only
    assert int(first["n"]) == 2
    metric(as_tensor([2]), [sample_layout(2)])
    result = metric.compute()
    assert result["per_sample"]["sample_id"].tolist() == [0, 1, 2]  # forward's reset does not reuse ids
    assert_matches_records(result, reference, [0, 1, 2])
    assert twin.update_count == 0 and not twin.metric_state["clis_i"]



def test_to_moves_the_model_with_the_metric_but_keeps_its_dtype(tiny_models):
    metric = CLISScore(image_model=tiny_models["hf_clip"], num_workers=0)  # its own model: it moves
    holder = torch.nn.Module()
    holder.metric = metric  # as in a LightningModule, which moves its metrics with itself
    holder.to("meta")
    assert metric.device.type == "meta" and metric.scorer.encoder.device.type == "meta"
    holder.to(torch.float16)  # a cast meant for the trained model
    assert metric.scorer.encoder.dtype == torch.float32

def test_a_module_cast_to_half_leaves_the_score_states_float64(encoder, reference):
    """``module.to(torch.float16)`` (Lightning's "16-true") slips past Metric's dtype guard:
    it cast the states to float16, so a score of 22.4798 read back as 22.484375."""
    metric = CLISScore(encoder, num_workers=0)
    metric.update(as_tensor([0, 1]), [sample_layout(0), sample_layout(1)])
    assert_matches_records(metric.compute(), reference, [0, 1])  # also fills compute()'s cache
    holder = torch.nn.Module()
    holder.metric = metric
    holder.to(torch.float16)
    assert {t.dtype for t in metric.metric_state["clis_i"]} == {torch.float64}
    metric.update(as_tensor([2]), [sample_layout(2)])
    result = metric.compute()
    assert result["per_sample"]["clis_i"].dtype == torch.float64
    # float16 keeps 3 significant digits: 2e-4 holds only if no value went through it
    assert_matches_records(result, reference, [0, 1, 2])


# -- DDP over gloo -------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, spec: str, rendezvous: str, out_dir: str) -> None:
    os.environ.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        metric = CLISScore(image_model=spec, detector="none", num_workers=0)
        mine = list(range(rank, N, world))  # what a DistributedSampler without shuffling hands each rank
        metric.update(as_tensor(mine[:2]), [sample_layout(i) for i in mine[:2]], sample_ids=mine[:2])
        metric.update(as_tensor(mine[2:]), [sample_layout(i) for i in mine[2:]], sample_ids=mine[2:])
        synced = metric.compute()
        # Then a round in which rank 1 sees nothing at all.
        metric.reset()
        if rank == 0:
            metric.update(as_tensor(range(N)), [sample_layout(i) for i in range(N)], sample_ids=list(range(N)))
        lopsided = metric.compute()
        local_n = sum(t.numel() for t in metric.metric_state["sample_id"])  # unsynced again after compute
        torch.save({"synced": synced, "lopsided": lopsided, "local_n": local_n},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_ranks_equal_one_process(tiny_models, reference, tmp_path):
    import torch.multiprocessing as mp

    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_ddp_worker, args=(2, tiny_models["hf_clip"], rendezvous, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for rank, got in enumerate(results):
        synced = got["synced"]
        # Every rank gets every sample: rank 0's rows, then rank 1's.
        assert synced["per_sample"]["sample_id"].tolist() == [0, 2, 4, 1, 3, 5]
        assert synced["per_sample"]["rank"].tolist() == [0, 0, 0, 1, 1, 1]
        assert int(synced["n"]) == N
        assert_matches_records(synced, reference, list(range(N)))
        np.testing.assert_allclose(float(synced["clis_i"]), sum(r["clis_i"] for r in reference) / N, atol=TOL)
        lopsided = got["lopsided"]
        assert got["local_n"] == (N if rank == 0 else 0)
        assert lopsided["per_sample"]["sample_id"].tolist() == list(range(N))
        assert lopsided["per_sample"]["sample_id"].dtype == torch.int64
        assert_matches_records(lopsided, reference, list(range(N)))
        for key in ("clis_i", "global", "instance"):
            torch.testing.assert_close(lopsided[key], synced[key], atol=TOL, rtol=0)


def test_docstring_examples_hold():
    import doctest

    import clis.metrics

    result = doctest.testmod(clis.metrics)
    assert result.attempted > 0 and result.failed == 0

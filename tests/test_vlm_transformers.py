"""clis.vlm.transformers_vlm: a local transformers VLM behind the VLMClient interface (tiny random LLaVA)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from clis.errors import ModelSpecError
from clis.models import load_model
from clis.vlm.base import RequestFailed, VLMRequest, box_text
from clis.vlm.transformers_vlm import TransformersVLM

PROMPTS = ("Is there a cat?", "Is there a red cup on the wooden table next to the sofa, under the lamp?",
           "Describe the picture.")


def _requests() -> list[VLMRequest]:
    colours = [(200, 30, 30), (20, 180, 40), (30, 40, 220)]
    sizes = [(48, 32), (32, 32), (40, 64)]
    return [VLMRequest(Image.new("RGB", size, colour), prompt) for size, colour, prompt in zip(sizes, colours, PROMPTS)]


@pytest.fixture(scope="module")
def vlm(tiny_models) -> TransformersVLM:
    return TransformersVLM(tiny_models["vlm"], max_new_tokens=6, batch_size=8)


def test_tiny_llava_loads_through_the_registry_as_a_vlm(tiny_models):
    loaded = load_model(tiny_models["vlm"], "vlm")
    assert loaded.task == "vlm" and loaded.backend == "hf"
    assert type(loaded.model).__name__ == "LlavaForConditionalGeneration"
    assert type(loaded.processor).__name__ == "LlavaProcessor"
    assert "sha256" in loaded.fingerprint


def test_a_clip_folder_is_refused_as_a_vlm_in_one_line(tiny_models):
    with pytest.raises(ModelSpecError) as info:
        load_model(tiny_models["hf_clip"], "vlm")
    message = str(info.value)
    assert "\n" not in message and "'clip'" in message


def test_yes_probability_matches_a_hand_computed_softmax_over_yes_and_no(vlm, tiny_models):
    request = _requests()[1]
    loaded = load_model(tiny_models["vlm"], "vlm")
    processor, tokenizer = loaded.processor, loaded.processor.tokenizer
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": request.prompt}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[request.image], return_tensors="pt")
    with torch.no_grad():
        logits = loaded.model(**inputs).logits[0, -1].double()
    # The tiny tokenizer has every spelling as one token, so the first token is the word.
    yes = {tokenizer.convert_tokens_to_ids(t) for t in ("Yes", "yes", "ĠYes", "Ġyes")}
    no = {tokenizer.convert_tokens_to_ids(t) for t in ("No", "no", "ĠNo", "Ġno")}
    assert len(yes) == 4 and len(no) == 4 and tokenizer.unk_token_id not in yes | no
    both = torch.softmax(logits[sorted(yes) + sorted(no)], dim=0)
    expected = both[: len(yes)].sum().item()

    [probability] = vlm.yes_probability([request])
    assert isinstance(probability, float) and 0.0 < probability < 1.0
    assert probability == pytest.approx(expected, abs=1e-5)


def test_batching_changes_neither_probabilities_nor_greedy_answers(tiny_models):
    requests = _requests()
    together = TransformersVLM(tiny_models["vlm"], max_new_tokens=6, batch_size=8)
    alone = TransformersVLM(tiny_models["vlm"], max_new_tokens=6, batch_size=1)
    # The prompts differ in length, so the batched ones are really padded.
    lengths = {len(together.tokenizer.encode(r.prompt)) for r in requests}
    assert len(lengths) == len(requests)

    batched, single = together.yes_probability(requests), alone.yes_probability(requests)
    assert batched == pytest.approx(single, abs=1e-5)
    # Distinct values, so a client that answered every request alike would not pass.
    assert min(abs(a - b) for i, a in enumerate(single) for b in single[i + 1:]) > 1e-4
    answers = together.generate(requests, seed=3)
    assert answers == alone.generate(requests, seed=3) and len(set(answers)) == len(answers)
    # And against a request answered strictly on its own:
    assert together.generate(requests[:1], seed=3) == together.generate(requests, seed=3)[:1]


def test_the_same_seed_gives_the_same_answers(tiny_models):
    requests = _requests()
    sampler = TransformersVLM(tiny_models["vlm"], max_new_tokens=8, temperature=1.0)
    first = sampler.generate(requests, seed=11)
    assert all(isinstance(answer, str) for answer in first)
    assert sampler.generate(requests, seed=11) == first
    assert sampler.generate(requests, seed=12) != first  # the seed is really used
    greedy = TransformersVLM(tiny_models["vlm"], max_new_tokens=8)
    assert greedy.generate(requests, seed=1) == greedy.generate(requests, seed=2)


def test_a_request_the_processor_rejects_fails_alone(vlm, monkeypatch):
    requests = _requests()
    poisoned = VLMRequest(Image.new("RGB", (17, 13), (1, 2, 3)), "Is there a dog?")
    processor_class = type(vlm.processor)
    original = processor_class.__call__

    def refuse_odd_images(self, *args, images=None, **kwargs):
        flat = [image for group in images for image in (group if isinstance(group, list) else [group])]
        if any(image.size == (17, 13) for image in flat):
            raise ValueError("cannot read this image\nsecond line")
        return original(self, *args, images=images, **kwargs)

    monkeypatch.setattr(processor_class, "__call__", refuse_odd_images)
    batch = [requests[0], poisoned, requests[1]]
    answers, probabilities = vlm.generate(batch, seed=0), vlm.yes_probability(batch)
    for results in (answers, probabilities):
        assert len(results) == 3
        assert isinstance(results[1], RequestFailed) and not results[1]
        assert "ValueError" in results[1].reason and "\n" not in results[1].reason
    # The others got the answers they get without the failing neighbour.
    assert [answers[0], answers[2]] == vlm.generate(requests[:2], seed=0)
    assert [probabilities[0], probabilities[2]] == pytest.approx(vlm.yes_probability(requests[:2]), abs=1e-5)


@pytest.mark.parametrize("max_new_tokens", [1, 5])
def test_generate_writes_at_most_max_new_tokens(tiny_models, max_new_tokens):
    client = TransformersVLM(tiny_models["vlm"], max_new_tokens=max_new_tokens)
    # Random weights emit stray bytes whose decoded text re-encodes to more tokens, so count
    # the tokens the model produced rather than re-tokenising the answers.
    produced = []
    generate = client.model.generate

    def spy(*args, **kwargs):
        output = generate(*args, **kwargs)
        produced.append((kwargs["input_ids"].shape[1], output))
        return output

    client.model.generate = spy
    answers = client.generate(_requests(), seed=0)
    [(prompt_length, output)] = produced
    new_tokens = output[:, prompt_length:]
    assert 1 <= new_tokens.shape[1] <= max_new_tokens
    assert answers == [client.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]


def test_describe_is_json_ready_and_names_the_answer_tokens(vlm):
    import json

    described = json.loads(json.dumps(vlm.describe()))
    assert described["kind"] == "transformers" and described["model_type"] == "llava"
    assert described["max_new_tokens"] == 6 and described["temperature"] == 0.0
    assert {t.strip() for t in described["yes_tokens"]} == {"Yes", "yes"}
    assert {t.strip() for t in described["no_tokens"]} == {"No", "no"}
    assert described["sha256"] and vlm.grounding == "plain"


def test_tiny_qwen2_vl_reads_qwen2_boxes_and_answers_yes_no(tmp_path, clis_cache_dir):
    from clis.testing import build_tiny_qwen2_vl

    requests = _requests()
    client = TransformersVLM(build_tiny_qwen2_vl(tmp_path), max_new_tokens=4)
    assert client.grounding == "qwen2" and client.describe()["model_type"] == "qwen2_vl"
    box = box_text([0.1, 0.2, 0.3, 0.4], client.grounding)
    ids = client.tokenizer.encode(box, add_special_tokens=False)
    assert ids[0] == client.tokenizer.convert_tokens_to_ids("<|box_start|>")
    assert ids[-1] == client.tokenizer.convert_tokens_to_ids("<|box_end|>")

    requests.append(VLMRequest(requests[0].image, f"Is there a cup in {box}?"))
    batched = client.yes_probability(requests)
    assert all(isinstance(p, float) and 0.0 < p < 1.0 for p in batched)
    # Multimodal RoPE takes its positions from the attention mask: padding must not shift them.
    assert batched == pytest.approx([client.yes_probability([r])[0] for r in requests], abs=1e-5)
    assert all(isinstance(answer, str) for answer in client.generate(requests, seed=0))
